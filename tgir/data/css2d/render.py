"""Rendering CSS-2D scenes with PIL, after TIRG's own 2D renderer."""

from __future__ import annotations

from PIL import Image, ImageDraw

from tgir.data.css2d.scene import COLORS, Scene

# Half-sizes at 64 px (TIRG's renderer); other sizes scale linearly.
HALF_SIZE_64 = {"small": 4, "large": 8}
BACKGROUND = (255, 255, 255)


def render_scene(scene: Scene, size: int = 64, true_circle: bool = False) -> Image.Image:
    """Draw a scene on a white square canvas.

    Args:
        scene: The objects to draw.
        size: Canvas side in pixels (64 as in TIRG; 128 for finer token grids).
        true_circle: Draw circles as circles. TIRG draws them as diamonds, which is the default
            here too so the data matches the published benchmark's look.

    Returns:
        An RGB image, drawn without anti-aliasing (byte-identical across runs).
    """
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    scale = size / 64.0
    for obj in scene:
        y, x = obj.pos
        cx, cy = x * size, y * size
        h = HALF_SIZE_64[obj.size] * scale
        fill = COLORS[obj.color]
        if obj.shape == "rectangle":
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif obj.shape == "circle" and true_circle:
            draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif obj.shape == "circle":
            draw.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=fill)
        else:  # upward triangle
            draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    return img
