"""ONNX Runtime (CPU) vs PyTorch on real CSS-2D samples: embeddings and top-10 rankings.

Thresholds (fp32 graphs): max abs difference <= 1e-4 on the normalised gallery and query embeddings,
cosine >= 0.99999, and the same top-10 list for every query. Two candidates whose PyTorch scores
lie within ``TIE`` of each other may swap places (numerical noise cannot order true ties); any other
difference in a top-10 list is a failure. When no dataset is given, a small CSS-2D test split is
generated on the fly (the generator is deterministic and takes about a second).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tgir.runtime.base import Runner
from tgir.runtime.ort import OrtOptions, OrtRunner
from tgir.runtime.reference import TorchRunner

from tgir.data.records import RetrievalSplit
from tgir.data.registry import load_split
from tgir.manifest import Manifest

MAX_ABS = 1e-4
MIN_COSINE = 0.99999
TOP_K = 10
TIE = 1e-5


def _subset(split: RetrievalSplit, queries: int, gallery: int) -> tuple[list, list[int]]:
    """The first ``queries`` queries and a gallery of their targets topped up to ``gallery`` images."""
    chosen = split.queries[:queries]
    pool = split.gallery.tolist()
    keep = {q.target for q in chosen if q.target >= 0} & set(pool)
    for i in pool:
        if len(keep) >= gallery:
            break
        keep.add(i)
    return chosen, sorted(keep)


def _rank_mismatches(q_ref: np.ndarray, g_ref: np.ndarray, q_got: np.ndarray, g_got: np.ndarray) -> list[int]:
    """Queries whose top-k differs beyond ties (scores within ``TIE`` under the reference)."""
    ref_scores, got_scores = q_ref @ g_ref.T, q_got @ g_got.T  # [Q, G]
    k = min(TOP_K, ref_scores.shape[1])
    bad = []
    for i, (r, g) in enumerate(zip(ref_scores, got_scores, strict=True)):
        want, got = np.argsort(-r, kind="stable")[:k], np.argsort(-g, kind="stable")[:k]
        if not np.array_equal(want, got) and np.abs(r[want] - r[got]).max() > TIE:
            bad.append(i)
    return bad


def _stats(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    cos = (ref * got).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1) + 1e-12)
    return float(np.abs(ref - got).max()), float(cos.min())


def parity(folder: str | Path, checkpoint: str | Path, data: str | Path | None = None, dataset: str = "css2d",
           queries: int = 63, gallery: int = 300, batch: int = 7,
           progress: Callable[[int, int], None] | None = None) -> dict:
    """Compare a bundle's ONNX graphs on ONNX Runtime CPU with the checkpoint in PyTorch.

    Args:
        folder: The bundle (ONNX graphs + manifest.json).
        checkpoint: The checkpoint the bundle was exported from (its config digest must match).
        data: Dataset root whose test split supplies the samples; None: a small generated CSS-2D.
        queries: Test queries compared (in split order).
        gallery: Gallery images compared (the queries' targets first).
        batch: Batch size of every run (7: exercises a batch that is neither 1 nor a power of 2).

    Returns:
        Figures, thresholds and ``problems`` (a list; empty = parity holds).
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    runners = {"torch": TorchRunner(folder, checkpoint, manifest=manifest),
               "onnxruntime": OrtRunner(folder, OrtOptions(provider="cpu"), manifest)}
    with tempfile.TemporaryDirectory(prefix="tgir-parity-") as tmp:
        if data is None:
            from tgir.data.css2d import Css2dConfig, write_css2d

            write_css2d(Css2dConfig(scale=0.01), tmp)
            data = tmp
        split = load_split(dataset, str(data), "test")
        return _compare(runners, split, queries, gallery, batch, progress)


def _compare(runners: dict[str, Runner], split: RetrievalSplit, queries: int, gallery: int, batch: int,
             progress: Callable[[int, int], None] | None) -> dict:
    """Embed the same images and queries with every runner (the PyTorch reference, ONNX Runtime)."""
    chosen, pool = _subset(split, queries, gallery)
    reference = runners["torch"]
    order = sorted(set(pool) | {q.ref for q in chosen})  # every image once: gallery subset + references
    slot = {img: i for i, img in enumerate(order)}
    refs = {q.ref for q in chosen}
    steps = len(range(0, len(order), batch)) + len(range(0, len(chosen), batch))
    embedded, done = {"torch": [], "onnxruntime": []}, 0
    tokens = {"torch": {}, "onnxruntime": {}}  # reference image -> its tokens, per backend
    for start in range(0, len(order), batch):
        ids = order[start:start + batch]
        pixels = reference.pixels([split.images[i].path for i in ids])  # [b, 3, S, S]
        for name in embedded:
            g, t = runners[name].encode_images(pixels, tokens=True)
            embedded[name].append(g)
            tokens[name].update({img: t[k] for k, img in enumerate(ids) if img in refs})
        done += 1
        if progress:
            progress(done, steps)
    composed = {"torch": [], "onnxruntime": []}
    for start in range(0, len(chosen), batch):
        qs = chosen[start:start + batch]
        ids, lengths = reference.vocab.encode_batch([q.text for q in qs], reference.text_length)
        for name in composed:
            ref_tokens = np.stack([tokens[name][q.ref] for q in qs])  # [b, N, D] from this backend
            composed[name].append(runners[name].compose(ref_tokens, ids, lengths))
        done += 1
        if progress:
            progress(done, steps)
    in_pool = np.array([slot[i] for i in pool])
    g_ref, g_got = (np.concatenate(embedded[k])[in_pool] for k in ("torch", "onnxruntime"))
    q_ref, q_got = (np.concatenate(composed[k]) for k in ("torch", "onnxruntime"))
    return _report(g_ref, q_ref, g_got, q_got, batch)


def _report(g_ref, q_ref, g_got, q_got, batch: int) -> dict:
    g_abs, g_cos = _stats(g_ref, g_got)
    q_abs, q_cos = _stats(q_ref, q_got)
    bad = _rank_mismatches(q_ref, g_ref, q_got, g_got)
    problems = []
    for what, dev, cos in (("gallery", g_abs, g_cos), ("query", q_abs, q_cos)):
        if dev > MAX_ABS or cos < MIN_COSINE:
            problems.append(f"{what} embeddings: max abs diff {dev:.2e} (limit {MAX_ABS:.0e}), "
                            f"min cosine {cos:.6f} (limit {MIN_COSINE})")
    if bad:
        problems.append(f"top-{TOP_K} differs for {len(bad)} of {len(q_ref)} queries (first: query {bad[0]})")
    return {"queries": len(q_ref), "gallery": len(g_ref), "batch": batch,
            "gallery_max_abs": g_abs, "gallery_min_cosine": g_cos, "query_max_abs": q_abs, "query_min_cosine": q_cos,
            f"top{TOP_K}_identical": len(q_ref) - len(bad),
            "limits": {"max_abs": MAX_ABS, "min_cosine": MIN_COSINE, "tie": TIE}, "problems": problems}
