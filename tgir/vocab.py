"""The word vocabulary and tokenizer shared by training, export and both runtimes. Torch-free.

Rules (AMC's, which cover TIRG's and MAAF's): lowercase, drop non-ASCII characters, delete
punctuation, split on whitespace. Reserved ids: ``<UNK>``=0 (also padding), ``<AND>``=1,
``<BOS>``=2, ``<EOS>``=3; special tokens written in a text (``"<BOS> red <AND> short <EOS>"``) are
kept whole. Unknown words map to ``<UNK>``; nothing a user types can make encoding fail.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from tgir.errors import TgirUserError

FORMAT = "tgir-vocab"
VERSION = 1
SPECIALS = ("<UNK>", "<AND>", "<BOS>", "<EOS>")
UNK, AND, BOS, EOS = range(4)
PAD = UNK  # AMC pads with <UNK>; lengths tell the encoders where a text ends
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")", re.IGNORECASE)
_DROP_PUNCT = str.maketrans("", "", string.punctuation)


def tokenize(text: str) -> list[str]:
    """Split a text into tokens by the rules above; special tokens are returned upper-case."""
    tokens: list[str] = []
    for piece in _SPECIAL_RE.split(text):
        if _SPECIAL_RE.fullmatch(piece):
            tokens.append(piece.upper())
            continue
        piece = piece.encode("ascii", "ignore").decode("ascii").lower().translate(_DROP_PUNCT)
        tokens.extend(piece.split())
    return tokens


class Vocabulary:
    """Word <-> id mapping with AMC's reserved ids.

    Args:
        words: Ordinary words, in id order after the specials.
        max_length: Texts longer than this many tokens are cut when encoding.
    """

    def __init__(self, words: Sequence[str], max_length: int = 64) -> None:
        if max_length < 1:
            raise TgirUserError(f"max_length must be >= 1, got {max_length}")
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise TgirUserError("vocabulary words must be unique")
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_length: int = 64) -> Vocabulary:
        """Build from training texts: words seen at least ``min_count`` times, most frequent first
        (ties alphabetical, so the same texts always give the same ids)."""
        counts = Counter(t for text in texts for t in tokenize(text) if t not in SPECIALS)
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words, max_length)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, cut at ``max_length``; an empty text encodes as ``[<UNK>]`` so
        every sequence has at least one step."""
        ids = [self.stoi.get(t, UNK) for t in tokenize(text)][: self.max_length]
        return ids or [UNK]

    def encode_batch(self, texts: Sequence[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pad a batch of texts.

        Args:
            length: Fixed padded length (an exported text graph's): texts are cut to it. None: the
                longest text in the batch.

        Returns:
            ``ids`` ``[B, L]`` int64 padded with ``PAD`` and ``lengths`` ``[B]`` int64.
        """
        seqs = [self.encode(t)[:length] for t in texts]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        ids = np.full((len(seqs), length or int(lengths.max(initial=1))), PAD, dtype=np.int64)
        for row, seq in zip(ids, seqs, strict=True):
            row[: len(seq)] = seq
        return ids, lengths

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.itos[i] if 0 <= i < len(self.itos) else SPECIALS[UNK] for i in ids)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "rules": {"lowercase": True, "ascii_only": True, "strip_punctuation": True,
                      "split": "whitespace"},
            "specials": {s: i for i, s in enumerate(SPECIALS)},
            "pad_id": PAD,
            "max_length": self.max_length,
            "words": self.itos[len(SPECIALS):],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary JSON file written by ``save``.

        Raises:
            TgirUserError: Missing file, invalid JSON, another format or version, other special ids.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise TgirUserError(f"{path}: vocabulary file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TgirUserError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TgirUserError(f"{path}: not a tgir vocabulary (expected \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise TgirUserError(
                f"{path}: vocabulary version {data.get('version')!r}; this tgir reads {VERSION}")
        if data.get("specials") != {s: i for i, s in enumerate(SPECIALS)}:
            expected = dict(zip(SPECIALS, range(4), strict=True))
            raise TgirUserError(f"{path}: special ids differ from {expected}")
        words = data.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise TgirUserError(f"{path}: 'words' must be a list of strings")
        return cls(words, int(data.get("max_length", 64)))
