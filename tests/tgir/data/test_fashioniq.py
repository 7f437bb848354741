"""FashionIQ loader on tiny fixtures written in the real on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tgir.data.fashioniq import join_captions, load_fashioniq, load_fashioniq_all
from tgir.data.registry import load_split
from tgir.errors import TgirUserError

# val dress: A->B, C->A, B->D; split list also holds E and F, which no caption uses
VAL_CAPTIONS = [
    {"candidate": "A", "target": "B", "captions": ["is red", "is longer"]},
    {"candidate": "C", "target": "A", "captions": ["  has sleeves ", "is blue"]},
    {"candidate": "B", "target": "D", "captions": ["is shorter", "is green"]},
]
VAL_SPLIT = ["A", "B", "C", "D", "E", "F"]


def _jpeg(path: Path, shade: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (shade, 50, 200)).save(path, "JPEG")


def make_fiq(root: Path, *, cat: str = "dress", split: str = "val", captions: list | None = None,
             split_list: list | None = None, layout: str = "images") -> Path:
    """Write captions, the split list and one JPEG per ASIN mentioned, in ``layout``."""
    captions = VAL_CAPTIONS if captions is None else captions
    split_list = VAL_SPLIT if split_list is None else split_list
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "image_splits").mkdir(parents=True, exist_ok=True)
    (root / "captions" / f"cap.{cat}.{split}.json").write_text(json.dumps(captions))
    (root / "image_splits" / f"split.{cat}.{split}.json").write_text(json.dumps(split_list))
    asins = set(split_list) | {e[k] for e in captions if isinstance(e, dict) for k in ("candidate", "target")
                              if isinstance(e.get(k), str)}
    folder = root / "images" if layout == "images" else root / "img" / cat
    for i, asin in enumerate(sorted(asins)):
        _jpeg(folder / f"{asin}.jpg", shade=10 * i)
    return root


def names(split) -> list[str]:
    return [r.name for r in split.images]


@pytest.mark.parametrize("layout", ["images", "img"])
def test_val_triplets_gallery_and_queries(tmp_path, layout):
    root = make_fiq(tmp_path, layout=layout)
    s = load_fashioniq(root, "val")
    assert names(s) == ["A", "B", "C", "D"]  # order of first appearance, E and F unused
    assert s.gallery.tolist() == [0, 1, 2, 3]
    assert [(q.ref, q.target, q.label) for q in s.queries] == [(0, 1, 1), (2, 0, 0), (1, 3, 3)]
    assert [q.text for q in s.queries] == ["is red and is longer", "has sleeves and is blue",
                                          "is shorter and is green"]
    assert {q.op for q in s.queries} == {"dress"}
    assert s.label_names == ["A", "B", "C", "D"]
    sub = "images" if layout == "images" else "img/dress"
    assert s.images[2].path == root / sub / "C.jpg"
    assert s.extra == {"category": "dress", "gallery_mode": "val-triplets", "join": "and",
                       "outside_gallery": 0}
    assert s.summary()["queries_per_op"] == {"dress": 3}


def test_mixed_layouts_per_image(tmp_path):
    root = make_fiq(tmp_path)
    (root / "img" / "dress").mkdir(parents=True)
    (root / "images" / "C.jpg").rename(root / "img" / "dress" / "C.jpg")
    s = load_fashioniq(root, "val")
    assert s.images[2].path == root / "img" / "dress" / "C.jpg"
    assert s.images[0].path == root / "images" / "A.jpg"


def test_full_split_gallery_adds_outside_refs(tmp_path):
    caps = [*VAL_CAPTIONS, {"candidate": "G", "target": "A", "captions": ["x", "y"]}]
    root = make_fiq(tmp_path, captions=caps)
    s = load_fashioniq(root, "val", gallery="full-split")
    assert names(s) == ["A", "B", "C", "D", "E", "F", "G"]
    assert [r.in_gallery for r in s.images] == [True] * 6 + [False]
    assert s.gallery.tolist() == [0, 1, 2, 3, 4, 5]
    assert [(q.ref, q.target) for q in s.queries] == [(0, 1), (2, 0), (1, 3), (6, 0)]
    assert s.extra["outside_gallery"] == 1
    assert s.extra["gallery_mode"] == "full-split"


@pytest.mark.parametrize(("join", "expected"), [
    ("and", "has sleeves and is blue"),
    ("and_token", "<BOS> has sleeves <AND> is blue <EOS>"),
    ("first", "has sleeves"),
    ("second", "is blue"),
])
def test_join_modes(tmp_path, join, expected):
    s = load_fashioniq(make_fiq(tmp_path), "val", join=join)
    assert s.queries[1].text == expected
    assert s.extra["join"] == join


def test_join_with_one_empty_caption():
    assert join_captions("", "is blue", "and") == "is blue"
    assert join_captions("is red", "", "and") == "is red"
    assert join_captions("", "is blue", "and_token") == "<BOS>  <AND> is blue <EOS>"  # AMC, literally
    assert join_captions("", "is blue", "first") == ""
    assert join_captions("", "", "and_token") == ""


def test_test_split_without_targets(tmp_path):
    caps = [{"candidate": "A", "captions": ["a", "b"]},
            {"candidate": "B", "target": "C", "captions": ["c", "d"]}]
    root = make_fiq(tmp_path, split="test", captions=caps, split_list=["A", "B", "C"])
    s = load_fashioniq(root, "test")
    assert names(s) == ["A", "B", "C"]
    assert [(q.ref, q.target, q.label) for q in s.queries] == [(0, -1, -1), (1, 2, 2)]
    assert s.query_labels().tolist() == [-1, 2]


def test_load_all_keeps_categories_apart(tmp_path):
    make_fiq(tmp_path, cat="dress")
    make_fiq(tmp_path, cat="shirt", captions=[{"candidate": "S1", "target": "S2", "captions": ["a", "b"]}],
             split_list=["S1", "S2", "S3"], layout="img")
    out = load_fashioniq_all(tmp_path, "val", categories=("dress", "shirt"), gallery="full-split")
    assert list(out) == ["dress", "shirt"]
    assert len(out["dress"].gallery) == 6
    assert names(out["shirt"]) == ["S1", "S2", "S3"]
    assert [q.op for q in out["shirt"].queries] == ["shirt"]
    assert out["shirt"].extra["category"] == "shirt"


def test_registry_load_split(tmp_path):
    s = load_split("fashioniq", make_fiq(tmp_path, cat="toptee"), "val", category="toptee",
                   join="and_token")
    assert s.dataset == "fashioniq" and s.split == "val"
    assert len(s.queries) == 3 and len(s.gallery) == 4
    assert s.queries[0].text == "<BOS> is red <AND> is longer <EOS>"


# ---- errors -------------------------------------------------------------------------------------

def _err(fn, *args, **kw) -> str:
    with pytest.raises(TgirUserError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_root(tmp_path):
    msg = _err(load_fashioniq, tmp_path / "nope", "val")
    assert str(tmp_path / "nope") in msg and "FashionIQ dataset root not found" in msg


def test_missing_captions_file(tmp_path):
    make_fiq(tmp_path)
    msg = _err(load_fashioniq, tmp_path, "train")
    assert str(tmp_path / "captions" / "cap.dress.train.json") in msg and "file not found" in msg


def test_no_image_folder(tmp_path):
    root = make_fiq(tmp_path, layout="img", cat="shirt", split_list=["A", "B", "C", "D"])
    assert len(load_fashioniq(root, "val", category="shirt").images) == 4
    (root / "captions" / "cap.shirt.val.json").rename(root / "captions" / "cap.dress.val.json")
    msg = _err(load_fashioniq, root, "val", category="dress")  # img/shirt/ is no use for dresses
    assert msg == (f"{root}: no image folder found (expected images/<ASIN>.jpg or "
                   "img/dress/<ASIN>.jpg)")


def test_missing_image_counted(tmp_path):
    root = make_fiq(tmp_path)
    (root / "images" / "B.jpg").unlink()
    (root / "images" / "D.jpg").unlink()
    msg = _err(load_fashioniq, root, "val")
    assert msg.startswith(f"{root / 'images' / 'B.jpg'}: image file not found")
    assert "2 of 4 dress val images missing" in msg


def test_corrupt_json(tmp_path):
    root = make_fiq(tmp_path)
    (root / "captions" / "cap.dress.val.json").write_text('[{"candidate": "A",')
    msg = _err(load_fashioniq, root, "val")
    assert "cap.dress.val.json: not valid JSON" in msg


def test_json_not_a_list(tmp_path):
    root = make_fiq(tmp_path)
    (root / "captions" / "cap.dress.val.json").write_text('{"candidate": "A"}')
    assert "expected a JSON list" in _err(load_fashioniq, root, "val")


def test_entry_missing_target_outside_test(tmp_path):
    caps = [VAL_CAPTIONS[0], {"candidate": "C", "captions": ["a", "b"]}]
    root = make_fiq(tmp_path, captions=caps)
    msg = _err(load_fashioniq, root, "val")
    assert "cap.dress.val.json[1]: missing 'target'" in msg


@pytest.mark.parametrize("bad", [{"target": "A", "captions": ["a", "b"]}, "A", {"candidate": "A"}])
def test_entry_missing_keys(tmp_path, bad):
    root = make_fiq(tmp_path, captions=[VAL_CAPTIONS[0], VAL_CAPTIONS[1], bad])
    msg = _err(load_fashioniq, root, "val")
    assert "cap.dress.val.json[2]: expected a dict with 'candidate', 'target' and 'captions'" in msg


@pytest.mark.parametrize("caps", [["only one"], "a and b", ["a", 3]])
def test_captions_not_two_strings(tmp_path, caps):
    root = make_fiq(tmp_path, captions=[{"candidate": "A", "target": "B", "captions": caps}])
    assert "[0].captions: expected a list of two strings" in _err(load_fashioniq, root, "val")


def test_bad_asin(tmp_path):
    root = make_fiq(tmp_path, captions=[{"candidate": "A", "target": 7, "captions": ["a", "b"]}])
    assert "[0].target: expected a non-empty ASIN string, got 7" in _err(load_fashioniq, root, "val")


def test_empty_captions(tmp_path):
    caps = [VAL_CAPTIONS[0], {"candidate": "C", "target": "A", "captions": ["  ", ""]}]
    root = make_fiq(tmp_path, captions=caps)
    msg = _err(load_fashioniq, root, "val")
    assert "cap.dress.val.json[1].captions: both captions are empty" in msg
    caps[1]["captions"] = ["", "is blue"]
    (root / "captions" / "cap.dress.val.json").write_text(json.dumps(caps))
    assert load_fashioniq(root, "val").queries[1].text == "is blue"
    msg = _err(load_fashioniq, root, "val", join="first")
    assert "[1].captions: the first caption is empty (join='first')" in msg


def test_full_split_file_problems(tmp_path):
    root = make_fiq(tmp_path)
    (root / "image_splits" / "split.dress.val.json").write_text('["A", null]')
    msg = _err(load_fashioniq, root, "val", gallery="full-split")
    assert "split.dress.val.json[1]: expected a non-empty ASIN string, got None" in msg
    (root / "image_splits" / "split.dress.val.json").unlink()
    msg = _err(load_fashioniq, root, "val", gallery="full-split")
    assert "split.dress.val.json: file not found" in msg
    assert len(load_fashioniq(root, "val").gallery) == 4  # val-triplets never reads the split list


@pytest.mark.parametrize(("kw", "expected"), [
    ({"split": "dev"}, "unknown split 'dev' for fashioniq; valid choices: train, val, test"),
    ({"category": "all"}, "unknown FashionIQ category 'all'; valid choices: 'dress', 'shirt', 'toptee'"),
    ({"gallery": "all"}, "unknown FashionIQ gallery 'all'; valid choices: 'val-triplets', 'full-split'"),
    ({"join": "or"}, "valid choices: 'and', 'and_token', 'first', 'second'"),
])
def test_unknown_choices(tmp_path, kw, expected):
    root = make_fiq(tmp_path)
    split = kw.pop("split", "val")
    assert expected in _err(load_fashioniq, root, split, **kw)
