"""One picture of a search: the reference image, the text, and the top-k images with their scores.

Retrieval is judged by eye first; this draws what ``tgir search --grid`` shows. PIL only.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tgir.data.images import load_image
from tgir.errors import TgirUserError
from tgir.manifest import require_writable

TILE = 128  # px per image
CAPTION = 28  # px of text under each tile
COLUMNS = 6


def _tile(img: Image.Image, caption: str, colour: str) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE + CAPTION), "white")
    tile.paste(img.resize((TILE, TILE), Image.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, TILE - 1, TILE - 1), outline=colour, width=2)
    draw.text((4, TILE + 4), caption[:22], fill="black", font=ImageFont.load_default())
    return tile


def draw_grid(reference: str | Path, text: str, results: list[dict], out: str | Path) -> Path:
    """Write the reference (framed blue, with the wrapped text) and each result (rank and score) as a PNG.

    Args:
        reference: Path of the query's reference image.
        text: The modification text.
        results: Rows with ``rank``, ``score`` and ``path`` (an unreadable result image is drawn grey).
        out: PNG path (missing folders are created).

    Raises:
        TgirUserError: ``out`` is not a .png path or cannot be written; the reference cannot be read.
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise TgirUserError(f"{out}: the grid is written as PNG; give a .png path")
    require_writable(out)
    tiles = [_tile(load_image(reference), "query", "blue")]
    for row in results:
        try:
            img = load_image(row["path"])
        except TgirUserError:
            img = Image.new("RGB", (TILE, TILE), "grey")
        tiles.append(_tile(img, f"#{row['rank']}  score {row['score']:.3f}", "green" if row["rank"] == 1 else "black"))
    cols = min(COLUMNS, len(tiles))
    lines = textwrap.wrap(text, width=cols * TILE // 7) or [""]
    header = 8 + 14 * len(lines)
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * TILE, header + rows * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, line in enumerate(lines):
        draw.text((4, 4 + 14 * n), line, fill="black", font=ImageFont.load_default())
    for n, tile in enumerate(tiles):
        sheet.paste(tile, ((n % cols) * TILE, header + (n // cols) * (TILE + CAPTION)))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out)
    except OSError as err:  # e.g. the disk filled up after the check
        raise TgirUserError(f"{out}: cannot write there ({err.strerror or err})") from None
    return out
