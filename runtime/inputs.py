"""Checks of what a caller hands the runtime (image lists, texts, k, queries, token ids, options),
each raising ``TgirUserError`` with one line before any backend sees the value. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from tgir.errors import TgirUserError

MAX_THREADS = 1024  # more intra-op threads than any machine here has cores is a typo, not a setting
IMAGE_ITEMS = "a file path, a PIL image or an RGB uint8 [H, W, 3] array"


def _listed(kind: str, values: object, what: str) -> list:
    """``values`` as a list: any iterable but one string (or bytes), which is refused."""
    if isinstance(values, str | bytes | Path):
        one = "path" if isinstance(values, Path) else "string" if isinstance(values, str) else "bytes string"
        raise TgirUserError(f"{kind} must be a list of {what}, not one {one}")
    if not isinstance(values, Iterable):
        raise TgirUserError(f"{kind} must be a list of {what}, got {type(values).__name__}")
    return list(values)


def image_list(images: object) -> list | np.ndarray:
    """The images of one call: a list of items (``IMAGE_ITEMS``), or a ready ``[B, 3, S, S]`` float32
    array; a ``[B, H, W, 3]`` uint8 array is B images.

    Raises:
        TgirUserError: One string or path, not a list; an item of another kind; another array.
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 4 and images.dtype == np.uint8 and images.shape[3] == 3:
            return list(images)
        if images.ndim == 4 and images.dtype == np.float32:
            return images  # network input; the graph's contract checks the rest
        raise TgirUserError(f"images: an array must be [B, H, W, 3] uint8 pictures or [B, 3, S, S] float32 "
                            f"network input, got {images.dtype} {list(images.shape)}; pass a list of images")
    items = _listed("images", images, "images")
    for i, item in enumerate(items):
        rgb_array = isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[2] == 3
        if not (isinstance(item, str | Path | Image.Image) or rgb_array):
            got = f"{item.dtype} {list(item.shape)} array" if isinstance(item, np.ndarray) else type(item).__name__
            raise TgirUserError(f"image {i}: expected {IMAGE_ITEMS}, got {got}")
    return items


def as_picture(item: object) -> Image.Image | str | Path:
    """An ``image_list`` item as something ``load_image``/``Preprocess`` take (arrays become PIL images)."""
    return Image.fromarray(item, "RGB") if isinstance(item, np.ndarray) else item


def text_list(texts: object) -> list[str]:
    """Query texts as a list of strings libtgir and the Python tokenizer read alike.

    Raises:
        TgirUserError: One string, not a list; an item that is not a string; a NUL character (the C
            runtime would end the text there) or a lone surrogate (not encodable as UTF-8).
    """
    items = _listed("texts", texts, "strings")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TgirUserError(f"text {i}: expected a string, got {type(text).__name__}")
        if "\x00" in text:
            raise TgirUserError(f"text {i}: {text!r} contains a NUL character; remove it")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise TgirUserError(f"text {i}: {text!r} is not valid Unicode (a lone surrogate)") from None
    return items


def integer(name: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi``: Python or numpy integers only (no bool, float or string).

    Raises:
        TgirUserError: Another type, or outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TgirUserError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise TgirUserError(f"{name} must be between {lo} and {hi}, got {value}" if hi is not None
                            else f"{name} must be >= {lo}, got {value}")
    return value


def top_k(k: object, size: int) -> int:
    """``k`` of a search: an integer in ``1..size``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TgirUserError(f"k must be an integer, got {type(k).__name__} {k!r}")
    if not 1 <= k <= size:
        raise TgirUserError(f"k must be between 1 and the gallery size {size}, got {int(k)}")
    return int(k)


def query_array(queries: object, dim: int) -> np.ndarray:
    """Query embeddings as a C-contiguous float32 ``[Q, dim]`` array of finite values (a 1-D query is one row).

    Raises:
        TgirUserError: Not real numbers, not 1-D or 2-D, another width, NaN or infinite values.
    """
    array = np.asarray(queries)
    if array.dtype.kind not in "fiu":
        raise TgirUserError(f"queries must be real numbers, got {array.dtype}")
    if array.ndim not in (1, 2):
        raise TgirUserError(f"queries must be [Q, D] (or one [D] query), got shape {list(array.shape)}")
    with np.errstate(over="ignore"):  # too large for float32: infinite, refused below
        array = np.ascontiguousarray(np.atleast_2d(array), np.float32)
    if array.shape[1] != dim:
        raise TgirUserError(f"queries have dimension {array.shape[1]}, the index {dim}")
    if not np.isfinite(array).all():
        raise TgirUserError("queries contain NaN or infinite values (in float32); they cannot be ranked")
    return array


def check_tokens(graph: str, feeds: dict[str, np.ndarray], vocab_size: int) -> None:
    """Token ids within the vocabulary and lengths within ``1..L`` (tokenized texts always have >= 1
    token), so no backend indexes its embedding table or sequence out of range."""
    ids, lengths = feeds.get("ids"), feeds.get("lengths")
    if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise TgirUserError(f"{graph} input ids: token id {bad} outside the vocabulary 0..{vocab_size - 1}")
    if lengths is not None and lengths.size:
        limit = ids.shape[1] if ids is not None else None
        low, high = lengths.min(), lengths.max()
        if low < 1 or (limit is not None and high > limit):
            raise TgirUserError(f"{graph} input lengths: {low if low < 1 else high} outside 1..{limit}")
