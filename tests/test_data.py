"""Corpus, vocabulary, split and truncated-BPTT batching."""

import hashlib

import numpy as np
import pytest
import torch

from seqbench.data.batching import StreamBatches
from seqbench.data.corpus import TINYSHAKESPEARE_SHA256, read_text_file, tinyshakespeare
from seqbench.data.tasks import CharLMTask, CorpusTaskConfig, TextFileTaskConfig, split_text
from seqbench.data.vocab import CharVocab
from seqbench.errors import ConfigError


def test_bundled_corpus_is_the_published_one():
    text = tinyshakespeare()
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert hashlib.sha256(text.encode()).hexdigest() == TINYSHAKESPEARE_SHA256


def test_split_is_contiguous_90_5_5():
    text = "".join(chr(65 + i % 26) for i in range(1000))
    train, val, test = split_text(text)
    assert (len(train), len(val), len(test)) == (900, 50, 50)
    assert train + val + test == text


def test_vocab_from_train_only_and_unknown_counted():
    vocab = CharVocab.from_text("abcab", ("abz", "ccé"))
    assert vocab.chars == ("a", "b", "c") and vocab.has_unk and vocab.size == 4
    ids, unknown = vocab.encode("abzé")
    assert ids.tolist() == [0, 1, 3, 3] and unknown == 2
    assert vocab.decode([2, 0]) == "ca"


def test_vocab_without_unknowns_has_no_unk_slot():
    vocab = CharVocab.from_text("hello world", ("low", "hold"))
    assert not vocab.has_unk and vocab.size == len(set("hello world"))


def test_streams_carry_on_where_the_previous_window_ended():
    ids = torch.arange(4 * 25)  # 4 streams of 25 tokens
    sb = StreamBatches(ids, batch_size=4, seq_len=6)
    assert sb.windows == 4  # (25 - 1) // 6
    x0, y0 = sb.current()
    assert x0[1].tolist() == list(range(25, 31))
    assert torch.equal(y0[:, :-1], x0[:, 1:])  # targets are inputs shifted by one
    assert sb.advance() is False
    x1, _ = sb.current()
    assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # each stream continues its own text
    assert x1.untyped_storage().data_ptr() == ids.untyped_storage().data_ptr()  # a view
    for _ in range(2):
        assert sb.advance() is False
    assert sb.advance() is True and sb.position == 0  # wrap: a new pass starts


def test_seq_len_longer_than_the_split_is_a_config_error():
    text = "abcdefghij" * 100  # val split = 50 characters
    with pytest.raises(ConfigError) as e:
        CharLMTask.from_text("toy", text, CorpusTaskConfig(seq_len=30, batch_size=2))
    assert e.value.key == "task.seq_len" and "at most 24" in str(e.value)


def test_task_carries_hidden_state_and_resets_at_a_new_pass():
    text = "abcdefghij" * 200
    task = CharLMTask.from_text("toy", text, CorpusTaskConfig(seq_len=5, batch_size=2))
    task.setup(torch.device("cpu"), accum_steps=1)
    from omegaconf import OmegaConf

    from seqbench.models import CharRNNConfig

    model = task.build_model(OmegaConf.structured(CharRNNConfig(hidden_size=8, embed_dim=4)))
    task.train_loss(model, 0)
    h = task.hidden[0]
    assert h is not None and not h[0].requires_grad  # detached, values kept
    task.train_loss(model, 0)
    assert not torch.equal(task.hidden[0][0], h[0])
    for _ in range(task.train_stream.windows):
        task.advance()
    assert task.hidden == [None]


def test_evaluate_matches_a_direct_computation():
    text = "the quick brown fox jumps over the lazy dog. " * 60
    task = CharLMTask.from_text("toy", text, CorpusTaskConfig(seq_len=8, batch_size=3))
    task.setup(torch.device("cpu"), 1)
    from omegaconf import OmegaConf

    from seqbench.models import CharRNNConfig

    torch.manual_seed(0)
    model = task.build_model(OmegaConf.structured(CharRNNConfig(hidden_size=8, embed_dim=4)))
    got = task.evaluate(model)
    data = task.val_stream.data
    w = task.val_stream.windows
    with torch.no_grad():
        logits, _ = model(data[:, : w * 8])  # one pass: carrying state = one long sequence
        target = data[:, 1 : w * 8 + 1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                target.reshape(-1))
    assert got["val_loss"] == pytest.approx(float(nll), rel=1e-5)
    assert got["val_bpc"] == pytest.approx(float(nll) / np.log(2), rel=1e-5)


def test_text_file_bom_crlf_and_non_ascii(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("\ufeffhé\r\nllo\rwörld".encode())
    assert read_text_file(str(p)) == "hé\nllo\nwörld"
    assert read_text_file(str(p), newline="keep") == "hé\r\nllo\rwörld"


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), (b"", "empty"), (b"abc\xff\xfe", "UTF-8")],
)
def test_text_file_errors(tmp_path, content, message):
    p = tmp_path / "t.txt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        read_text_file(str(p))
    assert e.value.key == "task.path" and message in str(e.value)


def test_text_file_task_trains_on_any_utf8_file(tmp_path):
    from seqbench.data.tasks import build_task

    p = tmp_path / "poem.txt"
    p.write_text("Ünïcödé lines, über alles.\n" * 400, encoding="utf-8")
    task = build_task(TextFileTaskConfig(path=str(p), seq_len=16, batch_size=4))
    assert "Ü" in task.vocab.chars and task.unknown == {"train": 0, "val": 0, "test": 0}
