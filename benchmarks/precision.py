"""Precision table: recall and ONNX Runtime CPU latency of FP32, INT8 (each observer and flavour) and
FP16 bundles of one model, on a dataset's test split.

    python -m tgir.benchmarks.precision --data DIR --bundle fp32=B1 --bundle int8_cpu_entropy=B2 ... \
        [--threads 1] [--latency-iters 200] [--out results.json]

Accuracy runs each bundle through ``tgir.runtime`` exactly as ``tgir eval --bundle`` does. The
ONNX Runtime graph optimisation level is chosen per bundle: the ``tensorrt`` INT8 flavour is scored
with optimisations off (``disable``), which computes its Q/DQ graph exactly as written, as TensorRT
does; ONNX Runtime's fused int8 x int8 CPU kernels saturate on CPUs without VNNI and would report a
loss TensorRT does not have. Every other bundle is scored as deployed (``all``). Latency is always
measured as deployed (``all``), per graph and for a whole query (image + text + composer), at
batch 1 and 32 on the same fixed inputs, after warm-up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort
from tgir.benchmarks.machine import machine_facts
from tgir.runtime.evaluate import evaluate_bundle
from tgir.runtime.ort import OrtOptions, OrtRunner

from tgir.cli.common import run_main
from tgir.data.registry import DATASETS, load_split


def scoring_level(runner: OrtRunner) -> str:
    """``disable`` for the TensorRT INT8 flavour (exact Q/DQ semantics), else ``all`` (as deployed)."""
    quant = runner.manifest.build.get("quantization", {})
    return "disable" if quant.get("flavour") == "tensorrt" else "all"


def _inputs(runner: OrtRunner, split, batch: int) -> dict:
    """Real inputs for one batch: the first ``batch`` queries' reference images and texts."""
    qs = split.queries[:batch]
    pixels = runner.pixels([split.images[q.ref].path for q in qs])
    ids, lengths = runner.tokenize([q.text for q in qs])
    return {"pixels": pixels, "ids": ids, "lengths": lengths}


def _timed(fn, iters: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    t = np.array(times)
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
            "mean_ms": round(float(t.mean()), 3)}


def latency(runner: OrtRunner, split, batch: int, iters: int, warmup: int) -> dict:
    """Per-graph and whole-query latency at ``batch`` on fixed real inputs."""
    feeds = _inputs(runner, split, batch)
    image = {"images": feeds["pixels"]}
    text = {"ids": feeds["ids"], "lengths": feeds["lengths"]}
    _, tokens = runner.encode_images(feeds["pixels"], tokens=True)
    text_out = runner.run("text_encoder", text)
    names = [t["name"] for t in runner.graphs["composer"]["inputs"]]
    comp = {k: v for k, v in {"tokens": tokens, **text_out}.items() if k in names}

    def query() -> None:
        runner.compose(runner.encode_images(feeds["pixels"], tokens=True)[1], feeds["ids"], feeds["lengths"])

    return {"batch": batch, "image_encoder": _timed(lambda: runner.run("image_encoder", image), iters, warmup),
            "text_encoder": _timed(lambda: runner.run("text_encoder", text), iters, warmup),
            "composer": _timed(lambda: runner.run("composer", comp), iters, warmup),
            "query": _timed(query, iters, warmup)}


def measure(name: str, bundle: str, split, threads: int, iters: int, warmup: int, accuracy: bool) -> dict:
    """Recall (at the scoring level) and latency (as deployed) of one bundle."""
    row: dict = {"name": name, "bundle": bundle}
    deployed = OrtRunner(bundle, OrtOptions(provider="cpu", threads=threads, level="all"))
    row["precision"] = deployed.manifest.precision
    row["quantization"] = deployed.manifest.build.get("quantization", {})
    if accuracy:
        level = scoring_level(deployed)
        scorer = deployed if level == "all" else OrtRunner(bundle, OrtOptions(provider="cpu", threads=0, level=level))
        result = evaluate_bundle(scorer, split, batch=32)
        row["scored_at_level"] = level
        row.update({k: result[k] for k in result if k.startswith("R@")})
        row["per_op"] = result.get("per_op", {})
    row["latency"] = [latency(deployed, split, b, iters if b == 1 else max(iters // 8, 10), warmup)
                      for b in (1, 32)]
    return row


@click.command()
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset root.")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="css2d", show_default=True,
              help="Format of --data.")
@click.option("--split", "split_name", default="test", show_default=True, help="Split scored and timed.")
@click.option("--bundle", "bundles", multiple=True, required=True, metavar="NAME=DIR", help="Repeatable.")
@click.option("--threads", default=1, show_default=True, help="Intra-op threads for the latency runs.")
@click.option("--latency-iters", default=200, show_default=True, help="Timed runs at batch 1 (batch 32: /8).")
@click.option("--warmup", default=20, show_default=True, help="Untimed runs before the timed ones.")
@click.option("--accuracy/--no-accuracy", default=True, show_default=True, help="Score recall on the split.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the rows as JSON here too.")
def main(data, dataset, split_name, bundles, threads, latency_iters, warmup, accuracy, out) -> None:
    """Measure recall and latency of several bundles of one model."""
    split = load_split(dataset, data, split_name)
    rows = []
    for item in bundles:
        name, _, folder = item.partition("=")
        click.echo(f"measuring {name} ({folder}) ...", err=True)
        rows.append(measure(name, folder, split, threads, latency_iters, warmup, accuracy))
        click.echo(json.dumps({k: v for k, v in rows[-1].items() if k.startswith("R@")}), err=True)
    facts = {"machine": machine_facts(), "onnxruntime": ort.__version__, "threads": threads,
             "date": time.strftime("%Y-%m-%d"), "data": data, "split": split_name}
    result = {"facts": facts, "rows": rows}
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    raise SystemExit(run_main(main, None, prog_name="python -m tgir.benchmarks.precision"))
