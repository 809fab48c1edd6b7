"""The corpus registry against a local HTTP server: download, verify, convert, cache.

Every registry entry is exercised with a small file the test makes in the entry's real
format (zip, .tgz, Gutenberg text, plain text), served from 127.0.0.1. Nothing here
touches the internet: each entry's URL is monkeypatched to the local server (keeping the
published path), and the checksums to those of the small files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from seqbench.data import corpora
from seqbench.data.corpus import SourceError, contiguous, ptb_char_text, strip_gutenberg
from seqbench.data.datacli import RichBar
from seqbench.data.datacli import main as data_main
from seqbench.data.tasks import split_text
from seqbench.errors import ConfigError

NAMES = list(corpora.CORPORA)
REPO = Path(__file__).resolve().parents[1]


# ---- a local HTTP server -----------------------------------------------------------------

class Server:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.mode: dict[str, str] = {}  # path -> ok | short | nolength
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.hits.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                mode = server.mode.get(self.path, "ok")
                self.send_response(200)
                if mode != "nolength":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "ok" else body[: len(body) // 2])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """An empty data cache per test, no mirror, and no proxy between us and 127.0.0.1."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SEQBENCH_DATA", str(root))
    for var in ("SEQBENCH_MIRROR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return root


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline(monkeypatch, name: str, fields: dict) -> corpora.CorpusSpec:
    """Point `name` at a port where nothing listens (the server is down)."""
    spec = corpora.CORPORA[name]
    url = f"http://127.0.0.1:{closed_port()}/x/{spec.filename}"
    spec = dataclasses.replace(spec, url=url, **fields)
    monkeypatch.setitem(corpora.CORPORA, name, spec)
    return spec


# ---- small files in each corpus's published format ---------------------------------------

def _words(rng, n, alphabet="abcdefghij"):
    return ["".join(rng.choice(list(alphabet), size=rng.integers(1, 8))) for _ in range(n)]


def _zip(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, data)
    return buf.getvalue()


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gutenberg(book: str) -> bytes:
    header = ("\ufeffThe Project Gutenberg eBook of War and Peace\n\nThis eBook is for the use "
              "of anyone anywhere...\n\n*** START OF THE PROJECT GUTENBERG EBOOK WAR AND "
              "PEACE ***\n\n\n")
    footer = ("\n\n\n*** END OF THE PROJECT GUTENBERG EBOOK WAR AND PEACE ***\n\nUpdated "
              "editions will replace the previous one.\n")
    return (header + book + footer).replace("\n", "\r\n").encode("utf-8")


@dataclasses.dataclass
class Sample:
    raw: bytes  # the file as served
    parts: tuple  # the expected train, val, test (str, or bytes for enwik8)
    good: dict  # registry fields that make `raw` the expected file
    bad: dict  # registry fields with a wrong checksum


def sample(name: str) -> Sample:
    """A small file in `name`'s format, and its expected splits, worked out here."""
    rng = np.random.default_rng(sum(name.encode()))
    if name == "tinyshakespeare":
        text = "\n".join(" ".join(_words(rng, 8, "abcdefgh:;,.")).capitalize()
                         for _ in range(200))[:4000]
        raw = text.encode()
        return Sample(raw, (text[:3600], text[3600:3800], text[3800:]),
                      {"sha256": hashlib.sha256(raw).hexdigest(), "bundled": None},
                      {"sha256": "0" * 64, "bundled": None})
    if name == "enwik8":
        data = rng.integers(0, 256, 4000).astype(np.uint8).tobytes()  # every byte value
        return Sample(_zip("enwik8", data), (data[:3600], data[3600:3800], data[3800:]),
                      {"content_md5": hashlib.md5(data).hexdigest(), "content_size": 4000},
                      {"content_md5": "0" * 32, "content_size": 4000})
    if name == "text8":
        text = " ".join(_words(rng, 2000, "abcdefghijklmnopqrstuvwxyz"))[:6000]
        raw = _zip("text8", text.encode())
        return Sample(raw, (text[:5400], text[5400:5700], text[5700:]),
                      {"content_size": 6000, "archive_size": len(raw)},
                      {"content_size": 6000, "archive_size": len(raw), "sha256": "0" * 64})
    if name == "ptb_char":
        splits = []
        for n in (60, 10, 10):
            sentences = [_words(rng, rng.integers(1, 9), "abcdefN-'") + ["<unk>"]
                         for _ in range(n)]
            splits.append(sentences)

        def shipped(sentences):  # the published format: symbols spaced, words split by _
            return "".join(" " + " _ ".join(" ".join(w) for w in s) + " \n" for s in sentences)

        files = {"simple-examples/data/ptb.train.txt": b"word level, not this one\n",
                 "simple-examples/README": b"readme\n"}
        for fname, sentences in zip(("train", "valid", "test"), splits):
            files[f"simple-examples/data/ptb.char.{fname}.txt"] = shipped(sentences).encode()
        parts = tuple("".join("_".join(s) + "\n" for s in sentences) for sentences in splits)
        return Sample(_tgz(files), parts, {}, {"sha256": "0" * 64})
    if name == "war_and_peace":
        lines = [" ".join(_words(rng, 9, "abcdefgh")) for _ in range(200)]
        book = "\n".join(lines)[:2995] + " ëë.\n"  # 3000 chars; ë only in the test part
        assert len(book) == 3000
        parts = (book[:2400], book[2400:2700], book[2700:])
        return Sample(_gutenberg(book), parts, {}, {"sha256": "0" * 64})
    raise AssertionError(name)


def serve(monkeypatch, server: Server, name: str, fields: dict, raw: bytes | None = None,
          mode: str = "ok") -> corpora.CorpusSpec:
    """Point `name` at the local server (same path as the published URL) and serve raw."""
    spec = corpora.CORPORA[name]
    path = urlparse(spec.url).path
    new = dataclasses.replace(spec, url=server.base + path, **fields)
    monkeypatch.setitem(corpora.CORPORA, name, new)
    if raw is not None:
        server.files[path] = raw
        server.mode[path] = mode
    return new


def text_of(corpus: corpora.Corpus, split: str):
    ids = np.asarray(corpus.ids[split]).tolist()
    if corpus.vocab.kind == "bytes":
        return bytes(ids)
    return "".join(corpus.vocab.chars[i] if i < len(corpus.vocab.chars) else "\ufffd"
                   for i in ids)


def assert_is(corpus: corpora.Corpus, s: Sample):
    seen = set(s.parts[0])
    if corpus.vocab.kind == "bytes":
        assert corpus.vocab.size == 256
    else:
        assert corpus.vocab.chars == tuple(sorted(seen))
    for split, want in zip(corpora.SPLITS, s.parts):
        assert isinstance(corpus.ids[split], np.memmap)
        if corpus.vocab.kind == "chars":
            assert corpus.unknown[split] == sum(c not in seen for c in want)
            want = "".join(c if c in seen else "\ufffd" for c in want)
        assert text_of(corpus, split) == want


def one_line_naming(message: str, spec: corpora.CorpusSpec, checksum: str) -> None:
    assert "\n" not in message
    assert spec.source_url() in message
    assert checksum in message
    assert str(corpora.source_path(spec)) in message


# ---- download -> verify -> convert, for every entry ----------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_good_download_is_converted_once_and_reused(name, server, monkeypatch, cache):
    s = sample(name)
    spec = serve(monkeypatch, server, name, s.good, s.raw)
    corpus = corpora.fetch(name)
    assert_is(corpus, s)
    assert server.hits == [urlparse(spec.url).path]
    assert corpora.source_path(spec).read_bytes() == s.raw  # kept for offline rebuilds
    record = json.loads((cache / name / "source.json").read_text())
    assert record["sha256"] == hashlib.sha256(s.raw).hexdigest()
    meta = json.loads((cache / name / "meta.json").read_text())
    assert meta["tokens_sha256"] == hashlib.sha256(corpus.path.read_bytes()).hexdigest()
    assert corpus.path.name == "tokens.u8" and meta["n_tokens"] == sum(map(len, s.parts))
    # the second fetch and a training load read the cache: no request reaches the server
    assert_is(corpora.fetch(name), s)
    assert_is(corpora.load(name), s)
    assert len(server.hits) == 1


@pytest.mark.parametrize("name", NAMES)
def test_wrong_checksum_is_one_line_naming_url_checksum_and_path(name, server, monkeypatch):
    s = sample(name)
    spec = serve(monkeypatch, server, name, s.bad, s.raw)
    with pytest.raises(corpora.DataUnavailableError) as e:
        corpora.fetch(name)
    wrong = s.bad.get("content_md5") or s.bad["sha256"]
    one_line_naming(str(e.value), spec, wrong)
    assert not corpora.source_path(spec).exists()  # a bad file is never kept
    assert not (corpora.corpus_dir(name) / "meta.json").exists()


@pytest.mark.parametrize("mode", ["short", "nolength"])
@pytest.mark.parametrize("name", NAMES)
def test_truncated_download_is_rejected(name, mode, server, monkeypatch):
    """short: the server promises N bytes and sends N/2; nolength: it sends N/2 and closes
    (only the file's own checksum or structure can tell)."""
    s = sample(name)
    spec = serve(monkeypatch, server, name, s.good, s.raw, mode=mode)
    with pytest.raises(corpora.DataUnavailableError) as e:
        corpora.fetch(name)
    one_line_naming(str(e.value), spec, corpora.expected_checksum(spec))
    assert not corpora.source_path(spec).exists()


@pytest.mark.parametrize("name", NAMES)
def test_server_down_is_one_line_naming_url_checksum_and_path(name, monkeypatch):
    s = sample(name)
    spec = offline(monkeypatch, name, s.good)
    with pytest.raises(corpora.DataUnavailableError) as e:
        corpora.fetch(name)
    one_line_naming(str(e.value), spec, corpora.expected_checksum(spec))
    assert "ConnectionError" in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_damaged_cache_is_detected_and_rebuilt_without_network(name, server, monkeypatch,
                                                               cache):
    s = sample(name)
    serve(monkeypatch, server, name, s.good, s.raw)
    tokens = corpora.fetch(name).path
    good = tokens.read_bytes()

    tokens.write_bytes(good[:-7])  # truncated: the size check on every load sees it
    assert_is(corpora.load(name, log=lambda m: None), s)
    assert tokens.read_bytes() == good

    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 1  # same size: the SHA-256 on every load sees it
    tokens.write_bytes(bytes(tampered))
    assert_is(corpora.load(name, log=lambda m: None), s)
    assert tokens.read_bytes() == good
    tokens.write_bytes(bytes(tampered))  # and so does `verify`
    line = corpora.verify(name)
    assert "rebuilt the token cache" in line and "SHA-256" in line
    assert tokens.read_bytes() == good

    (cache / name / "meta.json").write_text("{not json")
    assert_is(corpora.fetch(name, log=lambda m: None), s)
    assert "token file and" in corpora.verify(name)
    assert len(server.hits) == 1  # all of it offline


@pytest.mark.parametrize("name", NAMES)
def test_damaged_cache_and_download_are_downloaded_again(name, server, monkeypatch):
    s = sample(name)
    spec = serve(monkeypatch, server, name, s.good, s.raw)
    tokens = corpora.fetch(name).path
    tokens.write_bytes(b"")
    source = corpora.source_path(spec)
    source.write_bytes(s.raw[: len(s.raw) // 3])
    with pytest.raises(ConfigError) as e:  # training never downloads
        corpora.load(name)
    assert e.value.key == "task.name" and f"data fetch {name}" in str(e.value)
    assert_is(corpora.fetch(name, log=lambda m: None), s)
    assert len(server.hits) == 2 and source.read_bytes() == s.raw


@pytest.mark.parametrize("name", ["text8", "ptb_char", "war_and_peace"])
def test_first_use_checksum_is_recorded_and_enforced(name, server, monkeypatch, cache):
    s = sample(name)
    spec = serve(monkeypatch, server, name, s.good, s.raw)
    corpora.fetch(name)
    assert "first use: sha256" in corpora.status(name)["checksum"]
    # upstream now serves another file: a rebuild that needs the download must refuse it
    other_raw = b"not the file first downloaded"
    server.files[urlparse(spec.url).path] = other_raw
    corpora.corpus_dir(name).joinpath("meta.json").unlink()
    corpora.source_path(spec).unlink()
    with pytest.raises(corpora.DataUnavailableError) as e:
        corpora.fetch(name, log=lambda m: None)
    recorded = hashlib.sha256(s.raw).hexdigest()
    one_line_naming(str(e.value), corpora.CORPORA[name], recorded)
    assert "recorded at first download" in str(e.value)
    assert str(cache / name / "source.json") in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_a_file_placed_by_hand_is_used_offline(name, monkeypatch):
    s = sample(name)
    spec = offline(monkeypatch, name, s.good)
    path = corpora.source_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(s.raw)
    assert_is(corpora.load(name, log=lambda m: None), s)  # even a training run builds it


def test_mirror_replaces_every_origin(server, monkeypatch):
    s = sample("enwik8")
    monkeypatch.setitem(corpora.CORPORA, "enwik8",
                        dataclasses.replace(corpora.CORPORA["enwik8"], **s.good))
    server.files["/enwik8.zip"] = s.raw
    monkeypatch.setenv("SEQBENCH_MIRROR", server.base + "/")
    assert_is(corpora.fetch("enwik8"), s)
    assert server.hits == ["/enwik8.zip"]


def test_download_progress_bar_follows_pooch_protocol(server, monkeypatch):
    s = sample("text8")
    serve(monkeypatch, server, "text8", s.good, s.raw)
    bar = RichBar("text8")
    corpora.fetch("text8", progressbar=bar, log=lambda m: None)
    task = bar._progress.tasks[0]
    assert task.total == len(s.raw) and task.completed == len(s.raw) and bar._task is None


def test_missing_file_on_the_server_is_one_line_and_closes_the_bar(server, monkeypatch):
    spec = serve(monkeypatch, server, "text8", {})  # nothing served: 404
    bar = RichBar("text8")
    with pytest.raises(corpora.DataUnavailableError) as e:
        corpora.fetch("text8", progressbar=bar, log=lambda m: None)
    one_line_naming(str(e.value), spec, corpora.expected_checksum(spec))
    assert "404 Client Error" in str(e.value) and bar._task is None


def test_bundled_tinyshakespeare_needs_no_network_and_equals_the_task():
    from seqbench.data.corpus import tinyshakespeare
    from seqbench.data.tasks import CharLMTask, CorpusTaskConfig

    corpus = corpora.fetch("tinyshakespeare")
    task = CharLMTask.from_text("t", tinyshakespeare(), CorpusTaskConfig())
    assert corpus.vocab == task.vocab and corpus.vocab.size == 65
    for split in corpora.SPLITS:
        assert np.array_equal(corpus.ids[split], task.ids[split])
    assert corpora.verify("tinyshakespeare").startswith("tinyshakespeare: ok")


# ---- readers -------------------------------------------------------------------------------

def test_contiguous_split_is_the_task_split():
    for n in (0, 1, 19, 1000, 1_115_394, 100_000_000):
        text = range(n)
        got = contiguous(text, (0.9, 0.05, 0.05))
        assert [len(p) for p in got] == [len(p) for p in split_text(text)]
    assert [len(p) for p in contiguous(range(100_000_000), (0.9, 0.05, 0.05))] == \
        [90_000_000, 5_000_000, 5_000_000]


def test_ptb_char_lines_become_words_joined_by_underscore():
    shipped = " a e r _ b a n k n o t e _ < u n k > _ N \n\n p i e r r e _ v i n k e n \n"
    assert ptb_char_text(shipped) == "aer_banknote_<unk>_N\n\npierre_vinken\n"


@pytest.mark.parametrize("start, end", [
    ("*** START OF THE PROJECT GUTENBERG EBOOK WAR AND PEACE ***",
     "*** END OF THE PROJECT GUTENBERG EBOOK WAR AND PEACE ***"),
    ("*** START OF THIS PROJECT GUTENBERG EBOOK WAR AND PEACE ***",
     "*** END OF THIS PROJECT GUTENBERG EBOOK WAR AND PEACE ***"),
    ("***START OF THE PROJECT GUTENBERG E-BOOK 2600***",
     "***END OF THE PROJECT GUTENBERG E-BOOK***"),
])
def test_gutenberg_header_and_footer_are_cut(start, end):
    text = f"licence\r\n{start}\r\n\r\n  Book One\r\nline\r\n\r\n{end}\r\nfooter\r\n"
    assert strip_gutenberg(text) == "Book One\nline\n"


def test_gutenberg_file_without_its_end_is_refused():
    with pytest.raises(SourceError, match="END"):
        strip_gutenberg("*** START OF THE PROJECT GUTENBERG EBOOK X ***\nhalf a book")


def test_text8_outside_its_27_symbols_is_refused(monkeypatch):
    spec = dataclasses.replace(corpora.CORPORA["text8"], content_size=None, archive_size=None)
    with pytest.raises(SourceError, match="0x41"):
        spec.read(_zip("text8", b"abc ABC"), spec)
    with pytest.raises(SourceError, match="no member"):
        spec.read(_zip("other", b"abc"), spec)


# ---- the data command ----------------------------------------------------------------------

def test_data_list_shows_every_corpus_and_its_state(server, monkeypatch, capsys):
    assert data_main(["list"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    for words in ("LDC", "NOT public domain", "90M/5M/5M", "80/10/10", "trust on first use",
                  "a1fa5ffddb56", "mattmahoney.net/dc/enwik8.zip", "bundled"):
        assert words in out
    row = next(line for line in out.splitlines() if line.startswith("war_and_peace"))
    assert " no " in row
    s = sample("war_and_peace")
    serve(monkeypatch, server, "war_and_peace", s.good, s.raw)
    assert data_main(["fetch", "war_and_peace"]) == 0
    assert "war_and_peace: ready" in capsys.readouterr().out
    assert data_main(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("war_and_peace"))
    assert " yes (3,000 tokens" in row and "first use: sha256" in row


@pytest.mark.parametrize("args", [["fetch", "enwik9"], ["verify", "text8", "nope"]])
def test_unknown_corpus_is_exit_2_with_one_line(args, capsys):
    assert data_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "corpus=" + args[-1] in err
    assert "one of tinyshakespeare, enwik8, text8, ptb_char, war_and_peace" in err


@pytest.mark.parametrize("args", [[], ["frob"], ["fetch"], ["list", "--bad"]])
def test_bad_usage_is_exit_2_with_one_line(args, capsys):
    assert data_main(args) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_failed_fetch_is_exit_1_with_one_line(monkeypatch, capsys):
    offline(monkeypatch, "enwik8", {})
    assert data_main(["fetch", "enwik8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("seqbench: enwik8: downloading")
    assert err[1].startswith("seqbench data: error: enwik8: download failed")
    assert "a1fa5ffddb56f4953e226637dabbb36a" in err[1]


def test_verify_names_what_is_missing_and_passes_what_is_good(server, monkeypatch, capsys):
    assert data_main(["verify", "ptb_char"]) == 1
    assert "data fetch ptb_char" in capsys.readouterr().err
    assert data_main(["verify"]) == 0  # only the bundled corpus: nothing else cached
    assert "tinyshakespeare: ok" in capsys.readouterr().out
    s = sample("ptb_char")
    serve(monkeypatch, server, "ptb_char", s.good, s.raw)
    assert data_main(["fetch", "ptb_char", "--no-progress"]) == 0
    assert data_main(["verify"]) == 0
    out = capsys.readouterr().out
    assert "ptb_char: ok" in out and "tinyshakespeare: ok" in out


# ---- tasks ----------------------------------------------------------------------------------

def test_training_a_corpus_not_in_the_cache_is_exit_2_naming_data_fetch(capsys):
    from seqbench.cli import main
    from tests.conftest import TINY

    assert main(["train", "task=enwik8", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("seqbench: error: task.name=enwik8: corpus not downloaded")
    assert err.endswith("run: python -m seqbench data fetch enwik8")


@pytest.mark.parametrize("name", ["enwik8", "text8", "ptb_char", "war_and_peace"])
def test_corpus_task_reads_the_memory_mapped_cache(name, server, monkeypatch, tiny_cfg):
    from seqbench.data.tasks import build_task

    s = sample(name)
    serve(monkeypatch, server, name, s.good, s.raw)
    corpora.fetch(name)
    task = build_task(tiny_cfg(f"task={name}", "task.seq_len=8", "task.batch_size=2").task)
    assert task.name == name and isinstance(task.ids["train"], np.memmap)
    train = set(s.parts[0])
    unseen = any(c not in train for part in s.parts[1:] for c in part)
    assert task.describe()["vocab_size"] == (256 if name == "enwik8" else
                                             len(train) + unseen)
    assert task.describe()["unknown_chars"]["test"] == (
        0 if name == "enwik8" else sum(c not in train for c in s.parts[2]))
    if name == "war_and_peace":
        assert task.describe()["unknown_chars"]["test"] == 3  # "ëë." only in the test part


def test_a_run_on_a_cached_byte_corpus_completes(server, monkeypatch, cache, tmp_path):
    s = sample("enwik8")
    spec = serve(monkeypatch, server, "enwik8", s.good, s.raw)
    corpora.fetch("enwik8")
    # the subprocess sees the real registry, so give it the published MD5's stand-in: the
    # cache was built for s.good's checksum, and a different recipe would be rebuilt
    script = (
        "import dataclasses, sys\n"
        "from seqbench.data import corpora\n"
        f"corpora.CORPORA['enwik8'] = dataclasses.replace(corpora.CORPORA['enwik8'], "
        f"content_md5={spec.content_md5!r}, content_size={spec.content_size!r})\n"
        "from seqbench.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    from tests.conftest import TINY

    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", script, "train", "task=enwik8", *TINY,
                          "task.seq_len=8", "task.batch_size=2", f"hydra.run.dir={run}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] in ("completed", "diverged")
    assert summary["task"]["vocab_size"] == 256
    assert len(server.hits) == 1
