"""CSS (TIRG's format), which is also what the CSS-2D generator writes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from tgir.data.css2d.generate import DUP_NAME, JSON_NAME
from tgir.data.records import (
    ImageRecord,
    LabelIndex,
    Query,
    RetrievalSplit,
    check_split,
    read_json,
    require_dir,
)
from tgir.errors import TgirUserError

SPLITS = ("train", "test")


SEQUENCE = (list, tuple, np.ndarray)  # the pickle may hold arrays where the JSON mirror has lists


def _read_dataset(root: Path, prefer_json: bool) -> tuple[dict, Path]:
    """Read the whole dataset dict, from the JSON mirror when allowed, else the pickled ``.dup.npy``.

    The ``.dup.npy`` file is a pickle: loading it can execute code, so only load files you trust.

    Returns:
        The dict and the file it came from (for messages).
    """
    json_path, dup_path = root / JSON_NAME, root / DUP_NAME
    if prefer_json and json_path.is_file():
        return read_json(json_path, "the CSS-2D JSON mirror written by `tgir data css2d`", dict), json_path
    if not dup_path.is_file():
        raise TgirUserError(f"{dup_path}: file not found (expected the CSS data file {DUP_NAME} in {root})")
    try:
        data = np.load(dup_path, allow_pickle=True, encoding="latin1").item()
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise TgirUserError(f"{dup_path}: cannot read the CSS data file ({err})") from None
    if not isinstance(data, dict):
        raise TgirUserError(f"{dup_path}: expected a pickled dict with 'train' and 'test' keys")
    return data, dup_path


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _queries(mods: list, labels: list[int], n_images: int, where: str) -> list[Query]:
    queries = []
    for i, mod in enumerate(mods):
        field = f"{where}: mods[{i}]"
        try:
            text, srcs, dsts = mod["to_str"], list(mod["from"]), list(mod["to"])
        except (KeyError, TypeError):
            raise TgirUserError(f"{field}: expected a dict with 'from', 'to' and 'to_str'") from None
        if not isinstance(text, str) or not text.strip():
            raise TgirUserError(f"{field}.to_str: empty modification text")
        if len(srcs) != len(dsts):
            raise TgirUserError(f"{field}: 'from' has {len(srcs)} ids but 'to' has {len(dsts)}")
        for s, t in zip(srcs, dsts, strict=True):
            if not (_is_int(s) and _is_int(t) and 0 <= s < n_images and 0 <= t < n_images):
                raise TgirUserError(f"{field}: image id out of range 0..{n_images - 1} ({s} -> {t})")
            queries.append(Query(ref=int(s), text=text.strip(), target=int(t), label=labels[t],
                                 op=text.split()[0]))
    return queries


def _check_split(s: dict, where: str) -> list:
    """The types of one split's entries (a hand-edited file must fail here, not deep in a loader);
    returns its labels (one per image; default: every image its own label)."""
    for key, what in (("objects_img", "a list of scenes, one per image"), ("mods", "a list of modifications")):
        if not isinstance(s[key], SEQUENCE):
            raise TgirUserError(f"{where}['{key}']: expected {what}, got {type(s[key]).__name__}")
    n = len(s["objects_img"])
    raw = s.get("labels", range(n))
    if not isinstance(raw, (*SEQUENCE, range)) or not all(_is_int(lab) for lab in raw):
        raise TgirUserError(f"{where}['labels']: expected a list of integer labels, one per image")
    if len(raw) != n:
        raise TgirUserError(f"{where}['labels']: {len(raw)} labels for {n} images")
    return list(raw)


def load_css(root: str | Path, split: str, *, prefer_json: bool = True,
             image_dir: str = "images") -> RetrievalSplit:
    """Load one split of CSS / CSS-2D.

    Args:
        root: Directory with ``css_toy_dataset_novel2_small.dup.npy`` (or ``css2d.json``) and
            ``images/css_{split}_{idx:06d}.png``.
        split: ``"train"`` or ``"test"``.
        prefer_json: Read the JSON mirror written by ``tgir data css2d`` when present, avoiding
            unpickling; the ``.dup.npy`` pickle is read otherwise (only load files you trust).
        image_dir: Folder of the images under ``root``.

    Returns:
        The split. Every image is in the gallery; a query's label is its target image's scene label.
    """
    check_split(split, SPLITS, "css")
    root = require_dir(Path(root), "CSS dataset root", f"a folder holding {DUP_NAME} and images/")
    data, source = _read_dataset(root, prefer_json)
    if split not in data:
        raise TgirUserError(f"{source}: the CSS data has no split {split!r} (found: {', '.join(map(str, data))})")
    s = data[split]
    where = f"{source}[{split!r}]"
    if not isinstance(s, dict) or "objects_img" not in s or "mods" not in s:
        raise TgirUserError(f"{where}: expected an object with keys 'objects_img' and 'mods'")
    raw_labels = _check_split(s, where)
    n = len(s["objects_img"])
    index = LabelIndex()
    labels = [index(int(lab)) for lab in raw_labels]
    folder = require_dir(root / image_dir, "image folder", f"css_{split}_NNNNNN.png files")
    images = [ImageRecord(folder / f"css_{split}_{i:06d}.png", str(i), labels[i]) for i in range(n)]
    missing = [r.path for r in images if not r.path.is_file()]
    if missing:
        raise TgirUserError(f"{missing[0]}: image file not found ({len(missing)} of {n} {split} images missing)")
    queries = _queries(s["mods"], labels, n, where)
    return RetrievalSplit("css", split, images, queries, index.names,
                          extra={"objects": s["objects_img"]})
