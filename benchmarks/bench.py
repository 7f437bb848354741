"""``tgir bench``: trtexec-style latency of each stage of text-guided retrieval on several backends in
one run, side by side, with recall in the same table.

    tgir bench --bundle /tmp/b/fp32 --bundle /tmp/b/int8 --batch 1,8,32 --data /tmp/css2d --json r.json
    tgir bench --target eager=torch:/tmp/b/fp32 --target int8=onnxruntime:/tmp/b/int8 \\
        --target eager-gpu=torch,device=cuda:/tmp/b/fp32 --iters 200 --plot r.png

A *target* is ``(label, backend, bundle, options)``. Backends (``BACKEND_OPTIONS``): ``torch`` (the
bundle's source checkpoint in PyTorch eager, FP32: how the research repositories run it),
``torch-compile`` (the same model through ``torch.compile``), ``onnxruntime`` (the bundle's graphs;
``provider=cpu|cuda``), ``aoti`` (the bundle's AOTInductor packages through torch's loader: libtgir's
kernels without building libtgir), ``c`` (libtgir through ctypes: AOTInductor packages or TensorRT
engines) and ``tensorrt`` (the bundle's engines from Python). Presets: ``cpu`` = torch, onnxruntime,
c; ``gpu`` = torch, torch-compile, onnxruntime, aoti and c on CUDA, and tensorrt.

Stages, per batch B (``bench_measure``): ``image_encode`` (B gallery images -> embeddings),
``query_compose`` (B reference images + texts -> query embeddings: image graph, tokenizer, text graph,
composer), ``search`` (B query embeddings against a gallery of G synthetic unit vectors, top k) and
``end_to_end`` (query_compose then search, as a server answers a request). Images are decoded before
timing; the timed part is preprocessing + graphs, as in a server that holds decoded pixels.

Each target runs in a fresh ``python -m tgir.benchmarks.bench_process --one JOB --out RESULT`` process, so
its peak RSS is its own and a backend that fails, or crashes the interpreter, is reported as
``failed`` (or ``skipped`` when this machine lacks what it needs) while the others still run.
Library code: no click; the command line (``tgir.cli.bench``) builds one frozen ``BenchConfig``.

Result (JSON, schema ``tgir-bench/1``): ``schema, date, command`` (an equivalent command line),
``machine`` (cpu, logical_cpus, physical_cores, memory_gib, os, python, gpus), ``versions``,
``config`` (the BenchConfig), ``inputs`` (what was timed and how), ``baseline`` (label or null),
``search_scaling`` (rows of ``search_scaling.search_scaling``), ``search_scaling_skipped`` (sizes the
deadline or a failure left out, whole or some of their batches), ``search_scaling_skip_reason`` (why),
``search_scaling_error`` (why it failed, else null), ``complete``
(false in the files rewritten after each target while the run goes on), ``wall_s`` and
``targets``: one row per target with ``label, backend, bundle, options, status`` ("ok";
"partial": stopped by its timeout or the deadline, or crashed, after measuring some stages, kept
in ``results``; "failed"; "skipped"), ``reason`` (null when ok), ``precision, device, versions,
threads, embed_dim, open_s, peak_rss_before_open_mib, peak_rss_mib, gpu_memory`` ({mib, source} on a GPU, else null),
``accuracy`` ({"R@1", "R@5", "R@10", "R@50", queries, gallery, ...} or {"error"} or null),
``notes, wall_s`` (``traceback`` for an unexpected failure) and ``results``: per batch and stage
``stage, batch, iters, mean_ms, std_ms, min_ms, max_ms, p50_ms, p90_ms, p99_ms,
throughput_per_s, first_call_ms, speedup_vs_baseline`` and ``gpu_split`` ({h2d_latency,
gpu_compute_time, d2h_latency}: summaries in ms, targets on CUDA: PyTorch, AOTInductor, TensorRT;
else null).
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tgir.runtime.index import SEARCH_METHODS

from tgir.errors import TgirUserError, unknown_choice

SCHEMA = "tgir-bench/1"
STAGES = ("image_encode", "query_compose", "search", "end_to_end")
PROGRESS_PREFIX = "@tgir-bench@ "
MEASURED = ("ok", "partial")  # statuses of rows with timings (partial: stopped part-way, see its reason)
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_INT = re.compile(r"^\d+$")
# backend -> option -> allowed values (None: checked by the pattern in _check_option)
BACKEND_OPTIONS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "torch": {"device": None, "threads": None},
    "torch-compile": {"device": None, "threads": None,
                      "mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")},
    "onnxruntime": {"provider": ("cpu", "cuda", "auto"), "threads": None,
                    "level": ("disable", "basic", "extended", "all"), "fused": ("on", "off")},
    "c": {"device": None, "threads": None, "engine": ("auto", "aoti", "tensorrt"), "library": ()},
    "aoti": {"device": None, "threads": None},
    "tensorrt": {"device": None},
}
COMMON_OPTIONS: dict[str, tuple[str, ...] | None] = {"search": SEARCH_METHODS}  # every backend takes these
PRESETS = {
    "cpu": ("torch", "onnxruntime", "c"),
    "gpu": ("torch,device=cuda", "torch-compile,device=cuda", "onnxruntime,provider=cuda", "aoti,device=cuda",
            "c,device=cuda",
            "tensorrt,device=cuda"),
}
CHECKPOINT_BACKENDS = ("torch", "torch-compile")  # run the bundle's source checkpoint, not its graphs


@dataclass(frozen=True)
class Target:
    """One thing to measure: a bundle on a backend with options (all values strings)."""

    label: str
    backend: str
    bundle: str
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str, default: str | None = None) -> str | None:
        return dict(self.options).get(name, default)

    def to_dict(self) -> dict:
        return {"label": self.label, "backend": self.backend, "bundle": self.bundle, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: dict) -> Target:
        return cls(data["label"], data["backend"], data["bundle"], tuple(data.get("options", {}).items()))


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run needs (frozen; the command line builds it once).

    Attributes:
        targets: What to measure, in table order.
        batches: Batch sizes; a batch above a bundle's max batch is split into graph calls by the runner.
        iters: Timed runs per stage and batch.
        warmup: Untimed runs before them.
        gallery: Items of the synthetic gallery that ``search`` and ``end_to_end`` search.
        k: Results per query.
        search: Search method of every target (``exact``, ``faiss``, ``int8``); a target's ``search`` wins.
        threads: CPU threads of every backend (0: each backend's default); a target's ``threads`` wins.
        data: CSS-2D (or ``dataset``) root: real inputs and, with ``accuracy``, recall on ``split``.
        accuracy: Score recall per target (needs ``data``).
        search_sizes: Gallery sizes of the numpy-vs-FAISS search scaling table (empty: skip it).
        search_iters: Timed runs per size and batch there.
        baseline: Label of the target speedups are relative to (None: the first ``torch`` target).
        isolate: One subprocess per target (own peak RSS, crash containment); False: in this process.
        timeout_s: Wall-clock limit of one target's subprocess (0: none).
        deadline_s: Wall-clock budget of the whole run (0: none), for machines lent by the minute: a
            target not started by then is reported ``skipped``, a running one (isolated) is stopped at
            it and keeps the rows it measured (status ``partial``), and search-scaling sizes not
            started by then are left out (``search_scaling_skipped``).
        seed: Seed of the synthetic images, texts and galleries.
    """

    targets: tuple[Target, ...]
    batches: tuple[int, ...] = (1, 8, 32)
    iters: int = 100
    warmup: int = 10
    gallery: int = 10_000
    k: int = 10
    search: str = "exact"
    threads: int = 0
    data: str | None = None
    dataset: str = "css2d"
    split: str = "test"
    accuracy: bool = True
    search_sizes: tuple[int, ...] = ()
    search_iters: int = 20
    baseline: str | None = None
    isolate: bool = True
    timeout_s: float = 0
    deadline_s: float = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.targets:
            raise TgirUserError("nothing to measure: give --bundle DIR (with --backend) or --target SPEC")
        labels = [t.label for t in self.targets]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise TgirUserError(f"two targets are labelled {dup[0]!r}; name them: --target LABEL=BACKEND:BUNDLE")
        if not self.batches or min(self.batches) < 1:
            raise TgirUserError(f"batch sizes must be >= 1, got {list(self.batches)}")
        limits = (("--iters", self.iters, 1), ("--warmup", self.warmup, 0), ("--gallery", self.gallery, 1),
                  ("-k", self.k, 1), ("--threads", self.threads, 0), ("--search-iters", self.search_iters, 1),
                  ("--timeout", self.timeout_s, 0), ("--deadline", self.deadline_s, 0))
        for flag, value, low in limits:
            if not math.isfinite(value) or value < low:  # nan passes every comparison; inf overflows timers
                raise TgirUserError(f"{flag} must be a finite number >= {low}, got {value}")
        if self.k > self.gallery or (self.search_sizes and self.k > min(self.search_sizes)):
            raise TgirUserError(f"-k {self.k} exceeds a gallery size ({self.gallery}, search sizes "
                                f"{list(self.search_sizes)})")
        if self.search not in SEARCH_METHODS:
            raise unknown_choice("search method", self.search, SEARCH_METHODS)
        if self.baseline is not None and self.baseline not in labels:
            raise unknown_choice("baseline target", self.baseline, labels)

    def baseline_label(self) -> str | None:
        """The target speedups refer to: ``baseline``, else the first PyTorch eager target."""
        return self.baseline or next((t.label for t in self.targets if t.backend == "torch"), None)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["targets"] = [t.to_dict() for t in self.targets]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> BenchConfig:
        data = dict(data)
        data["targets"] = tuple(Target.from_dict(t) for t in data["targets"])
        for key in ("batches", "search_sizes"):
            data[key] = tuple(data[key])
        return cls(**data)


# -- parsing the command line's strings (no click here) -------------------------------------------
def parse_ints(text: str, flag: str, allow_empty: bool = False) -> tuple[int, ...]:
    """``"1,8,32"`` -> ``(1, 8, 32)``; ``10K``/``1M`` suffixes are accepted (thousand, million).

    Raises:
        TgirUserError: Anything but positive integers separated by commas.
    """
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items and allow_empty:
        return ()
    out = []
    for item in items:
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:].lower(), 1)
        digits = item[:-1] if scale > 1 else item
        if not _INT.match(digits) or int(digits) * scale < 1:
            raise TgirUserError(f"{flag}: expected positive integers separated by commas (e.g. 1,8,32), got {text!r}")
        out.append(int(digits) * scale)
    if not out:
        raise TgirUserError(f"{flag}: expected positive integers separated by commas (e.g. 1,8,32), got {text!r}")
    return tuple(dict.fromkeys(out))


def _check_option(backend: str, key: str, value: str) -> None:
    allowed = {**BACKEND_OPTIONS[backend], **COMMON_OPTIONS}
    if key not in allowed:
        raise TgirUserError(f"backend {backend!r} has no option {key!r}; its options: {', '.join(allowed)}")
    choices = allowed[key]
    if choices:
        if value not in choices:
            raise unknown_choice(f"{backend} {key}", value, choices)
    elif key == "device" and not _DEVICE.match(value):
        raise TgirUserError(f"{backend} device must be cpu, cuda or cuda:N, got {value!r}")
    elif key == "threads" and not _INT.match(value):
        raise TgirUserError(f"{backend} threads must be an integer >= 0, got {value!r}")
    elif choices == () and not value:
        raise TgirUserError(f"{backend} {key} needs a value")


def parse_backends(text: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """``"torch,onnxruntime,provider=cuda"`` -> ``[("torch", ()), ("onnxruntime", (("provider", "cuda"),))]``.

    An item without ``=`` names a backend (or a preset: cpu, gpu); ``KEY=VALUE`` items are options of
    the backend before them.
    """
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if "=" in item:
            if not out:
                raise TgirUserError(f"--backend {text!r}: option {item!r} comes before any backend")
            key, _, value = item.partition("=")
            _check_option(out[-1][0], key.strip(), value.strip())
            out[-1][1].append((key.strip(), value.strip()))
        elif item in PRESETS:
            out += [(b, list(o)) for spec in PRESETS[item] for b, o in parse_backends(spec)]
        elif item in BACKEND_OPTIONS:
            out.append((item, []))
        else:
            raise unknown_choice("backend", item, [*BACKEND_OPTIONS, *PRESETS])
    if not out:
        raise TgirUserError(f"--backend {text!r}: no backend named")
    return [(b, tuple(o)) for b, o in out]


def _auto_label(backend: str, options: Iterable[tuple[str, str]], bundle: str | None) -> str:
    parts = [backend] + [v for k, v in options if k != "library" and v not in ("cpu", "default")]
    label = "-".join(p.replace(":", "") for p in parts)
    return f"{label}@{Path(bundle).name}" if bundle else label


def _split_spec(spec: str) -> tuple[str, str]:
    """``(head, bundle)`` split at the first ``:`` that is not a device's ``cuda:N``."""
    pos = 0
    while (i := spec.find(":", pos)) >= 0:
        if spec[:i].endswith("cuda") and re.match(r"\d+[,:]", spec[i + 1:]):
            pos = i + 1
            continue
        return spec[:i], spec[i + 1:]
    return spec, ""


def parse_target(spec: str) -> Target:
    """``[LABEL=]BACKEND[,KEY=VALUE...]:BUNDLE`` -> Target (label default: backend and option values).

    Raises:
        TgirUserError: Malformed spec, unknown backend or option.
    """
    head, bundle = _split_spec(spec)
    if not bundle or not head:
        raise TgirUserError(f"--target {spec!r}: expected [LABEL=]BACKEND[,KEY=VALUE...]:BUNDLE, "
                            "e.g. int8=onnxruntime:/tmp/b/int8 or gpu=torch,device=cuda:/tmp/b/fp32")
    first, _, rest = head.partition(",")
    label, eq, backend = first.partition("=")
    if not eq:
        label, backend = "", first
    if backend not in BACKEND_OPTIONS:
        raise unknown_choice("backend", backend, BACKEND_OPTIONS)
    options = []
    for item in (s.strip() for s in rest.split(",") if s.strip()):
        key, eq, value = item.partition("=")
        if not eq:
            raise TgirUserError(f"--target {spec!r}: option {item!r} is not KEY=VALUE")
        _check_option(backend, key, value)
        options.append((key, value))
    label = label.strip() or _auto_label(backend, options, None)
    if not re.match(r"^[\w.@+-]+$", label):
        raise TgirUserError(f"--target {spec!r}: labels are letters, digits and . _ @ + -, got {label!r}")
    return Target(label, backend, bundle, tuple(options))


def targets_from(bundles: Sequence[str], backends: Sequence[str], specs: Sequence[str]) -> tuple[Target, ...]:
    """The run's targets: every ``--bundle`` on every ``--backend`` (the PyTorch backends, which run the
    bundle's source checkpoint, on the first bundle only), then each ``--target``."""
    chosen = [b for text in (backends or ["cpu"]) for b in parse_backends(text)]
    targets = []
    for n, bundle in enumerate(bundles):
        for backend, options in chosen:
            if backend in CHECKPOINT_BACKENDS and n > 0:
                continue
            tag = bundle if len(bundles) > 1 and backend not in CHECKPOINT_BACKENDS else None
            targets.append(Target(_auto_label(backend, options, tag), backend, bundle, options))
    return tuple(targets) + tuple(parse_target(s) for s in specs)


def config_command(cfg: BenchConfig) -> str:
    """An equivalent ``tgir bench`` command line for this configuration (recorded in the results)."""
    args = ["tgir", "bench"]
    for t in cfg.targets:
        opts = "".join(f",{k}={v}" for k, v in t.options)
        args += ["--target", f"{t.label}={t.backend}{opts}:{t.bundle}"]
    defaults = BenchConfig(targets=cfg.targets)
    flags = {"batches": "--batch", "iters": "--iters", "warmup": "--warmup", "gallery": "--gallery", "k": "-k",
             "threads": "--threads", "search": "--search", "data": "--data", "dataset": "--dataset", "split": "--split",
             "search_sizes": "--search-sizes", "search_iters": "--search-iters", "baseline": "--baseline",
             "timeout_s": "--timeout", "deadline_s": "--deadline"}
    for name, flag in flags.items():
        value = getattr(cfg, name)
        if value != getattr(defaults, name) or name in ("batches", "iters", "warmup"):
            text = f"{value:g}" if isinstance(value, float) else str(value)
            args += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else text]
    args += [] if cfg.accuracy or not cfg.data else ["--no-accuracy"]
    args += [] if cfg.isolate else ["--no-isolate"]
    return shlex.join(args)


# -- running -----------------------------------------------------------------------------------------
Progress = Callable[[dict], None]


def run_bench(cfg: BenchConfig, progress: Progress | None = None,
              partial: Callable[[dict], None] | None = None) -> dict:
    """Measure every target (each in its own process unless ``cfg.isolate`` is False), then the search
    scaling table; returns the JSON-ready result (schema ``tgir-bench/1``, see the module docstring).

    Args:
        cfg: The run.
        progress: Called with each progress event (dicts with an ``event`` key).
        partial: Called after each target with the result so far (``complete`` False), so that a run
            cut short (a lent machine taken back, a session's end) still leaves its measurements.
    """
    from tgir.benchmarks.machine import machine_facts, versions
    from tgir.benchmarks.search_scaling import search_scaling

    emit = progress or (lambda event: None)
    started = time.time()
    end = time.monotonic() + cfg.deadline_s if cfg.deadline_s else None
    facts = {"machine": machine_facts(), "versions": versions()}  # once: nvidia-smi is a subprocess
    rows: list[dict] = []
    for n, target in enumerate(cfg.targets, 1):
        emit({"event": "target", "target": target.label, "index": n, "total": len(cfg.targets)})
        row = _measure(target, cfg, emit, end)
        emit({"event": "target_done", "target": target.label, "status": row["status"], "reason": row.get("reason")})
        rows.append(row)
        if partial:
            partial(_result(cfg, facts, rows, [], None, started, complete=False))
    scaling: list[dict] = []
    why: list[str] = []  # why sizes were left out: the deadline, or a failure

    def scaling_emit(event: dict) -> None:
        if event.get("event") == "search_scaling_skipped":
            why.append(event["reason"])
        emit(event)

    if cfg.search_sizes:
        from tgir.benchmarks.bench_measure import _one_line

        dim = next((r["embed_dim"] for r in rows if r.get("embed_dim")), 512)
        try:
            search_scaling(cfg.search_sizes, dim, cfg.batches, cfg.search_iters, min(cfg.warmup, 5),
                           cfg.k, scaling_emit, cfg.seed, cfg.threads, deadline=end, rows=scaling)
        except Exception as err:  # keep the targets' rows and the sizes done; say why the rest is missing
            why.append(f"failed: {_one_line(err)}")
            emit({"event": "search_scaling_failed", "reason": why[-1][len("failed: "):]})
    return _result(cfg, facts, rows, scaling, why[-1] if why else None, started, complete=True)


def _measure(target: Target, cfg: BenchConfig, emit: Progress, end: float | None) -> dict:
    """One target's row; ``skipped`` when the run's deadline (``end``, monotonic) has passed."""
    left = None if end is None else end - time.monotonic()
    if left is not None and left <= 0:
        return failed_row(target, "skipped", f"not started: the run's --deadline of {cfg.deadline_s:g} s was reached")
    if cfg.isolate:
        from tgir.benchmarks.bench_process import run_isolated

        return run_isolated(target, cfg, emit, left)
    from tgir.benchmarks.bench_measure import run_target

    return run_target(target, cfg, emit)


def _result(cfg: BenchConfig, facts: dict, rows: list[dict], scaling: list[dict], why: str | None,
            started: float, complete: bool) -> dict:
    """The JSON-ready result of the targets measured so far (``facts``: machine and versions; ``why``: why
    search scaling sizes are missing, ``failed: ...`` when it raised)."""
    rows = list(rows)  # a snapshot: the run goes on appending to its list
    baseline = cfg.baseline_label()
    add_speedups(rows, baseline)
    rows_of = Counter(s["gallery"] for s in scaling)
    skipped = [n for n in cfg.search_sizes if rows_of[n] < len(cfg.batches)] if complete else []
    inputs = {"source": f"{cfg.dataset} {cfg.split} split ({cfg.data})" if cfg.data else "synthetic",
              "images_decoded_before_timing": True,
              "timed": "preprocessing + tokenizer + graphs, and for search/end_to_end the top-k search",
              "search_gallery": f"{cfg.gallery} synthetic L2-normalised Gaussian vectors of the target's dimension",
              "search": "per target (its 'search'): exact = numpy (tgir.runtime.index.exact_search), faiss = "
                        "FAISS IndexFlatIP, int8 = tgir.runtime.int8_search (int8 scoring + certified re-rank)",
              "percentiles": "numpy.percentile method='linear' over the timed runs",
              "throughput": "batch / mean latency, items per second",
              "peak_rss": ("ru_maxrss of the target's own process after timing, before accuracy" if cfg.isolate
                           else "ru_maxrss of the one process running every target (cumulative)")}
    return {"schema": SCHEMA, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "command": config_command(cfg), **facts, "config": cfg.to_dict(), "inputs": inputs,
            "baseline": baseline, "targets": rows, "search_scaling": scaling, "search_scaling_skipped": skipped,
            "search_scaling_error": why[len("failed: "):] if why and why.startswith("failed: ") else None,
            "search_scaling_skip_reason": why if skipped else None, "complete": complete,
            "wall_s": round(time.time() - started, 1)}


def add_speedups(rows: list[dict], baseline: str | None) -> None:
    """``speedup_vs_baseline`` (baseline p50 / row p50) on every result row with a baseline row."""
    base = next((r for r in rows if r["label"] == baseline and r["status"] in MEASURED), None)
    ref = {(x["stage"], x["batch"]): x["p50_ms"] for x in base["results"]} if base else {}
    for row in rows:
        for res in row.get("results", []):
            b = ref.get((res["stage"], res["batch"]))
            res["speedup_vs_baseline"] = round(b / res["p50_ms"], 3) if b and res["p50_ms"] > 0 else None


def failed_row(target: Target, status: str, reason: str) -> dict:
    """The row of a target that produced no measurement."""
    return {**target.to_dict(), "status": status, "reason": reason, "results": []}
