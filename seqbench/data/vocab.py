"""Vocabularies: characters seen in the training split, or all 256 byte values.

A character vocabulary is built from the training split only, which keeps validation
honest: a character that never occurs in training cannot be predicted, so it maps to one
`<unk>` id and is counted, rather than silently enlarging the output layer with test
information. A byte vocabulary is all 256 values: every byte of any file has an id, so
nothing is ever unknown and the token ids are the bytes themselves (a cached byte corpus
is the raw file, memory-mapped as it is).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNK = "<unk>"

# ASCII texts (text8, PTB, most corpora) are encoded through a 128-entry lookup table in
# chunks of this many characters, so a 100M-character corpus never needs an int64 copy of
# its code points (800 MB) on top of the result.
_CHUNK = 1 << 24


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def byte_counts(data: bytes) -> np.ndarray:
    """How often each of the 256 byte values occurs, in chunks: np.bincount converts its
    input to int64, which for a 100 MB corpus would be an 800 MB temporary."""
    codes = np.frombuffer(data, dtype=np.uint8)
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, len(codes), _CHUNK):
        counts += np.bincount(codes[start:start + _CHUNK], minlength=256)
    return counts


def token_counts(ids: np.ndarray, size: int) -> np.ndarray:
    """How often each of the token ids 0..size-1 occurs in `ids` (any integer dtype, e.g.
    a memory-mapped uint8/uint16 token file), in chunks: bincount's int64 copy of a
    100M-token split would be 800 MB."""
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(ids), _CHUNK):
        part = np.bincount(np.asarray(ids[start:start + _CHUNK]), minlength=size)
        if len(part) > size:
            raise ValueError(f"token id {len(part) - 1} outside a vocabulary of {size}")
        counts += part
    return counts


def _ascii_counts(text: str) -> np.ndarray:
    return byte_counts(text.encode("ascii"))[:128]


@dataclass(frozen=True)
class CharVocab:
    chars: tuple[str, ...]  # sorted by code point; index = token id
    has_unk: bool

    kind = "chars"

    @classmethod
    def from_text(cls, train: str, others: tuple[str, ...] = ()) -> CharVocab:
        if train.isascii():
            chars = tuple(chr(c) for c in np.flatnonzero(_ascii_counts(train)))
        else:
            chars = tuple(chr(c) for c in np.unique(_codepoints(train)))
        known = set(chars)
        has_unk = False
        for text in others:
            if text.isascii():
                seen = (chr(c) for c in np.flatnonzero(_ascii_counts(text)))
            else:
                seen = set(text)
            has_unk = has_unk or any(ch not in known for ch in seen)
        return cls(chars, has_unk)

    @property
    def size(self) -> int:
        return len(self.chars) + int(self.has_unk)

    @property
    def unk_id(self) -> int | None:
        return len(self.chars) if self.has_unk else None

    def encode(self, text: str, dtype=np.int64) -> tuple[np.ndarray, int]:
        """Token ids and the number of characters that were unknown."""
        ids, n_unknown = self._encode_ascii(text) if text.isascii() else self._encode_any(text)
        if n_unknown and not self.has_unk:
            raise ValueError("text has characters outside the vocabulary and no <unk> id")
        return ids.astype(dtype, copy=False), n_unknown

    def _encode_any(self, text: str) -> tuple[np.ndarray, int]:
        cps = _codepoints(text)
        table = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        idx = np.minimum(np.searchsorted(table, cps), max(len(table) - 1, 0))
        known = table[idx] == cps if len(table) else np.zeros(len(cps), dtype=bool)
        ids = np.where(known, idx, len(self.chars)).astype(np.int64)
        return ids, int((~known).sum())

    def _encode_ascii(self, text: str) -> tuple[np.ndarray, int]:
        unk = len(self.chars)  # ASCII code points sort first, so their ids are < 128
        lut = np.full(128, unk, dtype=np.min_scalar_type(unk))
        for i, c in enumerate(self.chars):
            if ord(c) < 128:
                lut[ord(c)] = i
        codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        out = np.empty(len(codes), dtype=lut.dtype)
        n_unknown = 0
        for start in range(0, len(codes), _CHUNK):
            part = lut[codes[start:start + _CHUNK]]
            n_unknown += int(np.count_nonzero(part == unk))
            out[start:start + _CHUNK] = part
        return out, n_unknown

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else "\ufffd" for i in ids)


@dataclass(frozen=True)
class ByteVocab:
    """All 256 byte values; the id of a byte is its value."""

    kind = "bytes"
    has_unk = False
    unk_id = None

    @property
    def size(self) -> int:
        return 256

    def encode(self, data: bytes, dtype=np.int64) -> tuple[np.ndarray, int]:
        """Token ids (the bytes) and the number of unknown tokens, always 0."""
        return np.frombuffer(data, dtype=np.uint8).astype(dtype), 0

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
