"""CSS loader: counts, pairing, both file formats, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tgir.data.css import load_css
from tgir.data.images import Preprocess
from tgir.data.registry import load_split
from tgir.data.torch_datasets import GalleryDataset, QueryDataset, TripletDataset
from tgir.errors import TgirUserError


@pytest.fixture
def css_copy(tiny_css2d, tmp_path):
    root = tmp_path / "css"
    shutil.copytree(tiny_css2d, root)
    return root


@pytest.mark.parametrize("prefer_json", [True, False])
def test_counts_and_pairs(tiny_css2d, prefer_json):
    split = load_css(tiny_css2d, "test", prefer_json=prefer_json)
    raw = json.loads((tiny_css2d / "css2d.json").read_text())["test"]
    assert len(split.images) == 190 and len(split.queries) == 180
    assert len(split.gallery) == 190
    assert {q.op for q in split.queries} == {"add", "remove", "make"}
    first = raw["mods"][0]
    q = split.queries[0]
    assert (q.ref, q.target, q.text) == (first["from"][0], first["to"][0], first["to_str"])
    # Labels are dense ids that keep CSS's equalities.
    raw_labels = np.array(raw["labels"])
    ours = np.array([r.label for r in split.images])
    assert ((raw_labels[:, None] == raw_labels[None]) == (ours[:, None] == ours[None])).all()
    assert all(q.label == split.images[q.target].label for q in split.queries)


def test_torch_views(tiny_css2d):
    split = load_split("css2d", tiny_css2d, "train")
    pre = Preprocess(size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    ref, text, target = QueryDataset(split, pre)[3]
    assert tuple(ref.shape) == (3, 64, 64) and text == split.queries[3].text
    assert target == split.queries[3].target
    img, idx = GalleryDataset(split, pre)[5]
    assert idx == 5 and float(img.max()) == pytest.approx(1.0)  # white background -> (1 - .5) / .5
    ref, _, tgt = TripletDataset(split, pre)[0]
    assert tgt.shape == ref.shape


def test_unknown_split(tiny_css2d):
    with pytest.raises(TgirUserError, match="unknown split 'val'.*train, test"):
        load_css(tiny_css2d, "val")


def test_missing_root(tmp_path):
    with pytest.raises(TgirUserError, match="CSS dataset root not found"):
        load_css(tmp_path / "nowhere", "test")


def test_wrong_layout(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(TgirUserError, match=r"css_toy_dataset_novel2_small\.dup\.npy: file not found"):
        load_css(tmp_path, "test")


def test_missing_image(css_copy):
    (css_copy / "images" / "css_test_000004.png").unlink()
    with pytest.raises(TgirUserError, match=r"css_test_000004\.png: image file not found \(1 of 190"):
        load_css(css_copy, "test")


def test_empty_caption(css_copy):
    data = json.loads((css_copy / "css2d.json").read_text())
    data["test"]["mods"][2]["to_str"] = "  "
    (css_copy / "css2d.json").write_text(json.dumps(data))
    with pytest.raises(TgirUserError, match=r"mods\[2\]\.to_str: empty modification text"):
        load_css(css_copy, "test")


def test_corrupt_data_file(css_copy):
    (css_copy / "css_toy_dataset_novel2_small.dup.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(TgirUserError, match="cannot read the CSS data file"):
        load_css(css_copy, "test", prefer_json=False)
    (css_copy / "css2d.json").write_text("{not json")
    with pytest.raises(TgirUserError, match="not valid JSON"):
        load_css(css_copy, "test")


def test_corrupt_png_named_on_decode(css_copy):
    path = css_copy / "images" / "css_test_000001.png"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    split = load_css(css_copy, "test")
    with pytest.raises(TgirUserError, match=r"css_test_000001\.png: cannot decode image"):
        GalleryDataset(split, Preprocess(size=64))[1]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("mods", 5, r"css2d\.json\['test'\]\['mods'\]: expected a list of modifications, got int"),
    ("labels", None, r"css2d\.json\['test'\]\['labels'\]: expected a list of integer labels"),
    ("labels", "abc", r"css2d\.json\['test'\]\['labels'\]: expected a list of integer labels"),
    ("objects_img", 3, r"css2d\.json\['test'\]\['objects_img'\]: expected a list of scenes"),
])
def test_wrong_types_name_the_json_file(css_copy, key, value, message):
    data = json.loads((css_copy / "css2d.json").read_text())
    data["test"][key] = value
    (css_copy / "css2d.json").write_text(json.dumps(data))
    with pytest.raises(TgirUserError, match=message):
        load_css(css_copy, "test")
    load_css(css_copy, "test", prefer_json=False)  # the pickle was not touched


def test_wrong_types_name_the_pickle_when_it_was_read(css_copy):
    dup = css_copy / "css_toy_dataset_novel2_small.dup.npy"
    data = np.load(dup, allow_pickle=True).item()
    data["test"]["mods"][0]["from"] = ["zero"]
    np.save(dup, np.array(data, dtype=object), allow_pickle=True)
    with pytest.raises(TgirUserError, match=r"\.dup\.npy\['test'\]: mods\[0\]: image id out of range"):
        load_css(css_copy, "test", prefer_json=False)
    data["test"] = [1, 2]
    np.save(dup, np.array(data, dtype=object), allow_pickle=True)
    with pytest.raises(TgirUserError, match=r"\.dup\.npy\['test'\]: expected an object"):
        load_css(css_copy, "test", prefer_json=False)
