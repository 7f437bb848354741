"""Composer latency at batch 1 for AMC's three router designs, with the share of experts skipped.

Designs: ``if`` (each expert inside an ONNX ``If``), ``dense`` (every expert computed, gates
applied) and ``host`` (a router graph and one graph per expert; the host runs only needed experts).
Inputs are real CSS-2D test queries: reference-image tokens and text features from the checkpoint.
All three must give the same query embeddings (max abs <= 1e-4, checked before timing).

Usage::

    python -m tgir.benchmarks.router_designs --checkpoint trained/amc_css2d.pt --data /tmp/css2d_full \\
        --queries 2000 --threads 1 --out router_designs.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort
import torch
from tgir.benchmarks.machine import machine_facts

from tgir.cli.common import run_main
from tgir.data.images import load_image
from tgir.data.registry import load_split
from tgir.errors import TgirUserError
from tgir.training.checkpoint import model_from_checkpoint
from tgir.training.embed import preprocess_for

PARITY = 1e-4


@torch.no_grad()
def composer_inputs(checkpoint: str, data: str | None, queries: int) -> tuple[list, dict]:
    """Per query (batch 1): ``(tokens [1, N, D], text [1, D])`` from the checkpoint's encoders."""
    model, ckpt = model_from_checkpoint(checkpoint)
    if model.config.family != "amc":
        raise TgirUserError(f"router designs need an AMC checkpoint; {checkpoint} is {model.config.family!r}")
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            from tgir.data.css2d import Css2dConfig, write_css2d

            write_css2d(Css2dConfig(scale=0.05), tmp)
            data = tmp
        split = load_split("css2d", data, "test")
        chosen = split.queries[:queries]
        prep, vocab = preprocess_for(model), ckpt.vocab
        out = []
        for q in chosen:
            _, tokens = model.encode_image(torch.from_numpy(prep(load_image(split.images[q.ref].path)))[None])
            ids, lengths = vocab.encode_batch([q.text])
            (text,) = model.encode_text(torch.from_numpy(ids), torch.from_numpy(lengths))
            out.append((tokens.numpy(), text.numpy()))
    return out, {"queries": len(out), "data": str(data) if data else "generated CSS-2D (scale 0.05)"}


def _options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def build_designs(checkpoint: str, folder: Path, threads: int) -> tuple[dict, object, list]:
    """Export the three designs under ``folder``; returns callables ``(tokens, text) -> query``."""
    from tgir.export.host_routed import HostRoutedComposer, host_routed_from_model
    from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

    designs = {}
    for form in ("if", "dense"):
        onnx_from_checkpoint(checkpoint, folder / form, OnnxConfig(router=form))
        session = ort.InferenceSession(str(folder / form / "composer.onnx"), _options(threads),
                                       providers=["CPUExecutionProvider"])
        designs[form] = (lambda s: lambda tokens, text: s.run(None, {"tokens": tokens, "text_features": text})[0])(
            session)
    model, _ = model_from_checkpoint(checkpoint)
    spec = host_routed_from_model(model, folder / "host")
    host = HostRoutedComposer(folder / "host", spec, _options(threads))
    designs["host"] = host
    return designs, host, spec["experts"]


def time_design(run, inputs: list, warmup: int) -> dict:
    for tokens, text in inputs[:warmup]:
        run(tokens, text)
    times = []
    for tokens, text in inputs:
        start = time.perf_counter()
        run(tokens, text)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4)}


def _check_equal(designs: dict, inputs: list) -> float:
    worst = 0.0
    for tokens, text in inputs[:50]:
        outs = [run(tokens, text) for run in designs.values()]
        worst = max(worst, *(float(np.abs(o - outs[0]).max()) for o in outs[1:]))
    if worst > PARITY:
        raise RuntimeError(f"router designs disagree: max abs {worst:.2e} > {PARITY}")
    return worst


@click.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="AMC checkpoint [default: the shipped trained/amc_css2d.pt, wherever this is run from].")
@click.option("--data", type=click.Path(file_okay=False), help="CSS-2D root (default: a generated small test split).")
@click.option("--queries", default=2000, show_default=True, help="Test queries timed, each alone (batch 1).")
@click.option("--threads", default=1, show_default=True, help="ONNX Runtime intra-op threads.")
@click.option("--warmup", default=20, show_default=True, help="Untimed runs of each design first.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
def main(checkpoint, data, queries, threads, warmup, out) -> None:
    """Time the composer for the three router designs on CSS-2D test queries at batch 1."""
    if checkpoint is None:
        from tgir.export.build import shipped_checkpoint

        checkpoint = str(shipped_checkpoint())
    inputs, facts = composer_inputs(checkpoint, data, queries)
    with tempfile.TemporaryDirectory(prefix="tgir-router-") as tmp:
        designs, host, experts = build_designs(checkpoint, Path(tmp), threads)
        worst = _check_equal(designs, inputs)
        skipped = skip_shares(host, inputs)  # [layers, experts]
        results = {name: time_design(run, inputs, warmup) for name, run in designs.items()}
    result = {**facts, "checkpoint": checkpoint, "threads": threads, "designs": results, "max_abs_between": worst,
              "skipped": {f"layer{k + 1}": dict(zip(experts, map(float, row), strict=True))
                          for k, row in enumerate(skipped.round(4))},
              "skipped_overall": dict(zip(experts, map(float, skipped.mean(0).round(4)), strict=True)),
              "machine": machine_facts(), "onnxruntime": ort.__version__,
              "date": time.strftime("%Y-%m-%d")}
    click.echo(json.dumps(result, indent=2))
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


def skip_shares(host, inputs: list) -> np.ndarray:
    """Share of expert executions the host-routed design skips, per layer and expert, at batch 1."""
    host.executed[:], host.calls = 0, 0
    for tokens, text in inputs:
        host(tokens, text)
    return 1 - host.executed / host.calls


if __name__ == "__main__":
    raise SystemExit(run_main(main, None, prog_name="python -m tgir.benchmarks.router_designs"))
