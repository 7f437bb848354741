"""Shoes (Berg et al. attribute data with Guo et al.'s relative captions).

On disk (``root``):

- ``relative_captions_shoes.json``: a list of ``{"ImageName": target, "ReferenceImageName": ref,
  "RelativeCaption": text}``.
- ``train_im_names.txt``, ``eval_im_names.txt``: image basenames, one per line.
- Images: ``attributedata/womens_*/<n>/img_womens_*.jpg``, found by a recursive search and looked up
  by basename (so basenames must be unique).
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
from tgir.errors import TgirUserError

SPLITS = ("train", "test")
CAPTIONS_NAME = "relative_captions_shoes.json"
LIST_NAMES = {"train": "train_im_names.txt", "test": "eval_im_names.txt"}
_KEYS = ("ImageName", "ReferenceImageName", "RelativeCaption")


def _read_captions(path: Path) -> list[tuple[str, str, str]]:
    """Parse the caption file into (reference, target, stripped caption) triples, in file order."""
    data = read_json(path, "caption entries {ImageName, ReferenceImageName, RelativeCaption}", list)
    out = []
    for i, e in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in _KEYS):
            raise TgirUserError(f"{where}: expected a dict with string fields {', '.join(_KEYS)}")
        if not e["ImageName"] or not e["ReferenceImageName"]:
            raise TgirUserError(f"{where}: empty ImageName or ReferenceImageName")
        text = e["RelativeCaption"].strip()
        if not text:
            raise TgirUserError(f"{where}.RelativeCaption: empty caption")
        out.append((e["ReferenceImageName"], e["ImageName"], text))
    return out


def _read_names(path: Path) -> list[str]:
    """Read a split list: one basename per line; blank lines (a trailing newline) are skipped."""
    require_file(path, "image basenames, one per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise TgirUserError(f"{path}: not a UTF-8 text file ({err})") from None
    return [s for s in (line.strip() for line in lines) if s]


def _find_images(root: Path) -> dict[str, Path]:
    """Map every ``attributedata/womens_*/**/*.jpg`` basename to its path."""
    base = require_dir(root / "attributedata", "Shoes image folder", "attributedata/womens_*/<n>/*.jpg")
    found: dict[str, Path] = {}
    for folder in sorted(d for d in base.glob("womens_*") if d.is_dir()):
        for p in sorted(folder.rglob("*.jpg")):
            if p.name in found:
                raise TgirUserError(f"{p}: duplicate image basename (also {found[p.name]}); "
                                    "Shoes looks images up by basename, so each must be unique")
            found[p.name] = p
    if not found:
        raise TgirUserError(f"{base}: no images found (expected attributedata/womens_*/<n>/img_womens_*.jpg)")
    return found


def shoes_pairs(captions: list[tuple[str, str, str]], names: list[str],
                amc_duplicates: bool = False) -> list[int]:
    """Choose which captions become queries of a split, following AMC's ``get_relative_pairs``.

    AMC walks the split list in order and, for each name, emits every caption (in file order) whose
    target or reference is that name, always as reference -> target. So a caption is kept when
    either of its images is in the list, and is emitted twice when both are (once per listed name;
    more if a name is listed twice). ``amc_duplicates=True`` reproduces that list exactly; the
    default keeps each caption once, at its first position in AMC's order.

    Args:
        captions: (reference, target, text) triples, in file order.
        names: The split list, in file order.
        amc_duplicates: Reproduce AMC's repeated pairs.

    Returns:
        Indices into ``captions``, one per query, in AMC's order.
    """
    by_name: dict[str, list[int]] = {}
    for k, (ref, target, _) in enumerate(captions):
        by_name.setdefault(target, []).append(k)
        if ref != target:  # AMC's "target == name or reference == name" matches such a caption once
            by_name.setdefault(ref, []).append(k)
    out: list[int] = []
    seen: set[int] = set()
    for name in names:
        for k in by_name.get(name, ()):
            if amc_duplicates or k not in seen:
                seen.add(k)
                out.append(k)
    return out


def load_shoes(root: str | Path, split: str, *, amc_duplicates: bool = False) -> RetrievalSplit:
    """Load one Shoes split.

    Pairing rule (AMC's, see ``shoes_pairs``): a caption is a query of the split when its target or
    its reference is in the split list (``train_im_names.txt`` / ``eval_im_names.txt``); queries
    come in split-list order, then caption-file order. AMC emits a caption twice when both images
    are listed; ``amc_duplicates=True`` reproduces that, the default keeps each caption once.

    Args:
        root: Folder holding ``relative_captions_shoes.json``, the two name lists and
            ``attributedata/``.
        split: ``"train"`` or ``"test"`` (``eval_im_names.txt``).
        amc_duplicates: Repeat pairs as AMC's public code does (inflates the test query count).

    Returns:
        The split. The gallery is every image of the split list, in list order; references (and, as
        in AMC, targets) outside the list are appended with ``in_gallery=False`` and can never be
        retrieved. Labels are basename identities (``label_names`` are basenames). ``extra`` holds
        ``amc_duplicates``, ``repeated_queries`` (pairs beyond the first copy) and
        ``targets_outside_gallery``.

    Raises:
        TgirUserError: Unknown split, a missing or malformed file, an empty caption, or an image
            named in the list or a used caption that is not under ``attributedata/womens_*/``.
    """
    check_split(split, SPLITS, "shoes")
    root = require_dir(Path(root), "Shoes dataset root",
                       f"a folder holding {CAPTIONS_NAME} and attributedata/")
    cap_path, list_path = root / CAPTIONS_NAME, root / LIST_NAMES[split]
    captions = _read_captions(cap_path)
    listed = _read_names(list_path)
    chosen = shoes_pairs(captions, listed, amc_duplicates)
    files = _find_images(root)

    in_gallery = dict.fromkeys(listed, True)  # dedupes, keeps list order
    for k in chosen:
        for name in captions[k][:2]:
            in_gallery.setdefault(name, False)
    missing = [n for n in in_gallery if n not in files]
    if missing:
        where = list_path if in_gallery[missing[0]] else cap_path
        raise TgirUserError(f"{where}: image {missing[0]!r} not found under "
                            f"{root / 'attributedata'}/womens_*/ "
                            f"({len(missing)} of {len(in_gallery)} {split} images missing)")

    labels = LabelIndex()
    order = list(in_gallery)
    images = [ImageRecord(files[n], n, labels(n), in_gallery[n]) for n in order]
    index = {n: i for i, n in enumerate(order)}
    queries = []
    for k in chosen:
        ref, target, text = captions[k]
        t = index[target]
        queries.append(Query(ref=index[ref], text=text, target=t, label=images[t].label))
    extra = {"amc_duplicates": amc_duplicates, "repeated_queries": len(chosen) - len(set(chosen)),
             "targets_outside_gallery": sum(not images[q.target].in_gallery for q in queries)}
    return RetrievalSplit("shoes", split, images, queries, labels.names, extra=extra)
