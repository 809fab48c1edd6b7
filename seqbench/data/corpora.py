"""Downloadable corpora: one registry, verified downloads, a memory-mapped token cache.

Each corpus is downloaded once (pooch), checked against the publisher's checksum where one
is published and otherwise against the SHA-256 recorded at its first download (trust on
first use), converted once into a flat token file that numpy memory-maps, and described by
a small meta.json. Later runs open the token file and check its size and SHA-256 against
meta.json (no network; hashing 100 MB took 0.13 s here, next to ~2 s of starting torch),
so a truncated, bit-flipped or replaced cache is rebuilt before a run trains on it;
`python -m seqbench data verify` also hashes the download.

Training never downloads. A sweep validates every job before launching any, so a download
at validation would be a silent 100 MB transfer per job, and cluster nodes often have no
network at all; a task whose corpus is missing fails validation with one line that names
the command to run (`python -m seqbench data fetch NAME`). A damaged token file is rebuilt
from the kept download without the network; only `data fetch` downloads.

Cache layout under `$SEQBENCH_DATA` (default: the user cache dir, ~/.cache/seqbench):

    NAME/source/FILE     the download as published, kept so that a damaged token file can
                         be rebuilt offline; offline users place the file here by hand
    NAME/source.json     where the download came from, its SHA-256 and why it is trusted
    NAME/tokens.u8|u16   the token ids of train, val and test, back to back
    NAME/meta.json       vocabulary, split boundaries, SHA-256 of the token file, format

`$SEQBENCH_MIRROR` replaces every corpus's origin: FILE is then fetched from
`$SEQBENCH_MIRROR/FILE` (a directory served over HTTP holding the published files).
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import hashlib
import io
import json
import logging
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from seqbench.data.corpus import (
    TINYSHAKESPEARE_SHA256,
    TINYSHAKESPEARE_URL,
    SourceError,
    contiguous,
    ptb_char_splits,
    strip_gutenberg,
    zip_member,
)
from seqbench.data.tasks import SPLIT, TASKS, CharLMTask, CorpusTaskConfig
from seqbench.data.vocab import ByteVocab, CharVocab, byte_counts
from seqbench.errors import ConfigError

FORMAT_VERSION = 1  # of the token cache; a cache of another version is rebuilt
SPLITS = ("train", "val", "test")
ENV_DIR, ENV_MIRROR = "SEQBENCH_DATA", "SEQBENCH_MIRROR"
# War and Peace: DeepOBS trains on the first 80% and tests on the last 20% (no validation
# split). We keep its 80% training part and cut its 20% into validation and test halves,
# so that choosing a checkpoint or a learning rate never looks at the test text.
WAR_AND_PEACE_SPLIT = (0.80, 0.10, 0.10)


class DataUnavailableError(RuntimeError):
    """A corpus could not be downloaded or verified. The message is one line that names
    the URL, the expected checksum and where to place the file by hand."""


Parts = tuple  # (train, val, test): str for character corpora, bytes for byte corpora


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    url: str  # the published location; the cached file keeps its basename
    read: Callable[[bytes, CorpusSpec], Parts]  # the downloaded file -> the three splits
    vocab: str  # "chars": the training split's characters; "bytes": all 256 values
    size: str
    split: str
    license: str
    sha256: str | None = None  # pinned SHA-256 of the download itself
    content_md5: str | None = None  # the publisher's MD5 of the file inside the archive
    content_size: int | None = None  # exact bytes of the file inside the archive
    archive_size: int | None = None  # exact bytes of the download, where published
    member: str | None = None  # the file inside a zip archive
    bundled: str | None = None  # a gzipped copy inside the package (no download needed)
    recipe: int = 1  # bump when the conversion changes: older caches are then rebuilt

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def source_url(self) -> str:
        mirror = os.environ.get(ENV_MIRROR)
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url


@dataclass(frozen=True)
class Corpus:
    """A cached corpus: memory-mapped token ids per split, and their vocabulary."""

    name: str
    vocab: CharVocab | ByteVocab
    ids: dict  # split -> numpy view of the token file (copy-on-write memmap)
    unknown: dict  # split -> characters that were mapped to <unk>
    meta: dict
    path: Path  # the token file


# ---- readers: the published file -> (train, val, test) -------------------------------

def _member(raw: bytes, spec: CorpusSpec) -> bytes:
    return zip_member(raw, spec.member, size=spec.content_size, md5=spec.content_md5)


def read_enwik8(raw: bytes, spec: CorpusSpec) -> Parts:
    return contiguous(_member(raw, spec), SPLIT)


def read_text8(raw: bytes, spec: CorpusSpec) -> Parts:
    data = _member(raw, spec)
    seen = np.flatnonzero(byte_counts(data))
    extra = sorted(set(seen.tolist()) - set(b"abcdefghijklmnopqrstuvwxyz "))
    if extra:  # text8 is defined as lowercase a-z and single spaces
        raise SourceError(f"text8 must hold only a-z and space; found byte 0x{extra[0]:02x}")
    return contiguous(data.decode("ascii"), SPLIT)


def read_ptb_char(raw: bytes, spec: CorpusSpec) -> Parts:
    return ptb_char_splits(raw)


def read_gutenberg(raw: bytes, spec: CorpusSpec) -> Parts:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourceError(f"not UTF-8 text (invalid byte at offset {e.start})") from None
    return contiguous(strip_gutenberg(text), WAR_AND_PEACE_SPLIT)


def read_plain_text(raw: bytes, spec: CorpusSpec) -> Parts:
    try:
        return contiguous(raw.decode("utf-8"), SPLIT)
    except UnicodeDecodeError as e:
        raise SourceError(f"not UTF-8 text (invalid byte at offset {e.start})") from None


# ---- the registry ----------------------------------------------------------------------

CORPORA: dict[str, CorpusSpec] = {s.name: s for s in (
    CorpusSpec(
        "tinyshakespeare", TINYSHAKESPEARE_URL, read_plain_text, "chars",
        size="1,115,394 chars, 65 symbols", split="90/5/5 % contiguous",
        license="Shakespeare's plays, public domain (selection: karpathy/char-rnn)",
        sha256=TINYSHAKESPEARE_SHA256, bundled="bundled/tinyshakespeare.txt.gz",
    ),
    CorpusSpec(
        "enwik8", "http://mattmahoney.net/dc/enwik8.zip", read_enwik8, "bytes",
        size="100,000,000 bytes, 256 ids", split="90M/5M/5M contiguous",
        license="Wikipedia text (CC BY-SA / GFDL)",
        content_md5="a1fa5ffddb56f4953e226637dabbb36a", content_size=100_000_000,
        member="enwik8",
    ),
    CorpusSpec(
        "text8", "http://mattmahoney.net/dc/text8.zip", read_text8, "chars",
        size="100,000,000 chars, 27 symbols", split="90M/5M/5M contiguous",
        license="Wikipedia text (CC BY-SA / GFDL)",
        content_size=100_000_000, archive_size=31_344_016, member="text8",
    ),
    CorpusSpec(
        "ptb_char", "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
        read_ptb_char, "chars",
        size="~5M chars, '_' between words", split="as shipped (ptb.char.*.txt)",
        license="LDC-derived (Penn Treebank): NOT public domain; needs LDC terms",
    ),
    CorpusSpec(
        "war_and_peace", "https://www.gutenberg.org/cache/epub/2600/pg2600.txt",
        read_gutenberg, "chars",
        size="~3.2M chars", split="80/10/10 % contiguous",
        license="public domain in the US (Project Gutenberg #2600; header/footer cut)",
    ),
)}


def spec_of(name: str, key: str = "corpus") -> CorpusSpec:
    try:
        return CORPORA[name]
    except KeyError:
        raise ConfigError(key, name, "one of " + ", ".join(CORPORA)) from None


# ---- paths and small files -------------------------------------------------------------

def cache_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("seqbench"))


def corpus_dir(name: str) -> Path:
    return cache_dir() / name


def source_path(spec: CorpusSpec) -> Path:
    """Where the download lives, and where a user without network places it by hand."""
    return corpus_dir(spec.name) / "source" / spec.filename


def _record_path(spec: CorpusSpec) -> Path:
    return corpus_dir(spec.name) / "source.json"


def _read_record(spec: CorpusSpec) -> dict | None:
    try:
        record = json.loads(_record_path(spec).read_text())
        return record if isinstance(record.get("sha256"), str) else None
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[io.BufferedWriter]:
    """Write to a temporary file and rename it over `path`: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj: dict) -> None:
    with _atomic(path) as f:
        f.write((json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _one_line(text: object, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _log(message: str) -> None:
    print(f"seqbench: {message}", file=sys.stderr)


# ---- trust: what a download is checked against -----------------------------------------

def _trusted_sha256(spec: CorpusSpec) -> tuple[str | None, str]:
    """The SHA-256 the download must have, and why: pinned, or recorded at first use.

    A corpus whose extracted content has a published checksum (enwik8) is checked on its
    content only, so a re-zipped but identical archive is still accepted.
    """
    if spec.sha256:
        return spec.sha256, "published"
    if spec.content_md5:
        return None, ""
    record = _read_record(spec)
    return (record["sha256"], "recorded at first download") if record else (None, "")


def expected_checksum(spec: CorpusSpec) -> str:
    if spec.sha256:
        return f"sha256 {spec.sha256}"
    if spec.content_md5:
        return f"md5 {spec.content_md5} of the unzipped {spec.member} (publisher's)"
    trusted, how = _trusted_sha256(spec)
    if trusted:
        return f"sha256 {trusted} ({how}, {_record_path(spec)})"
    return "none published (the SHA-256 of the first good download will be recorded)"


def _unavailable(spec: CorpusSpec, reason: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"{spec.name}: {_one_line(reason)}; URL {spec.source_url()}; checksum "
        f"{expected_checksum(spec)}; without network, download it elsewhere and place it at "
        f"{source_path(spec)}"
    )


def _check_download(spec: CorpusSpec, raw: bytes) -> str:
    """SHA-256 of a downloaded file after its size and checksum are checked."""
    if spec.archive_size is not None and len(raw) != spec.archive_size:
        raise SourceError(f"{len(raw):,} bytes, expected {spec.archive_size:,}")
    sha = hashlib.sha256(raw).hexdigest()
    trusted, how = _trusted_sha256(spec)
    if trusted and sha != trusted:
        hint = ("" if how == "published" else
                f"; if the source changed on purpose, delete {_record_path(spec)}")
        raise SourceError(f"SHA-256 {sha} differs from the {how} {trusted}{hint}")
    return sha


def _bundled(spec: CorpusSpec) -> bytes | None:
    """The package's own copy, or None when there is none or it is damaged."""
    if not spec.bundled:
        return None
    try:
        raw = gzip.decompress(resources.files("seqbench.data").joinpath(spec.bundled).read_bytes())
    except (OSError, EOFError, zlib.error):
        return None
    if spec.sha256 and hashlib.sha256(raw).hexdigest() != spec.sha256:
        return None
    return raw


# ---- the token cache -------------------------------------------------------------------

def _recipe(spec: CorpusSpec) -> dict:
    """What the cache was built from and how; any change makes the cache stale."""
    return {"version": spec.recipe, "vocab": spec.vocab, "sha256": spec.sha256,
            "content_md5": spec.content_md5}


def _meta_digest(meta: dict) -> str:
    """SHA-256 of meta.json's content without its own checksum (canonical JSON)."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
                          ).hexdigest()


def _vocab_from_meta(v: dict) -> CharVocab | ByteVocab:
    if v["kind"] == "bytes":
        return ByteVocab()
    return CharVocab(tuple(v["chars"]), bool(v["has_unk"]))


def _open(spec: CorpusSpec, *, full: bool = True) -> tuple[Corpus | None, str]:
    """The cached corpus after its checks (versions, sizes and, with `full`, the SHA-256 of
    the token file), or None and the problem."""
    root = corpus_dir(spec.name)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        return None, "not built"
    try:
        meta = json.loads(meta_path.read_text())
        # an edited vocabulary or split table would decode the right tokens wrongly; caches
        # written before meta_sha256 existed have none and are taken as they are
        if "meta_sha256" in meta and _meta_digest(meta) != meta["meta_sha256"]:
            return None, "meta.json was edited (it does not match its meta_sha256)"
        if meta.get("format_version") != FORMAT_VERSION:
            return None, f"cache format {meta.get('format_version')}, expected {FORMAT_VERSION}"
        if meta["recipe"] != _recipe(spec) or meta["vocab"]["kind"] != spec.vocab:
            return None, "built by another version of the corpus recipe"
        dtype, n = np.dtype(meta["dtype"]), int(meta["n_tokens"])
        bounds = [tuple(meta["splits"][s]) for s in SPLITS]
        if bounds[0][0] != 0 or bounds[-1][1] != n or any(
                a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
            return None, "meta.json has inconsistent split boundaries"
        tokens = root / meta["tokens_file"]
        if not tokens.is_file():
            return None, f"{tokens.name} is missing"
        size = tokens.stat().st_size
        if size != n * dtype.itemsize:
            return None, f"{tokens.name} has {size:,} bytes, expected {n * dtype.itemsize:,}"
        if full and (digest := _sha256_file(tokens)) != meta["tokens_sha256"]:
            return None, (f"{tokens.name} has SHA-256 {digest[:16]}…, meta.json says "
                          f"{str(meta['tokens_sha256'])[:16]}…")
        data = np.memmap(tokens, dtype=dtype, mode="c") if n else np.zeros(0, dtype)
        ids = {s: data[a:b] for s, (a, b) in zip(SPLITS, bounds)}
        unknown = {s: int(meta["unknown"][s]) for s in SPLITS}
        vocab = _vocab_from_meta(meta["vocab"])
    except OSError as e:
        return None, f"unreadable ({_one_line(e, 120)})"
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return None, f"meta.json is malformed ({e.__class__.__name__}: {_one_line(e, 80)})"
    return Corpus(spec.name, vocab, ids, unknown, meta, tokens), ""


def _encode(spec: CorpusSpec, parts: Parts):
    if spec.vocab == "bytes":
        vocab = ByteVocab()
    else:
        vocab = CharVocab.from_text(parts[0], tuple(parts[1:]))
    dtype = np.uint8 if vocab.size <= 256 else np.uint16 if vocab.size <= 65536 else np.uint32
    ids, unknown = {}, {}
    for split, part in zip(SPLITS, parts):
        ids[split], unknown[split] = vocab.encode(part, dtype=dtype)
    return vocab, ids, unknown


def _build(spec: CorpusSpec, raw: bytes, source: dict) -> Corpus:
    """Convert the published file into the token cache (raises SourceError)."""
    vocab, ids, unknown = _encode(spec, spec.read(raw, spec))
    root = corpus_dir(spec.name)
    dtype = ids["train"].dtype
    tokens = root / f"tokens.u{8 * dtype.itemsize}"
    digest, bounds, start = hashlib.sha256(), {}, 0
    with _atomic(tokens) as f:
        for split in SPLITS:
            buf = ids[split].tobytes()
            digest.update(buf)
            f.write(buf)
            bounds[split] = [start, start + len(ids[split])]
            start += len(ids[split])
    vocab_meta = {"kind": vocab.kind, "size": vocab.size}
    if vocab.kind == "chars":
        vocab_meta.update(chars=list(vocab.chars), has_unk=vocab.has_unk)
    meta = {
        "format_version": FORMAT_VERSION, "name": spec.name, "recipe": _recipe(spec),
        "tokens_file": tokens.name, "dtype": dtype.name, "n_tokens": start,
        "tokens_sha256": digest.hexdigest(), "splits": bounds, "unknown": unknown,
        "vocab": vocab_meta, "source": source, "created": _now(),
    }
    _write_json(root / "meta.json", {**meta, "meta_sha256": _meta_digest(meta)})
    for stale in root.glob("tokens.u*"):
        if stale != tokens:
            stale.unlink(missing_ok=True)
    corpus, problem = _open(spec)
    if corpus is None:  # only if another process rewrote the cache in between
        raise SourceError(f"the cache just written does not open: {problem}")
    return corpus


def _build_from_bundled(spec: CorpusSpec, raw: bytes) -> Corpus:
    return _build(spec, raw, {"url": spec.url, "file": f"seqbench/data/{spec.bundled}",
                              "sha256": spec.sha256, "trust": "published"})


def _build_from_download(spec: CorpusSpec) -> Corpus:
    """Check the kept download and convert it; raises SourceError if it is not good."""
    path = source_path(spec)
    raw = path.read_bytes()
    sha = _check_download(spec, raw)
    trust = "published" if spec.sha256 or spec.content_md5 else "first use"
    corpus = _build(spec, raw, {"url": spec.source_url(), "file": str(path), "sha256": sha,
                                "trust": trust})
    if _read_record(spec) is None:
        _write_json(_record_path(spec), {"url": spec.source_url(), "file": path.name,
                                         "sha256": sha, "bytes": len(raw), "trust": trust,
                                         "recorded": _now()})
    return corpus


# ---- downloading -----------------------------------------------------------------------

def _network_reason(e: BaseException) -> str:
    """The useful part of a requests error (its text nests urllib3's several times)."""
    text = str(e)
    for pattern in (r"\[Errno [^\]]+\][^'\")]*", r"IncompleteRead\([^)]*\)",
                    r"\d{3} (?:Client|Server) Error[^\n]*? for url"):
        m = re.search(pattern, text)
        if m:
            return f"{e.__class__.__name__}: {m.group(0).removesuffix(' for url').strip()}"
    return f"{e.__class__.__name__}: {_one_line(text, 160)}"


def _download(spec: CorpusSpec, progressbar) -> None:
    """Fetch the published file into source_path(spec) (pooch: temp file, check, rename)."""
    import pooch
    import requests

    url, path = spec.source_url(), source_path(spec)
    trusted, how = _trusted_sha256(spec)
    if url.startswith(("http://", "https://")):
        downloader = pooch.HTTPDownloader(
            progressbar=progressbar, timeout=60, chunk_size=1 << 16,
            headers={"User-Agent": "seqbench (https://pypi.org/project/pooch/)"})
    else:
        downloader = pooch.choose_downloader(url, progressbar=progressbar)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # pooch's advice to pin a hash is ours to give
    try:
        pooch.retrieve(url, known_hash=f"sha256:{trusted}" if trusted else None,
                       fname=path.name, path=path.parent, downloader=downloader)
    except ValueError as e:  # pooch: the downloaded file's hash does not match
        got = re.search(r"but got (\w+)", str(e))
        detail = f"its SHA-256 is {got.group(1)}" if got else _one_line(e, 160)
        if how != "published":
            detail += f"; if the source changed on purpose, delete {_record_path(spec)}"
        raise _unavailable(spec, f"the download is not the expected file ({detail})") from None
    except (requests.RequestException, OSError) as e:
        raise _unavailable(spec, f"download failed ({_network_reason(e)})") from None
    finally:
        if progressbar:  # pooch closes it only when the download succeeds
            progressbar.close()
        logger.setLevel(level)


# ---- public entry points -------------------------------------------------------------

def fetch(name: str, *, progressbar=False, log: Callable[[str], None] = _log) -> Corpus:
    """The corpus, downloading and converting it if needed (the only path that downloads).

    `progressbar` is what pooch's HTTPDownloader accepts: False, or an object with
    `total`, `update(n)`, `reset()` and `close()`.

    A good cache is returned as it is (no network). A damaged cache is rebuilt from the
    bundled copy or the kept download; a damaged download is downloaded again.
    """
    spec = spec_of(name)
    corpus, problem = _open(spec)
    if corpus is not None:
        return corpus
    if problem != "not built":
        log(f"{name}: the token cache is not usable ({problem}); rebuilding it")
    raw = _bundled(spec)
    if raw is not None:
        return _build_from_bundled(spec, raw)
    if spec.bundled:
        log(f"{name}: the bundled copy is damaged; downloading {spec.source_url()}")
    path = source_path(spec)
    if path.is_file():
        try:
            return _build_from_download(spec)
        except SourceError as e:
            log(f"{name}: {path} is not the published file ({_one_line(e, 160)}); "
                "downloading it again")
            path.unlink(missing_ok=True)
    log(f"{name}: downloading {spec.source_url()} -> {path}")
    _download(spec, progressbar)
    try:
        return _build_from_download(spec)
    except SourceError as e:
        path.unlink(missing_ok=True)
        raise _unavailable(spec, f"the download is not the published file: {e}") from None


def load(name: str, *, log: Callable[[str], None] = _log) -> Corpus:
    """The cached corpus for a training run; never downloads.

    Raises ConfigError (key `task.name`) naming `python -m seqbench data fetch NAME` when
    the corpus is not cached, or when its cache is damaged and cannot be rebuilt from the
    kept download.
    """
    spec = spec_of(name, key="task.name")
    corpus, problem = _open(spec)
    if corpus is not None:
        return corpus
    fix = f"run: python -m seqbench data fetch {name}"
    raw = _bundled(spec)
    if problem == "not built" and raw is None and not source_path(spec).is_file():
        raise ConfigError("task.name", name,
                          f"corpus not downloaded (data cache: {corpus_dir(name)}); {fix}")
    try:  # offline: from the bundled copy, or the download kept (or placed there by hand)
        corpus = _build_from_bundled(spec, raw) if raw is not None else _build_from_download(spec)
    except (SourceError, OSError) as e:
        what = "not built" if problem == "not built" else f"damaged ({problem})"
        raise ConfigError("task.name", name, f"its token cache is {what} and its download "
                                             f"{source_path(spec)} is not usable "
                                             f"({_one_line(e, 120)}); {fix}") from None
    log(f"{name}: built the token cache from the download ({problem})")
    return corpus


def verify(name: str) -> str:
    """Hash every cached file of a corpus, repair what can be repaired offline, and say
    what was found (one line). Raises DataUnavailableError when only a download can help."""
    spec = spec_of(name)
    fix = f"run: python -m seqbench data fetch {name}"
    bundled_raw = _bundled(spec)
    if spec.bundled and bundled_raw is None:
        raise DataUnavailableError(f"{name}: the bundled copy inside the package is damaged; "
                                   "reinstall seqbench")
    corpus, problem = _open(spec)  # hashes the token file
    path, notes, source_ok = source_path(spec), [], False
    if path.is_file():
        try:
            raw = path.read_bytes()
            _check_download(spec, raw)
            spec.read(raw, spec)
            source_ok = True
        except SourceError as e:  # useless for a rebuild: `data fetch` downloads it again
            path.unlink()
            notes.append(f"removed the damaged download: {_one_line(e, 160)}")
    if corpus is None:
        if bundled_raw is not None:
            if problem == "not built":
                return f"{name}: ok (bundled copy matches its checksum; no token cache built)"
            corpus = _build_from_bundled(spec, bundled_raw)
        elif source_ok:
            corpus = _build_from_download(spec)
        elif problem == "not built":
            raise DataUnavailableError(f"{name}: not in the data cache ({corpus_dir(name)}); "
                                       f"{'; '.join([*notes, fix])}")
        else:
            raise DataUnavailableError(
                f"{name}: the token cache is damaged ({problem}) and the download is "
                f"{'damaged' if notes else 'missing'}; {fix}")
        notes.append(f"rebuilt the token cache ({problem})")
    what = "bundled copy" if bundled_raw is not None else "download"
    if not notes:
        notes.append(f"token file and {what} match their checksums" if source_ok or bundled_raw
                     is not None else "token file matches its checksum; download not kept")
    return f"{name}: ok, {corpus.meta['n_tokens']:,} tokens ({'; '.join(notes)})"


def status(name: str) -> dict:
    """What `data list` shows about a corpus; cheap (no hashing, no network)."""
    spec = spec_of(name)
    corpus, problem = _open(spec, full=False)
    cached = "yes" if corpus else ("no" if problem == "not built" else "damaged")
    if spec.bundled:
        cached = "bundled" + (", cached" if corpus else "")
    if spec.sha256:
        checksum = f"published sha256 {spec.sha256[:12]}…"
    elif spec.content_md5:
        checksum = f"published md5 {spec.content_md5[:12]}… (unzipped)"
    else:
        record = _read_record(spec)
        checksum = (f"first use: sha256 {record['sha256'][:12]}… ({record.get('recorded', '?')})"
                    if record else "none published (trust on first use)")
    return {"name": name, "cached": cached, "checksum": checksum, "problem": problem,
            "tokens": corpus.meta["n_tokens"] if corpus else None,
            "vocab_size": corpus.vocab.size if corpus else None}


def cached_names() -> list[str]:
    """Corpora with anything in the cache, plus the bundled ones."""
    return [n for n, s in CORPORA.items() if s.bundled or corpus_dir(n).exists()]


# ---- tasks -----------------------------------------------------------------------------

def corpus_task(cfg: CorpusTaskConfig) -> CharLMTask:
    """Next-character (or next-byte) prediction on a cached corpus, never downloading."""
    corpus = load(cfg.name)
    return CharLMTask(cfg.name, cfg, corpus.vocab, dict(corpus.ids), dict(corpus.unknown))


for _name in ("enwik8", "text8", "ptb_char", "war_and_peace"):
    TASKS.register(_name, CorpusTaskConfig)(corpus_task)
