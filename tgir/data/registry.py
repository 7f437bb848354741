"""Dataset names -> loaders. Loaders are imported only when used."""

from __future__ import annotations

import importlib
from pathlib import Path

from tgir.data.records import RetrievalSplit
from tgir.errors import unknown_choice

# name -> ("module:function", splits). "css2d" is CSS written by our generator.
DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "css": ("tgir.data.css:load_css", ("train", "test")),
    "css2d": ("tgir.data.css:load_css", ("train", "test")),
    "fashioniq": ("tgir.data.fashioniq:load_fashioniq", ("train", "val", "test")),
    "shoes": ("tgir.data.shoes:load_shoes", ("train", "test")),
    "fashion200k": ("tgir.data.fashion200k:load_fashion200k", ("train", "test")),
    "mitstates": ("tgir.data.mitstates:load_mitstates", ("train", "test")),
}


def load_split(name: str, root: str | Path, split: str, **options) -> RetrievalSplit:
    """Load ``split`` of dataset ``name`` from ``root``.

    Args:
        name: One of ``DATASETS``.
        root: The dataset's root folder.
        split: A split name valid for that dataset.
        **options: Dataset-specific settings (see each loader's docstring).

    Raises:
        TgirUserError: Unknown name or split, or a dataset that is missing or malformed.
    """
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    target, _splits = DATASETS[name]
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(root, split, **options)
