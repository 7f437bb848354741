"""Generating CSS-2D splits: base scenes, add/remove/make modifications and their targets."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tgir.data.css2d.render import render_scene
from tgir.data.css2d.scene import ATTRIBUTES, COLORS, SHAPES, SIZES, Obj, Scene, make_scene, scene_key
from tgir.data.css2d.text import add_text, make_text, remove_text
from tgir.errors import TgirUserError
from tgir.manifest import require_writable

# Bump whenever the generator's output changes for a given config: same seed + version = same bytes.
GENERATOR_VERSION = 1
SPLITS = ("train", "test")
DUP_NAME = "css_toy_dataset_novel2_small.dup.npy"
JSON_NAME = "css2d.json"
CONFIG_NAME = "css2d_config.json"
IMAGE_DIR = "images"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Css2dConfig:
    """Settings of one CSS-2D generation run.

    Attributes:
        seed: Master seed; each split derives its own stream from it.
        scale: Fraction of the full size (1.0 = 1,000 base scenes per split).
        size: Image side in pixels, 64 (as TIRG) or 128.
        true_circle: Draw circles as circles instead of TIRG's diamonds.
        scenes_per_split: Base scenes per split at scale 1.
        mods_per_scene: Modifications per base scene (a third each of add, remove, make).
        min_objects: Fewest objects in a base scene.
        max_objects: Most objects in a base scene.
    """

    seed: int = 0
    scale: float = 1.0
    size: int = 64
    true_circle: bool = False
    scenes_per_split: int = 1000
    mods_per_scene: int = 18
    min_objects: int = 2
    max_objects: int = 5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):  # inf overflowed only after the folder was made
            raise TgirUserError(f"scale must be > 0 and finite, got {self.scale}")
        if self.size not in (64, 128):
            raise TgirUserError(f"size must be 64 or 128, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise TgirUserError("need 1 <= min_objects <= max_objects <= 8 (a scene keeps a free cell)")
        if self.mods_per_scene < 3 or self.mods_per_scene % 3:
            raise TgirUserError(f"mods_per_scene must be a positive multiple of 3, got {self.mods_per_scene}")

    @property
    def num_scenes(self) -> int:
        return max(1, round(self.scenes_per_split * self.scale))


@dataclass
class Css2dSplit:
    """One generated split, in memory: scenes per image, labels and grouped modifications."""

    split: str
    scenes: list[Scene] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    mods: list[dict] = field(default_factory=list)

    def to_css(self) -> dict:
        """The split as TIRG's CSS dict: ``objects_img``, ``labels``, ``mods``."""
        return {
            "objects_img": [[o.to_css() for o in s] for s in self.scenes],
            "labels": list(self.labels),
            "mods": self.mods,
        }

    def stats(self) -> dict:
        ops = Counter()
        for m in self.mods:
            ops[m["to_str"].split()[0]] += len(m["from"])
        return {
            "images": len(self.scenes),
            "queries": sum(ops.values()),
            "texts": len(self.mods),
            "labels": len(set(self.labels)),
            "queries_per_op": dict(sorted(ops.items())),
            "mean_objects": round(float(np.mean([len(s) for s in self.scenes])), 3),
        }


def _random_object(rng: random.Random, cell: int) -> Obj:
    return Obj(cell, rng.choice(SHAPES), rng.choice(sorted(COLORS)), rng.choice(SIZES))


def _base_scene(rng: random.Random, cfg: Css2dConfig) -> Scene:
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    return make_scene(_random_object(rng, c) for c in rng.sample(range(9), n))


def _reference(rng: random.Random, scene: Scene, obj: Obj) -> tuple[str, ...]:
    """Shortest prefix of a random attribute order that picks out ``obj`` alone.

    The position is always unique (one object per cell), so a prefix always exists; random orders
    give a mix of one-, two- and three-attribute references as in CSS.
    """
    order = list(ATTRIBUTES)
    rng.shuffle(order)
    for k in range(1, len(order) + 1):
        names = order[:k]
        if sum(all(o.attr(a) == obj.attr(a) for a in names) for o in scene) == 1:
            return tuple(a for a in ATTRIBUTES if a in names)
    raise AssertionError("unreachable: positions are unique")


def _modify(rng: random.Random, scene: Scene, op: str) -> tuple[str, Scene]:
    """Apply one random modification of kind ``op``; return its text and the target scene."""
    if op == "add":
        free = [c for c in range(9) if all(o.cell != c for o in scene)]
        new = _random_object(rng, rng.choice(free))
        mention = tuple(a for a in ATTRIBUTES if rng.random() < 0.5) or (rng.choice(ATTRIBUTES),)
        return add_text(new, mention), make_scene((*scene, new))
    obj = rng.choice(scene)
    ref = _reference(rng, scene, obj)
    rest = [o for o in scene if o is not obj]
    if op == "remove":
        return remove_text(obj, ref), make_scene(rest)
    if rng.random() < 0.5:
        value = rng.choice([c for c in sorted(COLORS) if c != obj.color])
        changed = Obj(obj.cell, obj.shape, value, obj.size)
    else:
        value = "small" if obj.size == "large" else "large"
        changed = Obj(obj.cell, obj.shape, obj.color, value)
    return make_text(obj, ref, value), make_scene((*rest, changed))


def generate_split(cfg: Css2dConfig, split: str) -> Css2dSplit:
    """Build one split in memory, deterministically from ``cfg`` and the split name.

    Images are laid out per base scene: the source scene, then one target per modification.
    """
    if split not in SPLITS:
        raise TgirUserError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    # String seeds hash with SHA-512 inside ``random``: stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"css2d/v{GENERATOR_VERSION}/{cfg.seed}/{split}")
    out = Css2dSplit(split)
    by_text: dict[str, dict] = {}
    per_op = cfg.mods_per_scene // 3
    for _ in range(cfg.num_scenes):
        source = _base_scene(rng, cfg)
        src_id = len(out.scenes)
        out.scenes.append(source)
        ops = ["add", "remove", "make"] * per_op
        rng.shuffle(ops)
        seen: set[str] = set()
        for op in ops:
            for _attempt in range(50):  # a repeated text on one source would be ambiguous
                text, target = _modify(rng, source, op)
                if text not in seen:
                    break
            else:
                continue
            seen.add(text)
            mod = by_text.setdefault(text, {"from": [], "to": [], "to_str": text})
            mod["from"].append(src_id)
            mod["to"].append(len(out.scenes))
            out.scenes.append(target)
    out.mods = list(by_text.values())
    key_label: dict[tuple, int] = {}
    out.labels = [key_label.setdefault(scene_key(s), len(key_label)) for s in out.scenes]
    return out


def _prepare_dir(out_dir: Path, overwrite: bool) -> None:
    """Check ``out_dir`` can take the dataset (writable, no dataset unless ``overwrite``), then empty
    our files from it and create ``images/``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TgirUserError(f"{out_dir}: exists and is not a directory")
    require_writable(out_dir, folder=True)
    ours = [out_dir / n for n in (DUP_NAME, JSON_NAME, CONFIG_NAME)]
    images = sorted((out_dir / IMAGE_DIR).glob("css_*.png")) if out_dir.exists() else []
    if any(p.exists() for p in ours) or images:
        if not overwrite:
            raise TgirUserError(f"{out_dir}: already holds a CSS dataset; pass --overwrite to replace it")
        for p in [*ours, *images]:
            p.unlink(missing_ok=True)
    try:
        (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TgirUserError(f"{out_dir}: cannot write there ({err.strerror or err})") from None


def write_css2d(
    cfg: Css2dConfig, out_dir: str | Path, overwrite: bool = False, progress: Progress | None = None
) -> dict:
    """Generate CSS-2D and write it in the CSS on-disk format, plus a JSON mirror.

    Writes ``css_toy_dataset_novel2_small.dup.npy`` (pickled ``{"train": S, "test": S}``),
    ``images/css_{split}_{idx:06d}.png``, ``css2d.json`` (same content, readable without pickle)
    and ``css2d_config.json`` (the config and generator version).

    Args:
        cfg: Generation settings.
        out_dir: Target directory (created if missing).
        overwrite: Replace a CSS dataset already in ``out_dir``.
        progress: Called as ``progress(images_written, images_total)``.

    Returns:
        Statistics per split (images, queries, texts, labels, queries per operation).
    """
    out_dir = Path(out_dir)
    _prepare_dir(out_dir, overwrite)
    splits = {s: generate_split(cfg, s) for s in SPLITS}
    total, done = sum(len(s.scenes) for s in splits.values()), 0
    for name, data in splits.items():
        for idx, scene in enumerate(data.scenes):
            img = render_scene(scene, cfg.size, cfg.true_circle)
            img.save(out_dir / IMAGE_DIR / f"css_{name}_{idx:06d}.png", format="PNG")
            done += 1
            if progress and (done % 200 == 0 or done == total):
                progress(done, total)
    css = {name: data.to_css() for name, data in splits.items()}
    np.save(out_dir / DUP_NAME, np.array(css, dtype=object), allow_pickle=True)
    meta = {"generator": "css2d", "version": GENERATOR_VERSION, "config": asdict(cfg)}
    (out_dir / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    (out_dir / JSON_NAME).write_text(json.dumps({**meta, **css}, separators=(",", ":")) + "\n")
    return {name: data.stats() for name, data in splits.items()}
