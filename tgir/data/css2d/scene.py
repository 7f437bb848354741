"""Scenes of CSS-2D: objects on a 3x3 grid, their attributes and their CSS encoding."""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("rectangle", "circle", "triangle")
COLORS = {
    "gray": (87, 87, 87),
    "red": (244, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 205, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
SIZES = ("small", "large")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
# Cell index = 3 * row + col, named "{row}-{col}" as in CSS's texts.
POSITIONS = tuple(f"{r}-{c}" for r in ROWS for c in COLS)
ATTRIBUTES = ("pos", "size", "color", "shape")


@dataclass(frozen=True, order=True)
class Obj:
    """One object of a scene; ``cell`` is 0..8 in row-major order."""

    cell: int
    shape: str
    color: str
    size: str

    def __post_init__(self) -> None:
        if not 0 <= self.cell < 9:
            raise ValueError(f"cell must be 0..8, got {self.cell}")
        for value, valid in ((self.shape, SHAPES), (self.color, COLORS), (self.size, SIZES)):
            if value not in valid:
                raise ValueError(f"{value!r} is not one of {sorted(valid)}")

    @property
    def pos_name(self) -> str:
        return POSITIONS[self.cell]

    @property
    def pos(self) -> list[float]:
        """Cell centre as CSS stores it: ``[y, x]`` in [0, 1]."""
        row, col = divmod(self.cell, 3)
        return [(row + 0.5) / 3.0, (col + 0.5) / 3.0]

    def attr(self, name: str) -> str:
        """The value of one referable attribute (``pos``, ``size``, ``color`` or ``shape``)."""
        return self.pos_name if name == "pos" else getattr(self, name)

    def to_css(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "pos": self.pos}

    @classmethod
    def from_css(cls, d: dict) -> Obj:
        """Read a CSS object dict; continuous positions are snapped to their grid cell."""
        y, x = (float(v) for v in d["pos"])
        row, col = min(int(y * 3), 2), min(int(x * 3), 2)
        return cls(cell=3 * row + col, shape=d["shape"], color=d["color"], size=d["size"])


Scene = tuple[Obj, ...]
"""A scene is its objects sorted by cell (at most one object per cell)."""


def make_scene(objs) -> Scene:
    scene = tuple(sorted(objs))
    cells = [o.cell for o in scene]
    if len(set(cells)) != len(cells):
        raise ValueError(f"two objects share a cell: {cells}")
    return scene


def scene_key(scene: Scene) -> tuple:
    """Identity of a scene: equal keys mean equal images and share one label."""
    return tuple((o.cell, o.shape, o.color, o.size) for o in scene)
