"""``tgir bench``: latency of every retrieval stage on several backends side by side, recall beside it."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click

from tgir.data.registry import DATASETS
from tgir.errors import TgirUserError
from tgir.runtime.index import SEARCH_METHODS

TARGET_HELP = """\b
Targets: --bundle DIR (repeatable) x --backend LIST, and/or --target SPEC (repeatable).
  --backend: comma-separated backends or presets, each followed by its KEY=VALUE options:
    torch          PyTorch eager of the bundle's source checkpoint, FP32 (device=cpu|cuda[:N], threads=N)
    torch-compile  the same through torch.compile (device, mode=default|reduce-overhead|max-autotune, threads)
    onnxruntime    the bundle's graphs (provider=cpu|cuda, level=all|extended|basic|disable, threads,
                   fused=on|off: whole queries through the bundle's fused query graph when it has one)
    aoti           the bundle's AOTInductor packages (tgir-export aoti) through torch's loader
                   (device=cpu|cuda[:N], threads): libtgir's kernels, no libtgir build needed
    c              libtgir via ctypes: AOTInductor packages (tgir-export aoti) or engines
                   (device=cpu|cuda[:N], engine=auto|aoti|tensorrt, library=PATH, threads)
    tensorrt       the bundle's TensorRT engines (device=cuda[:N])
    presets: cpu = torch,onnxruntime,c (the default); gpu = the six on CUDA.
    PyTorch backends run the source checkpoint, so they are measured on the first --bundle only.
  --target [LABEL=]BACKEND[,KEY=VALUE...]:BUNDLE, e.g. int8=onnxruntime:/tmp/b/int8,
    gpu-eager=torch,device=cuda:/tmp/b/fp32.
Targets this machine or bundle cannot run are reported 'skipped' with the reason; one that
fails is reported 'failed', and the others still run (each runs in its own process). Missing
bundles or --data and unwritable output files are refused before anything is measured; the
command exits 1 when no target measured anything.

\b
Stages per batch B: image_encode (B gallery images), query_compose (B reference images + texts ->
query embeddings), search (B queries against --gallery synthetic embeddings, top -k) and
end_to_end (query_compose + search). Images are decoded before timing (real CSS-2D test images
with --data, else seeded random pixels); the timed part is preprocessing + graphs. When PyTorch
uses every core (--threads 0), set OPENBLAS_NUM_THREADS=1: numpy's BLAS pool (the search) and
PyTorch's spinning beside it stall both (python -m tgir.benchmarks.thread_contention); with
--threads 1 leave it (a one-thread search is slower). Thread settings go into the JSON.

\b
Output: a Markdown table on stdout (ready for benchmarks/RESULTS.md), --json FILE (schema
"tgir-bench/1": machine, versions, config, per target status/reason, precision, device, peak RSS,
GPU memory, recall, and per stage and batch mean/p50/p90/p99 ms, throughput, speedup vs eager,
and on CUDA the H2D / GPU compute / D2H split), --plot FILE.png (needs matplotlib).
"""


@click.command("bench", help="Benchmark latency (trtexec style) and recall of bundles on several backends.\n\n"
               + TARGET_HELP)
@click.option("--bundle", "bundles", multiple=True, type=click.Path(file_okay=False), help="Bundle (repeatable).")
@click.option("--backend", "backends", multiple=True, metavar="LIST",
              help="Backends for every --bundle, e.g. cpu, gpu, torch,onnxruntime,threads=1 (repeatable). "
              "[default: cpu]")
@click.option("--target", "targets", multiple=True, metavar="SPEC",
              help="[LABEL=]BACKEND[,K=V...]:BUNDLE (repeatable).")
@click.option("--batch", "batch", default="1,8,32", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--iters", default=100, show_default=True, help="Timed runs per stage and batch.")
@click.option("--warmup", default=10, show_default=True, help="Untimed runs before them.")
@click.option("--gallery", default=10_000, show_default=True, help="Synthetic gallery size for search.")
@click.option("-k", "k", default=10, show_default=True, help="Results per query.")
@click.option("--search", "method", type=click.Choice(SEARCH_METHODS), default="exact", show_default=True,
              help="Search method of every target (a target's search=... wins): numpy, FAISS flat, or int8 "
                   "scoring with an exact re-rank (same results).")
@click.option("--threads", default=0, show_default=True, help="CPU threads of every backend (0: its default).")
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root: real inputs and recall per target.")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="css2d", show_default=True,
              help="Format of --data.")
@click.option("--split", default="test", show_default=True, help="Split of --data to use.")
@click.option("--accuracy/--no-accuracy", default=True, show_default=True, help="Score R@1/R@10 (with --data).")
@click.option("--search-sizes", default="", metavar="LIST",
              help="Also time exact numpy vs FAISS search on galleries of these sizes, e.g. 10K,100K,1M.")
@click.option("--search-iters", default=20, show_default=True, help="Timed runs per size and batch there.")
@click.option("--baseline", metavar="LABEL", help="Target speedups refer to [default: the first torch target].")
@click.option("--isolate/--no-isolate", default=True, show_default=True,
              help="One process per target (own peak RSS; crashes contained) or all in this one.")
@click.option("--timeout", default=0.0, show_default=True, help="Seconds one target may take (0: no limit).")
@click.option("--deadline", default=0.0, show_default=True,
              help="Seconds the whole run may take (0: no limit): later targets are skipped, a running one is "
                   "stopped (with --isolate) and keeps what it measured, and --json/--markdown are rewritten "
                   "after each target.")
@click.option("--seed", default=0, show_default=True, help="Seed of synthetic inputs and galleries.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON ('-': stdout).")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), help="Write the Markdown table here too.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), help="Write a PNG: latency vs batch, R@1 vs p50.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def bench(bundles, backends, targets, batch, iters, warmup, gallery, k, method, threads, data, dataset, split, accuracy,
          search_sizes, search_iters, baseline, isolate, timeout, deadline, seed, json_out, md_out, plot_out,
          quiet) -> None:
    from tgir.benchmarks.bench import BenchConfig, parse_ints, run_bench, targets_from
    from tgir.benchmarks.bench_report import plot, require_matplotlib

    if backends and not bundles:
        raise TgirUserError("--backend applies to --bundle; give --bundle DIR, or use --target SPEC")
    if plot_out:
        require_matplotlib()
    cfg = BenchConfig(targets=targets_from(bundles, backends, targets), batches=parse_ints(batch, "--batch"),
                      iters=iters, warmup=warmup, gallery=gallery, k=k, search=method, threads=threads, data=data,
                      dataset=dataset, split=split, accuracy=accuracy and bool(data),
                      search_sizes=parse_ints(search_sizes, "--search-sizes", allow_empty=True),
                      search_iters=search_iters, baseline=baseline, isolate=isolate, timeout_s=timeout,
                      deadline_s=deadline, seed=seed)
    files = (None if json_out == "-" else json_out, md_out)
    _check_inputs(cfg, {"--json": files[0], "--markdown": md_out, "--plot": plot_out})
    result = run_bench(cfg, None if quiet else _progress, lambda part: _write(part, *files))
    table = _write(result, *files)
    click.echo(json.dumps(result, indent=2) if json_out == "-" else table, nl=json_out == "-")
    if plot_out:
        plot(result, plot_out)
    written = [p for p in (json_out, md_out, plot_out) if p and p != "-"]
    if written and not quiet:
        click.echo(f"written: {', '.join(written)}", err=True)
    _exit_when_nothing_measured(result)


def _check_inputs(cfg, outputs: dict[str, str | None]) -> None:
    """Refuse, before minutes of measuring, what would make the run useless: a bundle or --data folder
    that is not there, a dataset split that does not load, an output file that cannot be written."""
    for target in cfg.targets:
        bundle = Path(target.bundle)
        if not bundle.is_dir():
            raise TgirUserError(f"target {target.label!r}: bundle {bundle}: no such folder")
        if not (bundle / "manifest.json").is_file():
            raise TgirUserError(f"target {target.label!r}: {bundle} is not a tgir bundle (no manifest.json; "
                                "tgir-export build-engine writes one)")
    if cfg.data:
        if not Path(cfg.data).is_dir():
            raise TgirUserError(f"--data {cfg.data}: no such folder")
        from tgir.data.registry import load_split

        load_split(cfg.dataset, cfg.data, cfg.split)  # its errors say what is wrong with the folder
    for flag, path in outputs.items():
        if path:
            _check_writable(flag, Path(path))


def _check_writable(flag: str, path: Path) -> None:
    """An unwritable output fails here, not after the measurements (``_write`` makes no folders)."""
    from tgir.manifest import require_writable

    if not path.parent.is_dir():
        raise TgirUserError(f"{flag} {path}: folder {path.parent} does not exist")
    try:
        require_writable(path)
    except TgirUserError as err:
        raise TgirUserError(f"{flag} {err}") from None


def _exit_when_nothing_measured(result: dict) -> None:
    """Exit 1 (after the table and files are written) when no target measured anything."""
    from tgir.benchmarks.bench import MEASURED

    rows = result["targets"]
    if rows and not any(r["status"] in MEASURED for r in rows):
        counts = Counter(r["status"] for r in rows)
        raise TgirUserError("no target was measured (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                            + "); the table lists why")


def _write(result: dict, json_out: str | None, md_out: str | None) -> str:
    """Write the result (whole or so far) to the files asked for, each replaced at once; returns the
    Markdown table."""
    from tgir.benchmarks.bench_report import markdown

    table = markdown(result)
    for path, text in ((json_out, json.dumps(result, indent=2) + "\n"), (md_out, table)):
        if path:
            tmp = Path(path).with_name(Path(path).name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
    return table


def _progress(event: dict) -> None:
    """One line per step on stderr (readable in logs as on a terminal)."""
    kind = event.get("event")
    if kind == "target":
        line = f"[{event['index']}/{event['total']}] {event['target']}"
    elif kind == "open":
        line = f"    opened in {event['open_s']:.2f} s on {event['device']}"
    elif kind == "stage":
        line = (f"    {event['stage']:<14} batch {event['batch']:>4}: p50 {event['p50_ms']:9.3f} ms  "
                f"p99 {event['p99_ms']:9.3f} ms  ({event['done']}/{event['total']})")
    elif kind == "accuracy":
        line = f"    recall on {event['queries']} queries ..."
    elif kind == "target_done":
        if event["status"] == "ok":
            return
        line = f"    {event['status']}: {event['reason']}"
    elif kind == "search_scaling":
        faiss = "-" if event["faiss_p50_ms"] is None else f"{event['faiss_p50_ms']:.3f} ms"
        line = (f"search scaling: gallery {event['gallery']:,} batch {event['batch']}: numpy p50 "
                f"{event['exact_p50_ms']:.3f} ms, FAISS p50 {faiss}, int8 p50 {event.get('int8_p50_ms', 0):.3f} ms")
    elif kind == "search_scaling_failed":
        line = f"search scaling failed: {event['reason']}"
    elif kind == "search_scaling_skipped":
        sizes = ", ".join(f"{n:,}" for n in event["sizes"])
        batches = f" batches {', '.join(map(str, event['batches']))}" if event.get("batches") else ""
        line = f"search scaling: not measured: gallery {sizes}{batches} ({event.get('reason', 'deadline reached')})"
    else:
        return
    click.echo(line, err=True)
    sys.stderr.flush()
