"""task=text_file: any UTF-8 file, as characters or as bytes, and the vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqbench.config import validate
from seqbench.data.tasks import TextFileTaskConfig, build_task
from seqbench.data.vocab import ByteVocab, CharVocab
from seqbench.errors import ConfigError, ConfigErrors


def task_of(tmp_path, content: bytes, **kw):
    p = tmp_path / "book.txt"
    p.write_bytes(content)
    cfg = TextFileTaskConfig(path=str(p), seq_len=4, batch_size=2, **kw)
    return build_task(cfg)


def decoded(task, split: str):
    ids = task.ids[split].tolist()
    if task.vocab.kind == "bytes":
        return bytes(ids)
    return "".join(task.vocab.chars[i] if i < len(task.vocab.chars) else "\ufffd" for i in ids)


def expected_split(seq):
    """90/5/5 contiguous, worked out for lengths divisible by 20 (no rounding involved)."""
    n = len(seq)
    assert n % 20 == 0
    return seq[: n * 18 // 20], seq[n * 18 // 20: n * 19 // 20], seq[n * 19 // 20:]


@pytest.mark.parametrize("vocab", ["chars", "bytes"])
@pytest.mark.parametrize("newline, eol", [("lf", "\n"), ("keep", "\r\n")])
def test_bom_is_dropped_and_crlf_becomes_lf_unless_kept(tmp_path, vocab, newline, eol):
    body = "ab\r\ncd\r\n" * 100  # 800 characters
    task = task_of(tmp_path, ("\ufeff" + body).encode("utf-8"), vocab=vocab, newline=newline)
    text = body.replace("\r\n", eol)
    want = text.encode() if vocab == "bytes" else text
    got = b"".join if vocab == "bytes" else "".join
    assert got(decoded(task, s) for s in ("train", "val", "test")) == want


def test_chars_non_ascii_text_is_one_token_per_character(tmp_path):
    text = "Größe, naïve café — 東京!! " * 40  # 25 characters * 40 = 1000
    task = task_of(tmp_path, text.encode("utf-8"))
    parts = expected_split(text)
    assert task.vocab.chars == tuple(sorted(set(parts[0])))
    assert [decoded(task, s) for s in ("train", "val", "test")] == list(parts)
    assert task.describe()["chars"] == {"train": 900, "val": 50, "test": 50}


def test_unseen_characters_in_val_and_test_are_unk_and_counted(tmp_path):
    text = "abcab" * 180 + "abzzé" * 10 + "ééaaa" * 10  # 1000 chars: z, é only after train
    task = task_of(tmp_path, text.encode("utf-8"))
    assert task.vocab.chars == ("a", "b", "c") and task.vocab.has_unk and task.vocab.size == 4
    assert task.unknown == {"train": 0, "val": 30, "test": 20}
    assert task.describe()["unknown_chars"] == task.unknown
    assert (task.ids["val"] == task.vocab.unk_id).sum() == 30


def test_bytes_vocabulary_is_all_256_values_and_nothing_is_unknown(tmp_path):
    text = "plain ascii text " * 55 + "é東" * 5  # 935 + 20 characters, 935 + 25 bytes
    raw = text.encode("utf-8")
    task = task_of(tmp_path, raw, vocab="bytes")
    assert isinstance(task.vocab, ByteVocab) and task.vocab.size == 256
    assert task.describe()["vocab_size"] == 256
    assert task.unknown == {"train": 0, "val": 0, "test": 0}  # é and 東 only in test
    assert [decoded(task, s) for s in ("train", "val", "test")] == list(expected_split(raw))
    assert task.ids["test"].dtype == np.int64 and task.ids["test"].max() >= 0xE0


@pytest.mark.parametrize("vocab", ["chars", "bytes"])
@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"abc\xff\xfe", "UTF-8"),
                                              (b"\xef\xbb\xbf", "empty")])
def test_empty_and_non_utf8_files_are_config_errors(tmp_path, vocab, content, message):
    with pytest.raises(ConfigError) as e:
        task_of(tmp_path, content, vocab=vocab)
    assert e.value.key == "task.path" and message in str(e.value)


def test_vocab_option_is_checked_by_the_config(tiny_cfg, tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("hello world. " * 400)
    cfg = tiny_cfg("task=text_file", f"task.path={p}", "task.vocab=bytes")
    validate(cfg)
    assert build_task(cfg.task).vocab.size == 256
    with pytest.raises(ConfigErrors) as e:
        validate(tiny_cfg("task=text_file", f"task.path={p}", "task.vocab=words"))
    assert str(e.value) == "task.vocab=words: one of chars, bytes"


# ---- the vocabularies: the ASCII fast path is the general path ----------------------------

ascii_text = st.text(alphabet=st.characters(max_codepoint=127), max_size=300)
any_text = st.text(alphabet=st.characters(max_codepoint=0x2FFF, exclude_categories=("Cs",)),
                   max_size=300)


def reference_encode(chars, has_unk, text):
    index = {c: i for i, c in enumerate(chars)}
    ids = [index.get(c, len(chars)) for c in text]
    return ids, sum(c not in index for c in text)


@settings(max_examples=200, deadline=None)
@given(train=st.one_of(ascii_text, any_text), other=st.one_of(ascii_text, any_text))
def test_char_vocab_matches_a_dictionary_reference(train, other):
    vocab = CharVocab.from_text(train, (other,))
    assert vocab.chars == tuple(sorted(set(train)))
    assert vocab.has_unk == any(c not in set(train) for c in other)
    for text in (train, other):
        ids, unknown = vocab.encode(text)
        want, want_unknown = reference_encode(vocab.chars, vocab.has_unk, text)
        assert ids.tolist() == want and unknown == want_unknown
        assert ids.dtype == np.int64
        small, _ = vocab.encode(text, dtype=np.uint16)
        assert small.dtype == np.uint16 and small.tolist() == want


def test_ascii_text_is_encoded_in_chunks(monkeypatch):
    import seqbench.data.vocab as v

    monkeypatch.setattr(v, "_CHUNK", 7)
    text = "the quick brown fox jumps over the lazy dog" * 3
    vocab = CharVocab.from_text(text[:50], (text,))
    ids, unknown = vocab.encode(text)
    assert (ids.tolist(), unknown) == reference_encode(vocab.chars, vocab.has_unk, text)


def test_encoding_without_unk_slot_refuses_unknown_characters():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharVocab.from_text("abc").encode("abd")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharVocab.from_text("abc").encode("abé")


@given(st.binary(max_size=200))
def test_byte_vocab_ids_are_the_bytes(data):
    ids, unknown = ByteVocab().encode(data)
    assert bytes(ids.tolist()) == data and unknown == 0
