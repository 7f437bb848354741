"""Gallery index: embeddings of a catalogue, their ids, and the bundle that made them; exact search.

Layout of an index folder: ``embeddings.npy`` ``[G, D]`` float32 (L2-normalised), ``ids.json``
(one id per row, e.g. the image path relative to the catalogue root), ``index.json`` (format,
bundle fingerprint, counts, source). Building is resumable: rows are written in numbered parts
under ``parts/`` and a restarted build skips the parts already on disk.

Search is exact (dot product = cosine on normalised rows), best first, equal scores in gallery
order, by one of three methods (``SEARCH_METHODS``) that return the same entries: ``exact`` (numpy),
``faiss`` (FAISS's flat inner-product index, faiss-cpu; faster on large galleries) and ``int8``
(``tgir.runtime.int8_search``: int8 scoring on ONNX Runtime with a certified float32 re-rank; a
quarter of the memory traffic, the fastest at batch 1).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tgir.runtime.inputs import query_array, top_k

from tgir.errors import TgirUserError, unknown_choice
from tgir.manifest import Manifest, json_type, require_writable

FORMAT = "tgir-index"
VERSION = 1
PART_ROWS = 1024  # rows per resumable part
CHUNK = 1 << 24  # query x gallery scores held at once (64 MiB)
SEARCH_METHODS = ("exact", "faiss", "int8")
FAISS_MARGIN = 16  # extra rows FAISS returns so that ties at the k-th score can be put in gallery order


def bundle_fingerprint(manifest: Manifest, *, backend: str | None = None) -> str:
    """What gallery embeddings depend on: the model config and the image graph's checksum.

    An fp32, INT8 or TensorRT bundle of the same model embed differently, so each has its own
    fingerprint and an index from one is refused by another.

    Args:
        manifest: The bundle's manifest.
        backend: The backend computing the embeddings (None: the bundle's graphs). ``"aoti"`` on a
            non-fp32 bundle: its AOTInductor objects, compiled from the fp32 model, embed in the fp32
            space, so the fingerprint names fp32 and the compiled image encoder. On an fp32 bundle
            they agree with ONNX Runtime to ~1e-5 and share its fingerprint.
    """
    image_file = manifest.graphs["image_encoder"]["file"]
    precision = manifest.precision
    if backend == "aoti" and precision != "fp32":
        precision = "fp32"
        image_file = manifest.aoti.get("graphs", {}).get("image_encoder", {}).get("file", "")
    return f"{manifest.model['config_digest'][:16]}-{precision}-{manifest.files.get(image_file, '')[:16]}"


@dataclass
class SearchResult:
    """Top-k of each query: ``indices`` ``[Q, k]`` rows of the index, ``scores`` ``[Q, k]``, ``ids``."""

    indices: np.ndarray
    scores: np.ndarray
    ids: list[list[str]]


class GalleryIndex:
    """Embeddings plus ids, tied to the bundle that computed them.

    Args:
        embeddings: ``[G, D]`` finite floats (kept as float32).
        ids: One id (a string) per row.
        fingerprint: ``bundle_fingerprint`` of the bundle that computed the embeddings.
        info: Extra facts kept in ``index.json`` (source folder, dataset...).
    """

    def __init__(self, embeddings: np.ndarray, ids: Sequence[str], fingerprint: str, info: dict | None = None):
        embeddings = np.asarray(embeddings)
        ids = list(ids)
        if embeddings.ndim != 2 or len(embeddings) != len(ids):
            raise TgirUserError(f"index: {len(ids)} ids for embeddings of shape {list(embeddings.shape)}")
        if embeddings.dtype.kind != "f":
            raise TgirUserError(f"index: embeddings must be floats, got {embeddings.dtype}")
        self.embeddings = np.ascontiguousarray(embeddings, np.float32)
        if not np.isfinite(self.embeddings).all():
            bad = int(np.flatnonzero(~np.isfinite(self.embeddings).all(axis=1))[0])
            raise TgirUserError(f"index: embedding row {bad} has NaN or infinite values (in float32); "
                                "re-embed that image")
        if not all(isinstance(i, str) for i in ids):
            bad = next(i for i in ids if not isinstance(i, str))
            raise TgirUserError(f"index: ids must be strings, got {type(bad).__name__} {bad!r}")
        self.ids = ids
        self.fingerprint = fingerprint
        self.info = dict(info or {})
        self._faiss = None
        self._int8 = None
        self.threads = 0  # intra-op threads of the int8 search's ONNX Runtime session (0: its default)

    def __len__(self) -> int:
        return len(self.ids)

    def require_bundle(self, manifest: Manifest, *, backend: str | None = None) -> None:
        """Refuse to search with query embeddings of another bundle (they live in another space);
        ``backend`` as in ``bundle_fingerprint``."""
        want = bundle_fingerprint(manifest, backend=backend)
        if want != self.fingerprint:
            # the C runtime's AOTInductor objects embed in another space than the bundle's own graphs,
            # so the fix is an index built by that same runtime
            by = self.info.get("backend")
            if backend == "aoti":
                how = "rebuild it with `tgir index --backend c`"
            elif by == "c":
                how = "search with --backend c, or rebuild it with `tgir index` without --backend c"
            else:
                how = "rebuild it with `tgir index --bundle` for this bundle"
            built = f" with backend {by}" if isinstance(by, str) else ""
            raise TgirUserError(f"the index was built by another bundle or backend (fingerprint {self.fingerprint}"
                                f"{built}; this runtime's is {want}); {how}")

    def search(self, queries: np.ndarray, k: int = 10, method: str = "exact") -> SearchResult:
        """The ``k`` best rows for each query ``[Q, D]``, best first.

        Args:
            method: One of ``SEARCH_METHODS``; all return the same entries (see the module doc).

        Raises:
            TgirUserError: k outside 1..len(index), queries of another dimension or not finite, an
                unknown method, or a method whose package is missing.
        """
        if method not in SEARCH_METHODS:
            raise unknown_choice("search method", method, SEARCH_METHODS)
        k = top_k(k, len(self))
        queries = query_array(queries, self.embeddings.shape[1])
        if method == "faiss":
            indices, scores = self._faiss_search(queries, k)
        elif method == "int8":
            indices, scores = self.int8().search(queries, k)
        else:
            indices, scores = exact_search(queries, self.embeddings, k)
        return SearchResult(indices, scores, [[self.ids[i] for i in row] for row in indices])

    def int8(self):
        """The int8 searcher of this index (``tgir.runtime.int8_search.Int8Search``), built on first use."""
        if self._int8 is None:
            from tgir.runtime.int8_search import Int8Search

            self._int8 = Int8Search(self.embeddings, threads=self.threads)
        return self._int8

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            import faiss
        except ImportError:
            raise TgirUserError("FAISS search needs faiss-cpu: pip install -e \".[faiss]\"") from None
        if self._faiss is None:
            self._faiss = faiss.IndexFlatIP(self.embeddings.shape[1])
            self._faiss.add(self.embeddings)
        n = len(self)
        fetch = min(n, k + FAISS_MARGIN)
        scores, indices = self._faiss.search(np.ascontiguousarray(queries), fetch)
        order = np.lexsort((indices, -scores), axis=1)[:, :k]  # ties in gallery order, as exact_search
        top_idx = np.take_along_axis(indices, order, 1).astype(np.int64)
        top = np.take_along_axis(scores, order, 1)
        # a tie running past the rows FAISS returned may hide earlier rows of equal score: rank those exactly
        cut = np.flatnonzero(scores[:, k - 1] == scores[:, fetch - 1]) if fetch < n else []
        if len(cut):
            top_idx[cut], top[cut] = exact_search(queries[cut], self.embeddings, k)
        return top_idx, top

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "embeddings.npy", self.embeddings)
        (folder / "ids.json").write_text(json.dumps(self.ids) + "\n")
        meta = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "count": len(self),
                "dim": int(self.embeddings.shape[1]), **self.info}
        (folder / "index.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> GalleryIndex:
        """Read an index folder. Raises ``TgirUserError`` for a missing, partial, malformed or foreign folder."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "index.json").read_text())
            ids = json.loads((folder / "ids.json").read_text())
            emb = np.load(folder / "embeddings.npy", allow_pickle=False)
        except FileNotFoundError as err:
            raise TgirUserError(f"{folder}: not a finished tgir index ({Path(err.filename).name} missing); "
                                "build it with `tgir index`") from None
        except (ValueError, OSError) as err:
            raise TgirUserError(f"{folder}: unreadable index ({err})") from None
        _check_meta(folder / "index.json", meta)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise TgirUserError(f"{folder / 'ids.json'}: expected a JSON array of id strings")
        if emb.dtype.kind != "f":
            raise TgirUserError(f"{folder / 'embeddings.npy'}: expected float embeddings, got {emb.dtype}")
        if not np.isfinite(emb).all():
            raise TgirUserError(f"{folder / 'embeddings.npy'}: holds NaN or infinite values; rebuild the index")
        if len(ids) != meta["count"] or emb.shape != (meta["count"], meta["dim"]):
            raise TgirUserError(f"{folder}: index files disagree (ids, embeddings, index.json); rebuild it")
        info = {k: v for k, v in meta.items() if k not in ("format", "version", "fingerprint", "count", "dim")}
        return cls(emb, ids, meta["fingerprint"], info)


def _check_meta(path: Path, meta: object) -> None:
    """``index.json``: a tgir index of this version, with the types ``load`` and ``tgir search`` rely on."""
    if not isinstance(meta, dict):
        raise TgirUserError(f"{path}: expected a JSON object, got {json_type(meta)}")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise TgirUserError(f"{path.parent}: not a tgir index of version {VERSION}")
    for key, kind, want in (("fingerprint", str, "a string"), ("count", int, "an integer"),
                            ("dim", int, "an integer"), ("root", str, "a string")):
        value = meta.get(key, "" if key == "root" else None)  # root is optional
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TgirUserError(f"{path}: {key!r} must be {want}, got {json_type(value)}")


def exact_search(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product, ties in gallery order; ``(indices [Q, k], scores [Q, k])``.

    Queries are scored in chunks (at most ``CHUNK`` scores held at once), and each row sorts only
    the candidates at or above its k-th best score, so a large gallery costs O(G) per query.
    """
    n = gallery.shape[0]
    k = top_k(k, n)
    indices = np.empty((len(queries), k), np.int64)
    top = np.empty((len(queries), k), np.float32)
    step = max(1, CHUNK // max(n, 1))
    for start in range(0, len(queries), step):
        scores = queries[start:start + step] @ gallery.T  # [C, G]
        for row, s in enumerate(scores):
            # every candidate tied with the k-th best stays in, so gallery order can break the tie
            cand = np.flatnonzero(s >= np.partition(s, n - k)[n - k]) if k < n else np.arange(n)
            best = cand[np.lexsort((cand, -s[cand]))[:k]]
            indices[start + row], top[start + row] = best, s[best]
    return indices, top


def build_index(embed: Callable[[list[str]], np.ndarray], items: Sequence[str], ids: Sequence[str], out: str | Path,
                fingerprint: str, info: dict, progress: Callable[[int, int], None] | None = None) -> GalleryIndex:
    """Embed ``items`` in parts of ``PART_ROWS`` and write the index; resumes a build left unfinished.

    Args:
        embed: Computes ``[n, D]`` embeddings of a list of items (image paths).
        items: What to embed, in row order.
        ids: One id per item.
        out: Index folder.
        fingerprint: The embedding bundle's fingerprint (a resumed build must use the same bundle).
        info: Facts stored in ``index.json``.
    """
    out = require_writable(out, folder=True)
    parts = out / "parts"
    plan = {"fingerprint": fingerprint, "count": len(items), "ids": list(ids)}
    plan_file = parts / "plan.json"
    if plan_file.is_file() and _read_plan(plan_file) != plan:
        raise TgirUserError(f"{out}: holds an unfinished index of other images or another bundle; "
                            "remove the folder or choose another --out")
    try:
        parts.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(plan))
    except OSError as err:
        raise TgirUserError(f"{out}: cannot write there ({err.strerror or err})") from None
    starts = range(0, len(items), PART_ROWS)
    chunks = []
    for n, start in enumerate(starts, 1):
        file = parts / f"{start // PART_ROWS:06d}.npy"
        if not file.is_file():
            tmp = file.with_suffix(".tmp.npy")
            np.save(tmp, embed(list(items[start:start + PART_ROWS])))
            tmp.replace(file)  # a part exists only once complete
        chunks.append(np.load(file))
        if progress:
            progress(n, len(starts))
    index = GalleryIndex(np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32), ids, fingerprint, info)
    index.save(out)
    shutil.rmtree(parts)
    return index


def _read_plan(path: Path) -> object:
    """An unfinished build's plan, or None when it is unreadable (never a match, so the build is refused)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
