"""What every dataset loader produces: a split as plain records, torch-free.

A ``RetrievalSplit`` lists the images a split touches (the gallery plus any reference images that
sit outside it) and its queries. Hits are decided by label equality: two images with the same
label count as the same target (CSS: identical scenes; Fashion200k: identical descriptions;
MIT-States: the same "adj noun"; FashionIQ/Shoes: the same image name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tgir.errors import TgirUserError


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    Attributes:
        path: Where the image file is.
        name: The dataset's own id for it (ASIN, basename, relative path, index).
        label: Index into ``RetrievalSplit.label_names``; equal labels are interchangeable targets.
        in_gallery: Whether the image is a retrieval candidate (references may sit outside).
    """

    path: Path
    name: str
    label: int
    in_gallery: bool = True


@dataclass(frozen=True)
class Query:
    """One composed query.

    Attributes:
        ref: Index into ``RetrievalSplit.images`` of the reference image (excluded from its ranking).
        text: Modification text, with captions already joined as the loader was told.
        target: Index of the target image, or -1 when the target is a class, not an image
            (MIT-States test queries) or unknown (FashionIQ test).
        label: Label a retrieved image must carry to count as a hit (-1: unknown).
        op: Operation kind for per-operation breakdowns (CSS: add/remove/make), else "".
    """

    ref: int
    text: str
    target: int
    label: int
    op: str = ""


@dataclass
class RetrievalSplit:
    """A loaded split: images, queries and label names, plus dataset-specific extras."""

    dataset: str
    split: str
    images: list[ImageRecord]
    queries: list[Query]
    label_names: list[str]
    extra: dict = field(default_factory=dict)

    @property
    def gallery(self) -> np.ndarray:
        """Indices into ``images`` of the retrieval candidates, in order. ``[G]`` int64."""
        return np.array([i for i, r in enumerate(self.images) if r.in_gallery], dtype=np.int64)

    def gallery_labels(self) -> np.ndarray:
        return np.array([self.images[i].label for i in self.gallery], dtype=np.int64)

    def query_labels(self) -> np.ndarray:
        return np.array([q.label for q in self.queries], dtype=np.int64)

    def query_refs(self) -> np.ndarray:
        return np.array([q.ref for q in self.queries], dtype=np.int64)

    def summary(self) -> dict:
        """Counts for printing: images, gallery size, queries, labels, queries per operation."""
        ops: dict[str, int] = {}
        for q in self.queries:
            if q.op:
                ops[q.op] = ops.get(q.op, 0) + 1
        out = {
            "dataset": self.dataset,
            "split": self.split,
            "images": len(self.images),
            "gallery": int(len(self.gallery)),
            "queries": len(self.queries),
            "labels": len(self.label_names),
        }
        if ops:
            out["queries_per_op"] = dict(sorted(ops.items()))
        return out


class LabelIndex:
    """Assigns dense label ids to hashable keys in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[object, int] = {}
        self.names: list[str] = []

    def __call__(self, key: object, name: str | None = None) -> int:
        if key not in self.ids:
            self.ids[key] = len(self.names)
            self.names.append(str(key) if name is None else name)
        return self.ids[key]


def check_split(split: str, valid: tuple[str, ...], dataset: str) -> None:
    """Raise a user error naming the valid splits when ``split`` is not one of them."""
    if split not in valid:
        raise TgirUserError(f"unknown split {split!r} for {dataset}; valid choices: {', '.join(valid)}")


def require_dir(path: Path, what: str, expected: str) -> Path:
    """Return ``path`` if it is a directory, else raise a user error saying what was expected."""
    if not path.is_dir():
        raise TgirUserError(f"{path}: {what} not found (expected {expected})")
    return path


def require_file(path: Path, expected: str) -> Path:
    """Return ``path`` if it is a file, else raise a user error saying what was expected."""
    if not path.is_file():
        raise TgirUserError(f"{path}: file not found (expected {expected})")
    return path


def read_json(path: Path, expected: str, kind: type | None = None):
    """Read a JSON file a dataset ships, with one-line errors naming the path and what was expected.

    Args:
        path: The file.
        expected: What the file should hold, for messages (e.g. "a list of ASIN strings").
        kind: Required top-level type (``list`` or ``dict``), or None for any.
    """
    require_file(path, expected)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TgirUserError(f"{path}: not valid JSON ({err}); expected {expected}") from None
    if kind is not None and not isinstance(data, kind):
        raise TgirUserError(f"{path}: expected a JSON {kind.__name__} ({expected}), got {type(data).__name__}")
    return data
