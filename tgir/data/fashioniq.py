"""FashionIQ: relative captions over three garment categories (dress, shirt, toptee).

On disk (``root``):

- ``captions/cap.{cat}.{split}.json``: a list of ``{"candidate": ASIN, "target": ASIN,
  "captions": [c0, c1]}``; test entries may lack ``"target"``.
- ``image_splits/split.{cat}.{split}.json``: a list of ASINs (read only for the full-split gallery).
- Images: ``images/<ASIN>.jpg`` (the official layout) or ``img/<cat>/<ASIN>.jpg`` (AMC's layout).
  Both are looked up per image, ``images/`` first, so a root may mix them.

Each category is its own retrieval problem (the metric is per category, then averaged), so one call
loads one category; ``load_fashioniq_all`` loads several into a dict.
"""

from __future__ import annotations

import json
from pathlib import Path

from tgir.data.records import (
    ImageRecord,
    LabelIndex,
    Query,
    RetrievalSplit,
    check_split,
    read_json,
    require_dir,
    require_file,
)
from tgir.errors import TgirUserError, unknown_choice

SPLITS = ("train", "val", "test")
CATEGORIES = ("dress", "shirt", "toptee")
GALLERIES = ("val-triplets", "full-split")
JOINS = ("and", "and_token", "first", "second")


def join_captions(c0: str, c1: str, join: str) -> str:
    """Turn FashionIQ's two captions into one modification text.

    Args:
        c0: First caption, already stripped.
        c1: Second caption, already stripped.
        join: ``"and"`` -> ``"c0 and c1"`` (just the non-empty one when the other is empty);
            ``"and_token"`` -> AMC's ``"<BOS> c0 <AND> c1 <EOS>"`` (kept literally, as AMC does);
            ``"first"`` / ``"second"`` -> that caption alone.

    Returns:
        The joined text, or ``""`` when the captions it uses are empty (the caller reports that).
    """
    if join == "first":
        return c0
    if join == "second":
        return c1
    if not c0 and not c1:
        return ""
    if join == "and_token":
        return f"<BOS> {c0} <AND> {c1} <EOS>"
    return " and ".join(c for c in (c0, c1) if c)


def _parse_entry(entry: object, where: str, split: str, join: str) -> tuple[str, str | None, str]:
    """Validate one caption entry; return (candidate, target or None, joined text)."""
    needs_target = split != "test"  # only the test release may withhold targets
    keys = "'candidate', 'target' and 'captions'" if needs_target else "'candidate' and 'captions'"
    if not isinstance(entry, dict) or "candidate" not in entry or "captions" not in entry:
        raise TgirUserError(f"{where}: expected a dict with {keys}")
    if needs_target and "target" not in entry:
        raise TgirUserError(f"{where}: missing 'target' (expected a dict with {keys})")
    cand, target, caps = entry["candidate"], entry.get("target"), entry["captions"]
    if not isinstance(cand, str) or not cand:
        raise TgirUserError(f"{where}.candidate: expected a non-empty ASIN string, got {cand!r}")
    if target is not None and (not isinstance(target, str) or not target):
        raise TgirUserError(f"{where}.target: expected a non-empty ASIN string, got {target!r}")
    if not isinstance(caps, list) or len(caps) != 2 or not all(isinstance(c, str) for c in caps):
        raise TgirUserError(f"{where}.captions: expected a list of two strings, got {caps!r}")
    text = join_captions(caps[0].strip(), caps[1].strip(), join)
    if not text:
        used = "both captions are" if join in ("and", "and_token") else f"the {join} caption is"
        raise TgirUserError(f"{where}.captions: {used} empty (join={join!r})")
    return cand, target, text


def _image_paths(root: Path, cat: str, names: list[str], split: str) -> list[Path]:
    """Find each ASIN's file in ``images/`` or ``img/<cat>/`` (stat only, no decoding)."""
    folders = [d for d in (root / "images", root / "img" / cat) if d.is_dir()]
    if not folders:
        raise TgirUserError(f"{root}: no image folder found (expected images/<ASIN>.jpg or "
                            f"img/{cat}/<ASIN>.jpg)")
    paths, missing = [], []
    for name in names:
        found = next((p for p in (d / f"{name}.jpg" for d in folders) if p.is_file()), None)
        if found is None:
            missing.append(folders[0] / f"{name}.jpg")
        paths.append(found)
    if missing:
        looked = " and ".join(f"{d.relative_to(root)}/" for d in folders)
        raise TgirUserError(f"{missing[0]}: image file not found ({len(missing)} of {len(names)} {cat} "
                            f"{split} images missing; looked in {looked})")
    return paths


def _check_choices(split: str, category: str, gallery: str, join: str) -> None:
    check_split(split, SPLITS, "fashioniq")
    if category not in CATEGORIES:
        err = unknown_choice("FashionIQ category", category, CATEGORIES)
        raise TgirUserError(f"{err} (load_fashioniq_all loads several categories)")
    if gallery not in GALLERIES:
        raise unknown_choice("FashionIQ gallery", gallery, GALLERIES)
    if join not in JOINS:
        raise unknown_choice("FashionIQ caption join", join, JOINS)


def _gallery_names(root: Path, category: str, split: str, gallery: str, parsed: list) -> dict[str, bool]:
    """ASIN -> in the gallery, in order: the split's list (``full-split``), then what the captions add
    (dict keys keep insertion order)."""
    names: dict[str, bool] = {}
    if gallery == "full-split":
        split_path = root / "image_splits" / f"split.{category}.{split}.json"
        for i, asin in enumerate(read_json(split_path, "a list of ASIN strings", list)):
            if not isinstance(asin, str) or not asin:
                raise TgirUserError(f"{split_path}[{i}]: expected a non-empty ASIN string, got {asin!r}")
            names.setdefault(asin, True)
    for cand, target, _ in parsed:
        for asin in (cand, target):
            if asin is not None:
                names.setdefault(asin, gallery == "val-triplets")
    return names


def load_fashioniq(root: str | Path, split: str, *, category: str = "dress",
                   gallery: str = "val-triplets", join: str = "and") -> RetrievalSplit:
    """Load one category of one FashionIQ split.

    Args:
        root: Folder holding ``captions/``, ``image_splits/`` and ``images/`` (or ``img/<cat>/``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        category: ``"dress"``, ``"shirt"`` or ``"toptee"`` (use ``load_fashioniq_all`` for all three).
        gallery: ``"val-triplets"``: the candidates and targets of the split's captions, in order of
            first appearance (AMC, VAL, CoSMo). ``"full-split"``: every ASIN of
            ``split.{cat}.{split}.json`` (CLIP4Cir, BLIP family); captioned images outside that list
            are added with ``in_gallery=False``.
        join: How the two captions become one text; see ``join_captions``.

    Returns:
        The split. Labels are ASIN identities within the category (``label_names`` are ASINs);
        ``Query.op`` is the category; a test query without a target has ``target = label = -1``.
        ``extra`` holds ``category``, ``gallery_mode``, ``join`` and ``outside_gallery`` (how many
        captioned images are not in the gallery).

    Raises:
        TgirUserError: Unknown split/category/gallery/join, a missing or malformed file, an empty
            caption, or a missing image; the message names the path and the entry.
    """
    _check_choices(split, category, gallery, join)
    root = require_dir(Path(root), "FashionIQ dataset root", "a folder holding captions/ and image_splits/")
    cap_path = root / "captions" / f"cap.{category}.{split}.json"
    entries = read_json(cap_path, "a list of {candidate, target, captions} entries", list)
    parsed = [_parse_entry(e, f"{cap_path}[{i}]", split, join) for i, e in enumerate(entries)]
    names = _gallery_names(root, category, split, gallery, parsed)
    order = list(names)
    paths = _image_paths(root, category, order, split)
    labels = LabelIndex()
    images = [ImageRecord(p, n, labels(n), names[n]) for p, n in zip(paths, order, strict=True)]
    index = {n: i for i, n in enumerate(order)}
    queries = []
    for cand, target, text in parsed:
        t = -1 if target is None else index[target]
        queries.append(Query(ref=index[cand], text=text, target=t,
                             label=-1 if t < 0 else images[t].label, op=category))
    extra = {"category": category, "gallery_mode": gallery, "join": join,
             "outside_gallery": sum(not v for v in names.values())}
    return RetrievalSplit("fashioniq", split, images, queries, labels.names, extra=extra)


def load_fashioniq_all(root: str | Path, split: str, *, categories: tuple[str, ...] = CATEGORIES,
                       **options) -> dict[str, RetrievalSplit]:
    """Load several FashionIQ categories, each as its own split (galleries never mix).

    Args:
        root: As for ``load_fashioniq``.
        split: As for ``load_fashioniq``.
        categories: Which categories, in order.
        **options: ``gallery`` and ``join``, passed to ``load_fashioniq``.

    Returns:
        ``{category: RetrievalSplit}`` in the order of ``categories``.
    """
    if isinstance(categories, str):  # a lone name would otherwise iterate by character
        categories = (categories,)
    return {cat: load_fashioniq(root, split, category=cat, **options) for cat in categories}
