"""Image decoding and the preprocessing contract, torch-free (the runtimes reuse it).

``Preprocess`` is the one definition of how a picture becomes a network input; exporters write it
into each bundle's manifest and the runtimes apply exactly the same steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tgir.errors import TgirUserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file to RGB.

    Raises:
        TgirUserError: The file is missing, truncated, not an image or too large to decode safely
            (Pillow's decompression-bomb limit, ``Image.MAX_IMAGE_PIXELS``); the message names the path.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncation is reported here and not mid-batch
            return to_rgb(img)
    except FileNotFoundError:
        raise TgirUserError(f"{path}: image file not found") from None
    except Image.DecompressionBombError as err:  # not an OSError: a small file that decodes to gigabytes
        raise TgirUserError(f"{path}: image too large to decode safely ({str(err).rstrip('.')}); "
                            "downscale it below that limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise TgirUserError(f"{path}: cannot decode image ({err}); expected a valid PNG or JPEG") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``img``; high-bit-depth grey (``I;16*``, ``I``, ``F``) is scaled, not clipped.

    Pillow's ``convert("RGB")`` clips 16-bit and 32-bit grey values to 255, so a 16-bit PNG turns
    white. Here ``I;16*`` and ``I`` (how Pillow opens 16-bit PNG and TIFF) are scaled from 0..65535
    and ``F`` from 0..1 (or from 0..255 when its values exceed 1) to 0..255.
    """
    if img.mode == "RGB":
        return img
    if _high_depth(img):
        values = np.asarray(img, np.float64)
        top = 65535.0 if img.mode != "F" else (1.0 if values.size == 0 or values.max() <= 1.0 else 255.0)
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return img.convert("RGB")


def _high_depth(img: Image.Image) -> bool:
    """Whether ``img`` holds more than 8 bits per value (grey ``I;16*``, ``I`` or ``F``)."""
    return img.mode.startswith("I") or img.mode == "F"


@dataclass(frozen=True)
class Preprocess:
    """How an RGB picture becomes a ``[3, size, size]`` float32 array.

    Steps: resize to ``resize x resize`` (bilinear; skipped when ``resize`` is None and the picture
    is already ``size`` square, else resized straight to ``size``), centre-crop ``size``, scale to
    [0, 1], subtract ``mean``, divide by ``std`` (RGB order).

    Attributes:
        size: Output side in pixels.
        resize: Side of the square resize before the centre crop (e.g. 256 for a 224 crop).
        mean: Per-channel mean, RGB.
        std: Per-channel standard deviation, RGB.
    """

    size: int = 224
    resize: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size <= 0 or (self.resize is not None and self.resize < self.size):
            raise TgirUserError(f"need 0 < size <= resize, got size={self.size}, resize={self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise TgirUserError("mean and std need three values each, std > 0")

    def __call__(self, img: Image.Image) -> np.ndarray:
        if _high_depth(img):  # to 8 bits before resizing, which would keep the 16-bit range
            img = to_rgb(img)
        side = self.resize or self.size
        if img.size != (side, side):
            img = img.resize((side, side), Image.BILINEAR)
        if side != self.size:
            off = (side - self.size) // 2
            img = img.crop((off, off, off + self.size, off + self.size))
        pixels = np.asarray(to_rgb(img))  # [H, W, 3] uint8
        out = np.empty((3, *pixels.shape[:2]), np.float32)  # [3, H, W]
        for c in range(3):  # one table lookup per value instead of four float passes (2.5x faster)
            np.take(self._table[c], pixels[:, :, c], out=out[c])
        return out

    @cached_property
    def _table(self) -> np.ndarray:
        """``[3, 256]``: every 8-bit value of each channel, normalised with the very float32 operations
        ``(v / 255 - mean) / std`` (so the lookup is bit-identical to computing it)."""
        values = np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0)  # [1, 256]
        return (values - np.asarray(self.mean, np.float32)[:, None]) / np.asarray(self.std, np.float32)[:, None]

    def to_dict(self) -> dict:
        """The contract as JSON-ready data (colour order is RGB, layout NCHW)."""
        return {**asdict(self), "color_order": "RGB", "layout": "NCHW", "dtype": "float32"}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        """Read the contract back from a manifest's ``preprocess`` entry.

        Raises:
            TgirUserError: Another colour order, layout or dtype than this code applies, or bad values.
        """
        fixed = {"color_order": "RGB", "layout": "NCHW", "dtype": "float32"}
        for key, want in fixed.items():
            if data.get(key, want) != want:
                raise TgirUserError(f"preprocess {key} is {data.get(key)!r}; this tgir applies {want!r}")
        try:
            fields = {k: tuple(data[k]) if k in ("mean", "std") else data[k]
                      for k in ("size", "resize", "mean", "std") if k in data}
            return cls(**fields)
        except (TypeError, ValueError) as err:
            raise TgirUserError(f"malformed preprocess entry {data!r} ({err})") from None
