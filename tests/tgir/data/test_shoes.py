"""Shoes loader on tiny fixtures written in the real on-disk format.

Fixture (hand-counted below): train list t1 t2 t3, eval list e1 e2 e3 e4, captions
  0: e1 -> e2   (both eval: AMC emits it twice)
  1: t1 -> e3   (reference train, target eval: once in each split)
  2: t1 -> t2   (both train: twice in AMC's train list)
  3: e4 -> e1   (both eval: twice)
  4: e4 -> t3   (reference eval, target train: once in each split)
  5: x1 -> x2   (in neither list: never used)
AMC's walk over the eval list: e1 -> [0, 3], e2 -> [0], e3 -> [1], e4 -> [3, 4]  => 0 3 0 1 3 4.
Over the train list: t1 -> [1, 2], t2 -> [2], t3 -> [4]  => 1 2 2 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tgir.data.registry import load_split
from tgir.data.shoes import load_shoes, shoes_pairs
from tgir.errors import TgirUserError

TRAIN = ["t1", "t2", "t3"]
EVAL = ["e1", "e2", "e3", "e4"]
# (reference, target, caption), as short names; files are img_womens_<kind>_<name>.jpg
CAPTIONS = [("e1", "e2", "is taller"), ("t1", "e3", "has laces"), ("t1", "t2", "is black"),
            ("e4", "e1", "  is red  "), ("e4", "t3", "is shiny"), ("x1", "x2", "is flat")]
FOLDERS = {"womens_pumps": ["e1", "e2", "t1", "x1"], "womens_boots": ["e3", "e4", "t2", "t3", "x2", "x3"]}


def fname(short: str) -> str:
    kind = next(k for k, v in FOLDERS.items() if short in v).split("_")[1]
    return f"img_womens_{kind}_{short}.jpg"


def make_shoes(root: Path, captions: list | None = None) -> Path:
    """Write the caption JSON, both name lists and the JPEGs under attributedata/womens_*/<n>/."""
    root.mkdir(parents=True, exist_ok=True)
    for folder, shorts in FOLDERS.items():
        for i, short in enumerate(shorts):
            path = root / "attributedata" / folder / str(i % 2) / fname(short)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (20 * i, 80, 160)).save(path, "JPEG")
    if captions is None:
        captions = [{"ImageName": fname(t), "ReferenceImageName": fname(r), "RelativeCaption": c}
                    for r, t, c in CAPTIONS]
    (root / "relative_captions_shoes.json").write_text(json.dumps(captions))
    (root / "train_im_names.txt").write_text("".join(f"{fname(n)}\n" for n in TRAIN))
    (root / "eval_im_names.txt").write_text("".join(f"{fname(n)}\r\n" for n in EVAL) + "\n")
    return root


def shorts(split) -> list[str]:
    return [r.name.rsplit("_", 1)[1].removesuffix(".jpg") for r in split.images]


def test_pairs_rule_matches_amc_walk():
    caps = [(r, t, c) for r, t, c in CAPTIONS]
    assert shoes_pairs(caps, EVAL, amc_duplicates=True) == [0, 3, 0, 1, 3, 4]
    assert shoes_pairs(caps, EVAL) == [0, 3, 1, 4]
    assert shoes_pairs(caps, TRAIN, amc_duplicates=True) == [1, 2, 2, 4]
    assert shoes_pairs(caps, TRAIN) == [1, 2, 4]
    # a name listed twice is walked twice by AMC; a self-pair matches once per listed name
    assert shoes_pairs([("a", "a", "same")], ["a", "a"], amc_duplicates=True) == [0, 0]
    assert shoes_pairs([("a", "a", "same")], ["a", "a"]) == [0]


def test_test_split_default(tmp_path):
    s = load_shoes(make_shoes(tmp_path), "test")
    assert shorts(s) == ["e1", "e2", "e3", "e4", "t1", "t3"]
    assert [r.in_gallery for r in s.images] == [True] * 4 + [False] * 2
    assert s.gallery.tolist() == [0, 1, 2, 3]
    assert [(q.ref, q.target, q.label, q.text) for q in s.queries] == [
        (0, 1, 1, "is taller"), (3, 0, 0, "is red"), (4, 2, 2, "has laces"), (3, 5, 5, "is shiny")]
    assert s.label_names == [r.name for r in s.images]
    assert s.images[0].path == tmp_path / "attributedata" / "womens_pumps" / "0" / "img_womens_pumps_e1.jpg"
    assert s.extra == {"amc_duplicates": False, "repeated_queries": 0, "targets_outside_gallery": 1}


def test_test_split_amc_duplicates(tmp_path):
    s = load_shoes(make_shoes(tmp_path), "test", amc_duplicates=True)
    assert [q.text for q in s.queries] == ["is taller", "is red", "is taller", "has laces", "is red",
                                           "is shiny"]
    assert len(s.gallery) == 4 and len(s.images) == 6
    assert s.extra["repeated_queries"] == 2


def test_train_split_both_flags(tmp_path):
    root = make_shoes(tmp_path)
    s = load_shoes(root, "train")
    assert shorts(s) == ["t1", "t2", "t3", "e3", "e4"]
    assert [(q.ref, q.target) for q in s.queries] == [(0, 3), (0, 1), (4, 2)]
    assert s.extra["targets_outside_gallery"] == 1
    assert len(load_shoes(root, "train", amc_duplicates=True).queries) == 4


def test_registry_load_split(tmp_path):
    s = load_split("shoes", make_shoes(tmp_path), "test", amc_duplicates=True)
    assert (s.dataset, s.split, len(s.queries), len(s.gallery)) == ("shoes", "test", 6, 4)


# ---- errors -------------------------------------------------------------------------------------

def _err(fn, *args, **kw) -> str:
    with pytest.raises(TgirUserError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_root(tmp_path):
    msg = _err(load_shoes, tmp_path / "nope", "test")
    assert msg.startswith(f"{tmp_path / 'nope'}: Shoes dataset root not found")


def test_unknown_split(tmp_path):
    msg = _err(load_shoes, make_shoes(tmp_path), "val")
    assert msg == "unknown split 'val' for shoes; valid choices: train, test"


@pytest.mark.parametrize("name", ["relative_captions_shoes.json", "eval_im_names.txt"])
def test_missing_files(tmp_path, name):
    root = make_shoes(tmp_path)
    (root / name).unlink()
    assert _err(load_shoes, root, "test").startswith(f"{root / name}: file not found")


def test_corrupt_json(tmp_path):
    root = make_shoes(tmp_path)
    (root / "relative_captions_shoes.json").write_text('[{"ImageName": ')
    assert "relative_captions_shoes.json: not valid JSON" in _err(load_shoes, root, "test")
    (root / "relative_captions_shoes.json").write_text('{"ImageName": "a"}')
    assert "expected a JSON list (caption entries {ImageName, ReferenceImageName, RelativeCaption}), got dict" \
        in _err(load_shoes, root, "test")


def test_entry_missing_key(tmp_path):
    caps = [{"ImageName": fname("e2"), "ReferenceImageName": fname("e1"), "RelativeCaption": "x"},
            {"ImageName": fname("e2"), "RelativeCaption": "y"}]
    msg = _err(load_shoes, make_shoes(tmp_path, caps), "test")
    assert "relative_captions_shoes.json[1]: expected a dict with string fields ImageName, " in msg


def test_empty_caption(tmp_path):
    caps = [{"ImageName": fname("e2"), "ReferenceImageName": fname("e1"), "RelativeCaption": "  "}]
    msg = _err(load_shoes, make_shoes(tmp_path, caps), "test")
    assert msg == f"{tmp_path / 'relative_captions_shoes.json'}[0].RelativeCaption: empty caption"


def test_wrong_layout(tmp_path):
    root = make_shoes(tmp_path)
    (root / "attributedata").rename(root / "images")
    assert "Shoes image folder not found" in _err(load_shoes, root, "test")
    (root / "attributedata").mkdir()
    (root / "images" / "womens_pumps").rename(root / "attributedata" / "pumps")  # no womens_ prefix
    assert "no images found (expected attributedata/womens_*/" in _err(load_shoes, root, "test")


def test_duplicate_basename(tmp_path):
    root = make_shoes(tmp_path)
    dup = root / "attributedata" / "womens_boots" / "7" / fname("e1")
    dup.parent.mkdir()
    (root / "attributedata" / "womens_pumps" / "0" / fname("e1")).rename(dup)
    (root / "attributedata" / "womens_pumps" / "1").mkdir(exist_ok=True)
    Image.new("RGB", (4, 4)).save(root / "attributedata" / "womens_pumps" / "1" / fname("e1"), "JPEG")
    assert "duplicate image basename" in _err(load_shoes, root, "test")


def test_missing_images(tmp_path):
    root = make_shoes(tmp_path)
    (root / "attributedata" / "womens_boots" / "1" / fname("e4")).unlink()
    msg = _err(load_shoes, root, "test")
    assert msg.startswith(f"{root / 'eval_im_names.txt'}: image 'img_womens_boots_e4.jpg' not found")
    assert "(1 of 6 test images missing)" in msg
    make_shoes(root)
    (root / "attributedata" / "womens_boots" / "1" / fname("t3")).unlink()  # target of caption 4
    msg = _err(load_shoes, root, "test")
    assert msg.startswith(f"{root / 'relative_captions_shoes.json'}: image 'img_womens_boots_t3.jpg'")
