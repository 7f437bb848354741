"""Calibration data: N real samples (reference image, text, target image) streamed from any supported
dataset through the bundle's own preprocessing and tokenizer, as the deployed runtime would see them.

Samples come from the *training* split by default (calibrating on the test split would tune on it),
chosen with a seeded generator so a calibration is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tgir.data.images import Preprocess, load_image
from tgir.data.records import Query, RetrievalSplit
from tgir.data.registry import DATASETS, load_split
from tgir.errors import TgirUserError, unknown_choice
from tgir.manifest import Manifest
from tgir.vocab import UNK, Vocabulary

MIN_SAMPLES = 32
MAX_UNKNOWN = 0.5  # share of unknown words above which the dataset does not match the vocabulary


@dataclass(frozen=True)
class CalibData:
    """Where calibration samples come from.

    Attributes:
        dataset: Dataset format (``tgir.data.registry.DATASETS``).
        data: Dataset root folder.
        split: Split to draw from (default: train; any split of the dataset but ``test``: tuning
            on the test split would make its scores optimistic).
        samples: Number of queries drawn (each brings a reference and a target image).
        seed: Seed of the draw.
        batch: Samples per batch handed to the model.
        options: Loader settings, e.g. ``{"category": "dress"}``.
    """

    dataset: str
    data: str
    split: str = "train"
    samples: int = 512
    seed: int = 0
    batch: int = 16
    options: tuple = ()

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise unknown_choice("dataset", self.dataset, sorted(DATASETS))
        allowed = calibration_splits(self.dataset)
        if self.split == "test":
            raise TgirUserError(f"calibration samples never come from the test split (that would tune on it); "
                                f"valid choices for {self.dataset}: {', '.join(repr(s) for s in allowed)}")
        if self.split not in allowed:
            raise unknown_choice(f"{self.dataset} calibration split", self.split, allowed)
        if self.samples < MIN_SAMPLES:
            raise TgirUserError(f"too few calibration samples ({self.samples}); use at least {MIN_SAMPLES} "
                                "(512 is a good default)")
        if self.batch < 1:
            raise TgirUserError(f"batch must be >= 1, got {self.batch}")


def calibration_splits(dataset: str) -> tuple[str, ...]:
    """The splits of ``dataset`` that calibration may draw from: all but ``test``."""
    return tuple(s for s in DATASETS[dataset][1] if s != "test")


def usable_queries(cfg: CalibData) -> tuple[RetrievalSplit, list[Query]]:
    """Load ``cfg``'s split and its queries that have a target image, checking there are enough.

    Cheap next to a calibration (no image is read): call it before slow work to fail early.

    Raises:
        TgirUserError: A missing or malformed dataset, or fewer usable queries than ``cfg.samples``.
    """
    split = load_split(cfg.dataset, cfg.data, cfg.split, **dict(cfg.options))
    usable = [q for q in split.queries if q.target >= 0]
    if len(usable) < cfg.samples:
        raise TgirUserError(f"{cfg.data}: {cfg.split} split has {len(usable)} queries with a target image; "
                            f"asked for {cfg.samples} calibration samples")
    return split, usable


@dataclass
class CalibBatch:
    """One batch: ``references``/``targets`` ``[B, 3, S, S]`` float32, ``ids`` ``[B, L]`` and ``lengths``
    ``[B]`` int64 (padded to the bundle's fixed text length)."""

    references: np.ndarray
    targets: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray


def bundle_inputs(folder: str | Path) -> tuple[Manifest, Preprocess, Vocabulary]:
    """The manifest, preprocessing and vocabulary of an FP32 bundle, checked for calibration."""
    folder = Path(folder)
    manifest = Manifest.load(folder)
    if manifest.precision != "fp32":
        raise TgirUserError(f"{folder}: bundle is already {manifest.precision}; calibrate its fp32 export instead")
    prep = Preprocess.from_dict(manifest.preprocess)
    side = manifest.graphs["image_encoder"]["inputs"][0]["shape"][-1]
    if prep.size != side:
        raise TgirUserError(f"{folder}: preprocessing makes {prep.size} px images but the image graph takes {side} px")
    vocab = Vocabulary.load(folder / manifest.tokenizer["vocab_file"])
    return manifest, prep, vocab


def calibration_batches(folder: str | Path, cfg: CalibData,
                        progress: Callable[[int, int], None] | None = None) -> Iterator[CalibBatch]:
    """Stream ``cfg.samples`` samples in batches, checked against the bundle first.

    Raises:
        TgirUserError: Too few queries in the split, texts whose words the bundle's vocabulary mostly
            does not know (another dataset), or a bundle that is not fp32.
    """
    manifest, prep, vocab = bundle_inputs(folder)
    split, usable = usable_queries(cfg)
    chosen = [usable[i] for i in np.random.default_rng(cfg.seed).choice(len(usable), cfg.samples, replace=False)]
    length = manifest.tokenizer["max_length"]
    all_ids, all_lengths = vocab.encode_batch([q.text for q in chosen], length)  # [N, L], [N]
    valid = np.arange(length)[None] < all_lengths[:, None]  # [N, L]: PAD shares UNK's id, so mask it out
    unknown = float((all_ids[valid] == UNK).sum() / max(all_lengths.sum(), 1))
    if unknown > MAX_UNKNOWN:
        raise TgirUserError(f"{cfg.data}: {unknown:.0%} of the calibration texts' words are unknown to the "
                            f"bundle's vocabulary; is this the dataset the model was trained on?")
    steps = range(0, len(chosen), cfg.batch)
    for n, start in enumerate(steps, 1):
        part = range(start, min(start + cfg.batch, len(chosen)))
        yield CalibBatch(
            references=np.stack([prep(load_image(split.images[chosen[i].ref].path)) for i in part]),
            targets=np.stack([prep(load_image(split.images[chosen[i].target].path)) for i in part]),
            ids=all_ids[part.start:part.stop], lengths=all_lengths[part.start:part.stop])
        if progress:
            progress(n, len(steps))
