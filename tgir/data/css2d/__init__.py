"""CSS-2D: a procedural re-creation of TIRG's CSS benchmark (2D scenes, add/remove/make texts).

``write_css2d`` writes a dataset directory in the CSS on-disk format (see ../shared/specs/datasets.md)
plus a JSON mirror; ``generate_split`` builds one split in memory; ``parse_text`` reads a
modification text back into its operation and attributes.
"""

from tgir.data.css2d.generate import (
    GENERATOR_VERSION,
    Css2dConfig,
    Css2dSplit,
    generate_split,
    write_css2d,
)
from tgir.data.css2d.scene import COLORS, POSITIONS, SHAPES, SIZES, Obj, Scene
from tgir.data.css2d.text import ParsedText, parse_text

__all__ = [
    "COLORS",
    "GENERATOR_VERSION",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Css2dConfig",
    "Css2dSplit",
    "Obj",
    "ParsedText",
    "Scene",
    "generate_split",
    "parse_text",
    "write_css2d",
]
