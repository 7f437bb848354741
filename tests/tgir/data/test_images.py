"""The preprocessing contract: the table lookup gives exactly ``(v / 255 - mean) / std`` in float32."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tgir.data.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_image, to_rgb


def _formula(img: Image.Image, p: Preprocess) -> np.ndarray:
    side = p.resize or p.size
    img = img.resize((side, side), Image.BILINEAR) if img.size != (side, side) else img
    off = (side - p.size) // 2
    img = img.crop((off, off, off + p.size, off + p.size))
    x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    x = (x - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # [3, H, W]


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
@pytest.mark.parametrize(("size", "resize", "shape"), [(64, None, (64, 64)), (64, 72, (50, 90)), (32, None, (40, 40))])
def test_lookup_equals_the_formula_bit_for_bit(mode, size, resize, shape):
    rng = np.random.default_rng(size)
    img = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).convert(mode)
    p = Preprocess(size=size, resize=resize)
    got = p(img)
    assert got.dtype == np.float32 and got.shape == (3, size, size) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _formula(img, p))


def test_known_values():
    p = Preprocess(size=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    img = Image.fromarray(np.array([[[255, 0, 255], [0, 0, 0]], [[255, 255, 255], [0, 255, 0]]], np.uint8))
    got = p(img)
    assert got[:, 0, 0].tolist() == [1.0, -2.0, 1.0]  # (1 - .5) / .5, (0 - .5) / .25, (1 - .5) / .5
    assert got[:, 1, 1].tolist() == [-1.0, 2.0, -1.0]
    assert Preprocess(size=2)(img)[0, 0, 0] == np.float32((np.float32(1.0) - np.float32(IMAGENET_MEAN[0]))
                                                          / np.float32(IMAGENET_STD[0]))


def test_decompression_bomb_is_a_user_error(tmp_path, monkeypatch):
    from tgir.data.images import load_image
    from tgir.errors import TgirUserError

    # a 19000 px square PNG is 30 kB on disk but 1 GB decoded; a lowered limit makes the same case fast
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("1", (30, 30)).save(tmp_path / "bomb.png")
    with pytest.raises(TgirUserError, match=r"bomb\.png: image too large to decode safely \(Image size \(900 pixels"):
        load_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("bits", ["png16", "I", "F"])
def test_high_bit_depth_grey_is_scaled_not_clipped(tmp_path, bits):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    want = Preprocess(size=32)(Image.fromarray(grey, "L"))
    if bits == "png16":  # Pillow opens a 16-bit grey PNG as I;16; convert("RGB") would clip it to white
        Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
        img = load_image(tmp_path / "g16.png")
    elif bits == "I":
        img = Image.fromarray(grey.astype(np.int32) * 257, "I")
    else:
        img = Image.fromarray(grey.astype(np.float32) / 255, "F")
    got = Preprocess(size=32)(img)
    np.testing.assert_allclose(got, want, atol=0.05)
    assert np.asarray(to_rgb(Image.fromarray(grey.astype(np.uint16) * 257))).max() == grey.max()
