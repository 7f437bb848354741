"""CSS-2D generator: determinism, counts, and that every text is true of its pair."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tgir.data.css2d import Css2dConfig, Obj, generate_split, parse_text, write_css2d
from tgir.data.css2d.render import render_scene
from tgir.data.css2d.scene import make_scene, scene_key
from tgir.errors import TgirUserError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_across_processes(tmp_path):
    cfg = Css2dConfig(seed=3, scale=0.02)
    write_css2d(cfg, tmp_path / "a")
    # A second process with another hash seed: string hashing must not leak into the output.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "tgir", "data", "css2d", "--out", str(tmp_path / "b"),
                    "--seed", "3", "--scale", "0.02", "--json"], check=True, env=env,
                   capture_output=True)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(a) == 2 * 20 * 19 + 3
    assert a == b


def test_other_seed_other_data():
    a = generate_split(Css2dConfig(seed=1, scale=0.01), "test")
    b = generate_split(Css2dConfig(seed=2, scale=0.01), "test")
    assert a.to_css() != b.to_css()


def test_splits_differ_and_counts():
    cfg = Css2dConfig(seed=0, scale=0.05)
    train, test = generate_split(cfg, "train"), generate_split(cfg, "test")
    assert train.to_css()["objects_img"][:50] != test.to_css()["objects_img"][:50]
    stats = test.stats()
    assert stats["images"] == 50 * 19
    assert stats["queries"] == 50 * 18
    assert stats["queries_per_op"] == {"add": 300, "make": 300, "remove": 300}
    assert all(2 <= len(s) <= 5 for s in test.scenes[::19])


def _check_pair(text: str, source: tuple, target: tuple) -> None:
    """Re-derive the target scene from the source scene and the parsed text."""
    parsed = parse_text(text)
    if parsed.op == "add":
        added = set(target) - set(source)
        assert len(added) == 1 and set(source) <= set(target), text
        new = added.pop()
        assert all(o.cell != new.cell for o in source), text
        assert parsed.refers_to(new), text
        return
    referred = [o for o in source if parsed.refers_to(o)]
    assert len(referred) == 1, f"{text!r} refers to {len(referred)} objects"
    obj = referred[0]
    rest = [o for o in source if o != obj]
    if parsed.op == "remove":
        assert target == make_scene(rest), text
        return
    (name, value), = parsed.new.items()
    assert getattr(obj, name) != value, f"{text!r} changes nothing"
    changed = Obj(**{**{"cell": obj.cell, "shape": obj.shape, "color": obj.color, "size": obj.size},
                     name: value})
    assert target == make_scene([*rest, changed]), text


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_text_is_true_of_its_pair(tiny_css2d, split):
    data = np.load(tiny_css2d / "css_toy_dataset_novel2_small.dup.npy", allow_pickle=True,
                   encoding="latin1").item()[split]
    scenes = [make_scene(Obj.from_css(o) for o in objs) for objs in data["objects_img"]]
    pairs = 0
    for mod in data["mods"]:
        assert len(mod["from"]) == len(mod["to"]) >= 1
        for s, t in zip(mod["from"], mod["to"], strict=True):
            _check_pair(mod["to_str"], scenes[s], scenes[t])
            pairs += 1
    assert pairs == 180
    # Texts are grouped: no two mods share a text.
    assert len({m["to_str"] for m in data["mods"]}) == len(data["mods"])
    # Labels: equal scene keys <=> equal labels.
    by_label: dict[int, set] = {}
    for scene, label in zip(scenes, data["labels"], strict=True):
        by_label.setdefault(label, set()).add(scene_key(scene))
    assert all(len(keys) == 1 for keys in by_label.values())
    assert len(by_label) == len({scene_key(s) for s in scenes})


def test_images_show_their_scenes(tiny_css2d):
    data = json.loads((tiny_css2d / "css2d.json").read_text())["test"]
    for idx, objs in enumerate(data["objects_img"]):
        scene = make_scene(Obj.from_css(o) for o in objs)
        with Image.open(tiny_css2d / "images" / f"css_test_{idx:06d}.png") as img:
            assert img.size == (64, 64)
            assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(render_scene(scene)))


def test_render_draws_each_object_in_its_colour():
    scene = make_scene([Obj(0, "rectangle", "red", "large"), Obj(8, "triangle", "blue", "small")])
    px = np.asarray(render_scene(scene, size=128))
    assert tuple(px[21, 21]) == (244, 35, 35)  # centre of top-left cell
    assert tuple(px[108, 106]) == (42, 75, 215)  # inside the bottom-right triangle
    assert tuple(px[64, 64]) == (255, 255, 255)


def test_references_vary_in_length():
    data = generate_split(Css2dConfig(seed=0, scale=0.05), "train")
    lengths = Counter(len(parse_text(m["to_str"]).attrs) for m in data.mods if not m["to_str"].startswith("add"))
    assert lengths[1] > 0 and lengths[2] > 0


def test_json_mirror_equals_pickle(tiny_css2d):
    mirror = json.loads((tiny_css2d / "css2d.json").read_text())
    pickled = np.load(tiny_css2d / "css_toy_dataset_novel2_small.dup.npy", allow_pickle=True).item()
    assert mirror["version"] == 1 and mirror["config"]["seed"] == 7
    assert {k: mirror[k] for k in ("train", "test")} == pickled


@pytest.mark.parametrize("text", ["", "paint red object", "add", "remove red", "make red circle",
                                  "make red circle circle", "add small object to nowhere",
                                  "remove top-left top-left object"])
def test_parse_rejects_bad_text(text):
    with pytest.raises(ValueError):
        parse_text(text)


def test_parse_examples_from_the_spec():
    assert parse_text("add large object to top-left").attrs == {"size": "large", "pos": "top-left"}
    p = parse_text("make middle-left large circle green")
    assert (p.op, p.attrs, p.new) == ("make", {"pos": "middle-left", "size": "large", "shape": "circle"},
                                      {"color": "green"})
    assert parse_text("remove bottom-center cyan object").attrs == {"pos": "bottom-center", "color": "cyan"}


@pytest.mark.parametrize("kwargs", [{"scale": 0}, {"size": 96}, {"min_objects": 6, "max_objects": 5},
                                    {"mods_per_scene": 4}])
def test_bad_config(kwargs):
    with pytest.raises(TgirUserError):
        Css2dConfig(**kwargs)


def test_refuses_to_overwrite_without_flag(tmp_path):
    cfg = Css2dConfig(scale=0.001)
    write_css2d(cfg, tmp_path)
    with pytest.raises(TgirUserError, match="--overwrite"):
        write_css2d(cfg, tmp_path)
    (tmp_path / "images" / "css_test_999999.png").write_bytes(b"stale")
    write_css2d(cfg, tmp_path, overwrite=True)
    assert not (tmp_path / "images" / "css_test_999999.png").exists()
