"""PyTorch's OpenMP pool and numpy's BLAS pool on the same cores: a PyTorch op, then numpy's exact
search, timed alone and back to back (a server that composes a query in PyTorch and searches a
numpy gallery does this). Both pools spin after their work; on shared cores they starve each other
until the scheduler's tick. Set ``OPENBLAS_NUM_THREADS`` / ``OMP_WAIT_POLICY`` before running to
compare (they take effect at import only).

Usage::

    python -m tgir.benchmarks.thread_contention --torch-threads 2
    OPENBLAS_NUM_THREADS=1 python -m tgir.benchmarks.thread_contention --torch-threads 2
"""

from __future__ import annotations

import json
from collections.abc import Callable

import click
import numpy as np
import torch
from tgir.benchmarks.machine import machine_facts
from tgir.benchmarks.timing import time_calls
from tgir.runtime.index import exact_search

from tgir.cli.common import run_main


def median_ms(call: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time of ``call`` in ms over ``runs`` calls after ``warmup`` untimed ones."""
    samples, _ = time_calls(call, runs, warmup)
    return float(np.median(samples)) / 1e6


@torch.no_grad()
def contention(torch_threads: int, runs: int = 30, gallery: int = 10_000, dim: int = 512) -> dict:
    """``{"conv_ms", "search_ms", "conv_then_search_ms"}``: a 3x3 conv on [1, 256, 32, 32] in PyTorch,
    one query's top 10 over ``gallery`` x ``dim`` in numpy, and the two back to back (medians)."""
    torch.set_num_threads(torch_threads)
    torch.manual_seed(0)
    rows = np.random.default_rng(0).standard_normal((gallery, dim)).astype(np.float32)  # [G, D]
    query = rows[:1].copy()  # [1, D]
    image = torch.randn(1, 256, 32, 32)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval()
    return {"torch_threads": torch.get_num_threads(),
            "conv_ms": round(median_ms(lambda: conv(image), runs), 3),
            "search_ms": round(median_ms(lambda: exact_search(query, rows, 10), runs), 3),
            "conv_then_search_ms": round(median_ms(lambda: (conv(image), exact_search(query, rows, 10)), runs), 3)}


@click.command()
@click.option("--torch-threads", default=0, show_default=True, help="PyTorch intra-op threads (0: one per core).")
@click.option("--runs", default=30, show_default=True, help="Timed runs of each case (the median is reported).")
def main(torch_threads: int, runs: int) -> None:
    """Time a conv (PyTorch's thread pool), an exact search (numpy's BLAS pool) and the two back to back:
    the third above the sum of the first two means the pools stall each other (set OPENBLAS_NUM_THREADS=1)."""
    threads = torch_threads or torch.get_num_threads()
    result = {**contention(threads, runs), "thread_env": machine_facts()["thread_env"], "torch": torch.__version__}
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    raise SystemExit(run_main(main, None, prog_name="python -m tgir.benchmarks.thread_contention"))
