"""Character vocabularies built from the training split only.

Building the vocabulary from the training split keeps validation honest: a character
that never occurs in training cannot be predicted, so it maps to one `<unk>` id and is
counted, rather than silently enlarging the output layer with test information.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNK = "<unk>"


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass(frozen=True)
class CharVocab:
    chars: tuple[str, ...]  # sorted by code point; index = token id
    has_unk: bool

    @classmethod
    def from_text(cls, train: str, others: tuple[str, ...] = ()) -> CharVocab:
        chars = tuple(chr(c) for c in np.unique(_codepoints(train)))
        known = set(chars)
        has_unk = any(ch not in known for text in others for ch in set(text))
        return cls(chars, has_unk)

    @property
    def size(self) -> int:
        return len(self.chars) + int(self.has_unk)

    @property
    def unk_id(self) -> int | None:
        return len(self.chars) if self.has_unk else None

    def encode(self, text: str) -> tuple[np.ndarray, int]:
        """Token ids (int64) and the number of characters that were unknown."""
        cps = _codepoints(text)
        table = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        idx = np.searchsorted(table, cps)
        idx_clipped = np.minimum(idx, len(table) - 1)
        known = table[idx_clipped] == cps
        n_unknown = int((~known).sum())
        if n_unknown and not self.has_unk:
            raise ValueError("text has characters outside the vocabulary and no <unk> id")
        ids = np.where(known, idx_clipped, len(self.chars)).astype(np.int64)
        return ids, n_unknown

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else "\ufffd" for i in ids)
