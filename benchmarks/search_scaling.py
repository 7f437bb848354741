"""Search scaling: exact numpy top-k (``tgir.runtime.index.exact_search``) against FAISS's flat
inner-product index (``faiss.IndexFlatIP``, exact as well) and tgir's int8 search
(``tgir.runtime.int8_search``: int8 scores, certified float32 re-rank) on galleries of synthetic
embeddings.

The galleries are L2-normalised Gaussian vectors (seeded), the queries likewise; all searches
return the same entries on such data (ties have probability zero), which each row checks
(``same_topk``, ``int8_same_topk``: share of identical top-k lists). Index builds (FAISS copying
the gallery in; int8 quantizing it and making its ONNX Runtime session) are timed once and
reported apart; ``int8_candidates`` is the mean number of rows re-scored in float32 per query.
A gallery of 1M x 512 float32 is 2 GiB, held twice while FAISS has its copy; its int8 codes add
0.5 GiB.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from tgir.benchmarks.timing import summarize, time_calls
from tgir.runtime.index import exact_search
from tgir.runtime.int8_search import Int8Search

ROWS_PER_CHUNK = 65_536


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """``[n, dim]`` float32 L2-normalised Gaussian rows, made in chunks (no float64 temporaries)."""
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, ROWS_PER_CHUNK):
        part = rng.standard_normal((min(ROWS_PER_CHUNK, n - start), dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        out[start:start + len(part)] = part
    return out


def faiss_module():
    """``faiss`` or None when faiss-cpu is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def search_scaling(sizes: Sequence[int], dim: int, batches: Sequence[int], iters: int, warmup: int, k: int,
                   progress: Callable[[dict], None] | None = None, seed: int = 0, threads: int = 0,
                   deadline: float | None = None, rows: list[dict] | None = None) -> list[dict]:
    """Per gallery size and batch: latency summaries of exact numpy and FAISS flat search.

    ``deadline`` (a ``time.monotonic()`` value): sizes and batches not started by then are left out, and
    so is a size that the previous one's wall time says would not end by then (a ``search_scaling_skipped``
    progress event gives the reason). ``rows``: a list to append to (and return), so a caller keeps the
    sizes done when a later one raises.

    Returns:
        Rows ``{"gallery", "dim", "batch", "k", "exact": summary, "faiss": summary | None,
        "faiss_build_s", "same_topk", "faiss_threads", "faiss_reason", "int8": summary, "int8_build_s",
        "int8_same_topk", "int8_candidates"}``; ``faiss`` is None (with the reason) when faiss-cpu is
        missing. ``threads`` > 0 sets FAISS's OpenMP threads and the int8 session's intra-op threads
        (numpy's BLAS keeps its own setting, e.g. OPENBLAS_NUM_THREADS).
    """
    faiss = faiss_module()
    if faiss is not None and threads:
        faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    queries = unit_rows(rng, max(batches), dim)
    rows = [] if rows is None else rows
    spent: tuple[int, float] | None = None  # (size, seconds) of the last size measured: the next one's estimate
    for n, size in enumerate(sizes):
        why = _no_time_for(size, deadline, spent)
        if why:
            if progress:
                progress({"event": "search_scaling_skipped", "sizes": list(sizes[n:]), "reason": why})
            break
        start = time.monotonic()
        gallery = unit_rows(rng, size, dim)  # [size, dim]; 1M rows take seconds: look at the clock again
        why = _no_time_for(size, deadline, None)
        if why:
            if progress:
                progress({"event": "search_scaling_skipped", "sizes": list(sizes[n:]), "reason": why})
            break
        rows.extend(_one_size(gallery, queries, batches, iters, warmup, k, faiss, progress, threads, deadline))
        spent = (size, time.monotonic() - start)
    return rows


def _no_time_for(size: int, deadline: float | None, spent: tuple[int, float] | None) -> str | None:
    """Why a gallery of ``size`` is not started before ``deadline`` (monotonic), or None to start it.

    A size that starts runs its builds to the end, so it is only started when the last size's wall
    time, scaled linearly (making the gallery, both index builds and every scan grow with its rows),
    says it ends in time: 1M rows after 100K would otherwise overrun a lent machine's deadline by minutes.
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        return "the run's --deadline was reached"
    if spent is not None:
        estimate = spent[1] * size / spent[0]
        if estimate > left:
            return (f"a {size:,} gallery would take about {estimate:.0f} s (the {spent[0]:,} one took "
                    f"{spent[1]:.1f} s), {left:.0f} s were left before the run's --deadline")
    return None


def _one_size(gallery: np.ndarray, queries: np.ndarray, batches: Sequence[int], iters: int, warmup: int, k: int,
              faiss, progress: Callable[[dict], None] | None, threads: int = 0,
              deadline: float | None = None) -> list[dict]:
    """Rows of one gallery size, a batch at a time; batches not started by ``deadline`` are left out."""
    size, dim = gallery.shape
    start = time.perf_counter()
    int8 = Int8Search(gallery, threads)
    int8_build_s = round(time.perf_counter() - start, 4)
    index, build_s = None, None
    if faiss is not None:
        start = time.perf_counter()
        index = faiss.IndexFlatIP(dim)
        index.add(gallery)
        build_s = round(time.perf_counter() - start, 4)
    rows = []
    for n, batch in enumerate(batches):
        if deadline is not None and time.monotonic() >= deadline:
            if progress:
                progress({"event": "search_scaling_skipped", "sizes": [size], "batches": list(batches[n:]),
                          "reason": "the run's --deadline was reached"})
            break
        q = np.ascontiguousarray(queries[:batch])
        samples, _ = time_calls(lambda q=q: exact_search(q, gallery, k), iters, warmup)
        row = {"gallery": size, "dim": dim, "batch": batch, "k": k, "exact": summarize(samples, batch),
               "faiss": None, "faiss_build_s": build_s, "same_topk": None,
               "faiss_threads": faiss.omp_get_max_threads() if faiss else None,
               "faiss_reason": None if faiss else "faiss-cpu is not installed (pip install faiss-cpu)"}
        if index is not None:
            samples, _ = time_calls(lambda q=q: index.search(q, k), iters, warmup)
            row["faiss"] = summarize(samples, batch)
            mine, theirs = exact_search(q, gallery, k)[0], index.search(q, k)[1]
            row["same_topk"] = _same(mine, theirs)
        samples, _ = time_calls(lambda q=q: int8.search(q, k), iters, warmup)
        ours = int8.search(q, k)[0]
        row.update(int8=summarize(samples, batch), int8_build_s=int8_build_s,
                   int8_same_topk=_same(exact_search(q, gallery, k)[0], ours),
                   int8_candidates=round(int8.stats.candidates / max(int8.stats.queries, 1), 1))
        rows.append(row)
        if progress:
            progress({"event": "search_scaling", "gallery": size, "batch": batch,
                      "exact_p50_ms": row["exact"]["p50_ms"],
                      "faiss_p50_ms": row["faiss"]["p50_ms"] if row["faiss"] else None,
                      "int8_p50_ms": row["int8"]["p50_ms"]})
    return rows


def _same(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose top-k index lists are identical."""
    return round(float(np.mean([(x == y).all() for x, y in zip(a, b, strict=True)])), 4)
