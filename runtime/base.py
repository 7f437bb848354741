"""The runner protocol: one way to use a bundle, whatever runs its graphs.

A ``Runner`` reads a bundle's manifest (I/O contract, preprocessing, tokenizer) and offers
``encode_images``, ``encode_queries`` and ``search``. It validates every input against the contract,
splits work into batches the graphs accept, and hands each graph call to its backend's ``_run``.
Backends (ONNX Runtime, TensorRT, PyTorch, the C library) implement only ``_run`` and ``close``, so
they are interchangeable. Torch-free.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tgir.runtime.index import GalleryIndex
from tgir.runtime.inputs import as_picture, check_tokens, image_list, text_list

from tgir.data.images import Preprocess, load_image
from tgir.errors import TgirUserError
from tgir.manifest import FUSED_QUERY, Manifest
from tgir.vocab import UNK, Vocabulary, tokenize

ImageLike = str | Path | Image.Image
Progress = Callable[[int, int], None]
_NUMPY = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


class QueryTextWarning(UserWarning):
    """A query text the bundle reads only in part; the answer is given anyway."""


class UnknownWordsWarning(QueryTextWarning):
    """A query text none of whose words the bundle's vocabulary knows (the answer ignores the text)."""


class TextTooLongWarning(QueryTextWarning):
    """A query text with more words than the bundle's text graph takes (the rest is ignored)."""


class Runner:
    """Base of every backend; subclasses implement ``_run`` (and ``close`` if they hold resources).

    Args:
        folder: Bundle directory (``manifest.json`` + graphs/engines + ``vocab.json``).
        manifest: The bundle's manifest, when the caller already loaded it.

    Attributes:
        backend: Name of the backend (``"onnxruntime"``, ``"tensorrt"``, ``"torch"``, ``"c"``).
        max_batch: Largest batch one graph call takes (the manifest's batch range).
        index: The gallery index ``search`` uses (``attach``), or None.
        fused: Fused entry points this backend runs (``build["fused"]`` entries it opened, e.g.
            ``query_encoder``: a whole query in one graph call); empty for most backends.
    """

    backend = "base"
    index_backend: str | None = None  # "aoti" where embeddings come from the FP32 AOTInductor graphs
    gives_tokens = True  # encode_images(tokens=True) works (the C runtime composes whole queries only)
    closed = False  # set by close(); a closed runner refuses every call

    def __init__(self, folder: str | Path, manifest: Manifest | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = manifest or Manifest.load(self.folder)
        self.preprocess = Preprocess.from_dict(self.manifest.preprocess)
        vocab_file, self.text_length = _tokenizer_entry(self.folder, self.manifest.tokenizer)
        self.vocab = Vocabulary.load(self.folder / vocab_file)
        self.graphs = self.manifest.graphs
        self.max_batch = int(self.graphs["image_encoder"]["dynamic"]["batch"][2])
        self.index = None
        self.fused: dict[str, dict] = {}

    # -- backend hooks -------------------------------------------------------------------------
    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one graph on validated inputs; outputs in contract order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources (sessions, engines, device memory); subclasses call this too."""
        self.closed = True

    def _require_open(self) -> None:
        if self.closed:
            raise TgirUserError(f"the {self.backend} runner is closed; open the bundle again")

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one graph call, validated -------------------------------------------------------------
    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against the graph's contract, run it, and name the outputs.

        Raises:
            TgirUserError: Unknown graph, missing or extra inputs, wrong dtype, rank or size, token ids
                outside the vocabulary or lengths outside ``1..L``, a closed runner.
        """
        self._require_open()
        spec = self.graphs.get(graph) or self.fused.get(graph)
        if spec is None:
            raise TgirUserError(f"unknown graph {graph!r}; this bundle has {', '.join([*self.graphs, *self.fused])}")
        names = [t["name"] for t in spec["inputs"]]
        if set(feeds) != set(names):
            raise TgirUserError(f"{graph}: inputs are {names}, got {sorted(feeds)}")
        sizes: dict[str, int] = {}
        for t in spec["inputs"]:
            _check_tensor(graph, t, feeds[t["name"]], spec["dynamic"], sizes)
        check_tokens(graph, feeds, len(self.vocab))
        outputs = self._run(graph, {n: feeds[n] for n in names})
        return {t["name"]: out for t, out in zip(spec["outputs"], outputs, strict=True)}

    # -- the protocol --------------------------------------------------------------------------
    def pixels(self, images: np.ndarray | Sequence[ImageLike]) -> np.ndarray:
        """``[B, 3, S, S]`` float32 network input from image files, PIL images, ``[H, W, 3]`` uint8
        arrays (``inputs.image_list``) or a ready array."""
        images = image_list(images)
        if isinstance(images, np.ndarray):
            return images
        pictures = [as_picture(img) for img in images]
        return np.stack([self.preprocess(img if isinstance(img, Image.Image) else load_image(img))
                         for img in pictures]) if pictures else np.zeros((0, 3, self.preprocess.size,
                                                                          self.preprocess.size), np.float32)

    def encode_images(self, images: np.ndarray | Sequence[ImageLike], progress: Progress | None = None,
                      tokens: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Gallery embeddings ``[B, D]`` (L2-normalised) of images; with ``tokens`` also the
        composer's region tokens ``[B, N, D]``."""
        self._require_open()
        images = image_list(images)
        keep = ("gallery", "tokens") if tokens else ("gallery",)  # tokens are large: hold them only when asked

        def encode(part: slice) -> list[np.ndarray]:
            out = self.run("image_encoder", {"images": self.pixels(images[part])})
            return [out[name] for name in keep]

        outputs = self._in_batches(len(images), encode, progress)
        parts = [_cat([o[i] for o in outputs], self._dim("image_encoder", name)) for i, name in enumerate(keep)]
        return tuple(parts) if tokens else parts[0]

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``ids`` ``[B, L]`` and ``lengths`` ``[B]`` for the text graph; warns about texts with no
        known word (``UnknownWordsWarning``) and texts cut to the bundle's length (``TextTooLongWarning``)."""
        texts = text_list(texts)
        ids, lengths = self.vocab.encode_batch(texts, self.text_length)
        limit = min(self.text_length, self.vocab.max_length)
        for i in np.flatnonzero(lengths == limit):  # only a text that filled the graph can have been cut
            words = len(tokenize(texts[i]))
            if words > limit:
                warnings.warn(TextTooLongWarning(f"query {i}: {texts[i]!r} has {words} words; the bundle reads "
                                                 f"the first {limit} and ignores the rest"), stacklevel=2)
        valid = np.arange(ids.shape[1])[None] < lengths[:, None]  # [B, L]
        for i in np.flatnonzero(~((ids != UNK) & valid).any(axis=1)):
            warnings.warn(UnknownWordsWarning(f"query {i}: no word of {texts[i]!r} is in the bundle's vocabulary; "
                                              "the answer follows the image alone"), stacklevel=2)
        return ids, lengths

    def encode_queries(self, images: np.ndarray | Sequence[ImageLike], texts: Sequence[str],
                       progress: Progress | None = None) -> np.ndarray:
        """Query embeddings ``[B, D]`` (L2-normalised) of reference images modified by texts."""
        self._require_open()
        images, texts = image_list(images), text_list(texts)
        if len(images) != len(texts):
            raise TgirUserError(f"{len(images)} reference images but {len(texts)} texts; give one text per image")
        ids, lengths = self.tokenize(texts)
        if FUSED_QUERY in self.fused:
            return self._fused_queries(images, ids, lengths, progress)
        return self.compose(self.encode_images(images, tokens=True)[1], ids, lengths, progress)

    def _fused_queries(self, images: np.ndarray | Sequence[ImageLike], ids: np.ndarray, lengths: np.ndarray,
                       progress: Progress | None) -> np.ndarray:
        """``encode_queries`` through the fused ``query_encoder`` graph: one call per batch."""
        names = [t["name"] for t in self.fused[FUSED_QUERY]["inputs"]]

        def query(part: slice) -> np.ndarray:
            feeds = {"images": self.pixels(images[part]), "ids": ids[part], "lengths": lengths[part]}
            return self.run(FUSED_QUERY, {k: feeds[k] for k in names})["query"]

        return _cat(self._in_batches(len(ids), query, progress), self._dim("composer", "query"))

    def compose(self, tokens: np.ndarray, ids: np.ndarray, lengths: np.ndarray,
                progress: Progress | None = None) -> np.ndarray:
        """Query embeddings from reference-image tokens ``[B, N, D]`` and tokenized texts."""
        text_names = [t["name"] for t in self.graphs["text_encoder"]["outputs"]]
        composer_inputs = [t["name"] for t in self.graphs["composer"]["inputs"]]

        def query(part: slice) -> np.ndarray:
            text = self.run("text_encoder", {"ids": ids[part], "lengths": lengths[part]})
            feeds = {"tokens": tokens[part], **{k: text[k] for k in text_names}}
            return self.run("composer", {k: feeds[k] for k in composer_inputs})["query"]

        return _cat(self._in_batches(len(ids), query, progress), self._dim("composer", "query"))

    def _in_batches(self, count: int, call: Callable[[slice], object], progress: Progress | None) -> list:
        """``call(part)`` for each slice of at most ``max_batch`` of ``count`` items, in order."""
        steps = range(0, count, self.max_batch)
        results = []
        for n, start in enumerate(steps, 1):
            results.append(call(slice(start, start + self.max_batch)))
            if progress:
                progress(n, len(steps))
        return results

    def attach(self, index) -> None:
        """Use ``index`` (``tgir.runtime.index.GalleryIndex``) for ``search``; it must come from this bundle."""
        if not isinstance(index, GalleryIndex):
            raise TgirUserError(f"attach takes a GalleryIndex (GalleryIndex.load), got {type(index).__name__}"
                                + ("; search a CIndex with its own search method" if type(index).__name__ == "CIndex"
                                   else ""))
        index.require_bundle(self.manifest, backend=self.index_backend)
        self.index = index

    def search(self, queries: np.ndarray, k: int = 10):
        """Top-``k`` gallery entries for each query embedding, from the attached index."""
        self._require_open()
        if self.index is None:
            raise TgirUserError("no gallery index attached; build one with `tgir index` and attach it")
        return self.index.search(queries, k)

    def _dim(self, graph: str, output: str) -> tuple[int, ...]:
        shape = next(t["shape"] for t in self.graphs[graph]["outputs"] if t["name"] == output)
        return tuple(d for d in shape[1:])


def _tokenizer_entry(folder: Path, tokenizer: dict) -> tuple[str, int]:
    """``(vocab_file, max_length)`` of a manifest's ``tokenizer`` entry, checked (it may be hand-edited)."""
    if not isinstance(tokenizer, dict):
        raise TgirUserError(f"{folder / 'manifest.json'}: 'tokenizer' must be an object")
    vocab_file, max_length = tokenizer.get("vocab_file"), tokenizer.get("max_length")
    if not isinstance(vocab_file, str) or not vocab_file:
        raise TgirUserError(f"{folder / 'manifest.json'}: 'tokenizer.vocab_file' must name the vocabulary file")
    if type(max_length) is not int or max_length < 1:
        raise TgirUserError(f"{folder / 'manifest.json'}: 'tokenizer.max_length' must be a positive integer, "
                            f"got {max_length!r}")
    return vocab_file, max_length


def _cat(parts: list[np.ndarray], tail: tuple) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, *(d if isinstance(d, int) else 0 for d in tail)), np.float32)


def _check_tensor(graph: str, spec: dict, value: object, dynamic: dict, sizes: dict[str, int]) -> None:
    """One input against its contract entry; dynamic axes must agree across inputs and lie in range."""
    name, want = spec["name"], _NUMPY[spec["dtype"]]
    if not isinstance(value, np.ndarray):
        raise TgirUserError(f"{graph} input {name}: expected a numpy array, got {type(value).__name__}")
    if value.dtype != want:
        raise TgirUserError(f"{graph} input {name}: dtype {value.dtype}, expected {spec['dtype']}")
    shape = spec["shape"]
    if value.ndim != len(shape):
        raise TgirUserError(f"{graph} input {name}: shape {list(value.shape)}, expected {shape}")
    for axis, (dim, got) in enumerate(zip(shape, value.shape, strict=True)):
        if isinstance(dim, int):
            if got != dim:
                raise TgirUserError(f"{graph} input {name}: axis {axis} is {got}, expected {dim} (shape {shape})")
            continue
        lo, _, hi = dynamic.get(dim, (1, 1, 1 << 31))
        if not lo <= got <= hi:
            raise TgirUserError(f"{graph} input {name}: {dim} {got} outside the bundle's range {lo}..{hi}")
        if sizes.setdefault(dim, got) != got:
            raise TgirUserError(f"{graph} input {name}: {dim} {got} differs from the other inputs' {sizes[dim]}")
