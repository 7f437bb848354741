"""Timing primitives of the benchmarks: per-iteration samples and their summary, trtexec style.

Every timed call is bracketed by ``time.perf_counter_ns`` after an optional synchronisation (on a
GPU, ``torch.cuda.synchronize``), so a sample is the host wall time of one complete call. Warm-up
calls run first and are not summarised; the first of them is kept as ``first_call_ms`` (cold start:
lazy initialisation, torch.compile's compilation, cuDNN autotuning).

Percentiles use numpy's ``method="linear"`` (Hyndman & Fan type 7, numpy's default): the p-th
percentile of n sorted samples x[0..n-1] is x[h] interpolated linearly, h = (n - 1) * p / 100.
Throughput is ``batch / mean latency`` (items per second), as trtexec derives it from the total
wall time of back-to-back runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

PERCENTILE_METHOD = "linear"
PERCENTILES = (50, 90, 99)


def _round(value: float, places: int = 4) -> float:
    return round(float(value), places)


def stats_ms(samples_ms: Sequence[float]) -> dict:
    """``mean/std/min/max/p50/p90/p99`` (milliseconds) of samples already in milliseconds.

    Raises:
        ValueError: No samples.
    """
    ms = np.asarray(samples_ms, np.float64)
    if ms.size == 0:
        raise ValueError("no timing samples to summarise")
    p = np.percentile(ms, PERCENTILES, method=PERCENTILE_METHOD)
    out = {"iters": int(ms.size), "mean_ms": _round(ms.mean()), "std_ms": _round(ms.std()),
           "min_ms": _round(ms.min()), "max_ms": _round(ms.max())}
    out.update({f"p{q}_ms": _round(v) for q, v in zip(PERCENTILES, p, strict=True)})
    return out


def summarize(samples_ns: Sequence[int], batch: int) -> dict:
    """Summary of per-iteration wall times in nanoseconds for a call handling ``batch`` items.

    Returns:
        ``iters, mean_ms, std_ms (population), min_ms, max_ms, p50_ms, p90_ms, p99_ms`` and
        ``throughput_per_s`` (= batch / mean, items per second).
    """
    out = stats_ms(np.asarray(samples_ns, np.float64) / 1e6)
    out["throughput_per_s"] = round(batch * 1e3 / out["mean_ms"], 2) if out["mean_ms"] > 0 else None
    return out


def timed_once(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> int:
    """Nanoseconds of one call of ``fn``, synchronised before the start and before the stop."""
    if sync:
        sync()
    start = time.perf_counter_ns()
    fn()
    if sync:
        sync()
    return time.perf_counter_ns() - start


def time_calls(fn: Callable[[], object], iters: int, warmup: int, sync: Callable[[], None] | None = None,
               before: Callable[[], None] | None = None, after: Callable[[], None] | None = None
               ) -> tuple[list[int], int]:
    """``(samples_ns, first_call_ns)``: ``warmup`` untimed calls, then ``iters`` timed ones.

    Args:
        fn: The call to time.
        iters: Timed calls (>= 1).
        warmup: Calls before them; the first call's time is returned either way.
        sync: Called before the clock starts and before it stops (a GPU's synchronize).
        before: Called before each timed call, outside the clock (e.g. start recording CUDA events).
        after: Called after each timed call, outside the clock (e.g. collect those events).
    """
    first = None
    for _ in range(warmup):
        took = timed_once(fn, sync)
        first = took if first is None else first
    samples = []
    for _ in range(iters):
        if before:
            before()
        samples.append(timed_once(fn, sync))
        if after:
            after()
    return samples, samples[0] if first is None else first
