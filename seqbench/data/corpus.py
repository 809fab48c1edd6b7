"""Text corpora: the bundled tiny-shakespeare, any UTF-8 file a user points at, and
the text clean-up the downloadable corpora need (`seqbench.data.corpora`).

The bundled copy ships gzipped inside the package so the default run needs no network;
its SHA-256 is checked on every load, so a damaged install fails loudly instead of
silently training on different data.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import zipfile
import zlib
from importlib import resources
from pathlib import Path

from seqbench.errors import ConfigError

TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)


class CorruptDataError(RuntimeError):
    """A bundled or cached corpus does not match its checksum."""


class SourceError(ValueError):
    """A downloaded file is not the published one (size, checksum or structure)."""


def tinyshakespeare() -> str:
    blob = resources.files("seqbench.data").joinpath("bundled/tinyshakespeare.txt.gz")
    raw = gzip.decompress(blob.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TINYSHAKESPEARE_SHA256:
        raise CorruptDataError(
            f"bundled tinyshakespeare has SHA-256 {digest}, expected {TINYSHAKESPEARE_SHA256}; "
            "reinstall seqbench"
        )
    return raw.decode("ascii")


def read_text_file(path: str | None, key: str = "task.path", newline: str = "lf") -> str:
    """Read a UTF-8 file (a BOM is dropped); CRLF and CR become LF unless newline='keep'."""
    if not path:
        raise ConfigError(key, path, "a path to a UTF-8 text file is required")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(key, path, "no such file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            key, path, f"must be UTF-8 text (invalid byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from None
    if newline == "lf":
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise ConfigError(key, path, "the file is empty")
    return text


# Project Gutenberg wraps every ebook in a licence header and footer between these marker
# lines ("THE" in current files, "THIS" in older ones; some write "EBOOK", some "E-BOOK").
_GUTENBERG_START = re.compile(
    r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*$", re.M | re.I)
_GUTENBERG_END = re.compile(
    r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """The book between Project Gutenberg's START and END marker lines, with LF newlines.

    Both markers are required: a file without its END marker is a truncated download (or
    not a Gutenberg file), and training on it would silently change the corpus.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _GUTENBERG_START.search(text)
    if start is None:
        raise SourceError("no '*** START OF THE PROJECT GUTENBERG EBOOK' line")
    end = _GUTENBERG_END.search(text, start.end())
    if end is None:
        raise SourceError("no '*** END OF THE PROJECT GUTENBERG EBOOK' line (truncated?)")
    body = text[start.end():end.start()].strip()
    if not body:
        raise SourceError("nothing between the Project Gutenberg START and END lines")
    return body + "\n"


def contiguous(data, fractions: tuple[float, float, float]):
    """Contiguous (train, val, test) parts of a str or bytes, in that order; the same
    arithmetic as `seqbench.data.tasks.split_text` (which uses the 90/5/5 fractions)."""
    n = len(data)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return data[:a], data[a:b], data[b:]


def zip_member(raw: bytes, member: str, size: int | None = None,
               md5: str | None = None) -> bytes:
    """One file of a zip archive held in memory, checked against its published size and
    MD5 when they are known (the publisher of enwik8 gives the MD5 of the unzipped file)."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            data = z.read(member)
    except KeyError:
        raise SourceError(f"the zip archive has no member {member!r}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise SourceError(f"not a valid zip archive ({e})") from None
    if size is not None and len(data) != size:
        raise SourceError(f"{member} has {len(data):,} bytes, expected {size:,}")
    if md5 is not None and hashlib.md5(data).hexdigest() != md5:
        raise SourceError(f"MD5 of {member} is {hashlib.md5(data).hexdigest()}, expected {md5}")
    return data


PTB_CHAR_FILES = ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt")


def ptb_char_text(text: str) -> str:
    """One PTB character file as a string: the space-separated symbols of each line joined
    (`_` stays the word boundary, as shipped) and a newline ending each sentence (the
    `<eos>` that word-level PTB models predict)."""
    return "".join("".join(line.split()) + "\n" for line in text.splitlines())


def ptb_char_splits(raw: bytes) -> tuple[str, str, str]:
    """Train, valid and test of `simple-examples.tgz` (its data/ptb.char.*.txt), read in
    memory: nothing is extracted to disk, so member paths cannot escape the cache."""
    parts = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
            files = {Path(m.name).name: m for m in tar.getmembers()
                     if m.isfile() and Path(m.name).parent.name == "data"}
            for name in PTB_CHAR_FILES:
                if name not in files:
                    raise SourceError(f"the archive has no data/{name}")
                parts.append(ptb_char_text(tar.extractfile(files[name]).read().decode("ascii")))
    except UnicodeDecodeError:
        raise SourceError("the PTB character files are not ASCII") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise SourceError(f"not a valid .tgz archive ({e})") from None
    return parts[0], parts[1], parts[2]
