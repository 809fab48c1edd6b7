"""Text corpora: the bundled tiny-shakespeare and any UTF-8 file a user points at.

The bundled copy ships gzipped inside the package so the default run needs no network;
its SHA-256 is checked on every load, so a damaged install fails loudly instead of
silently training on different data.
"""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

from seqbench.errors import ConfigError

TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)


class CorruptDataError(RuntimeError):
    """A bundled or cached corpus does not match its checksum."""


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
