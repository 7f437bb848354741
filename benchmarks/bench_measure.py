"""One target of ``tgir bench``, measured in the process that runs it (``bench`` starts one per target).

Order: open the runner (timed: ``open_s``), decode the inputs, then for every batch each stage
(``image_encode``, ``query_compose``, ``search``, ``end_to_end``): warm-up runs, timed runs, summary.
Peak RSS is read after timing, before the optional recall run, which embeds a whole split.

On CUDA, every timed call is bracketed by ``torch.cuda.synchronize`` for the PyTorch targets;
the other runners hand back host arrays, so their calls end synchronised. PyTorch targets on CUDA
also record CUDA events around each graph call's copy in, model and copy out: the split trtexec
reports as H2D Latency, GPU Compute Time and D2H Latency (per timed run, summed over the graph
calls of that run). GPU memory: PyTorch's allocator peak for PyTorch targets, else the process's
``used_memory`` as nvidia-smi lists it.
"""

from __future__ import annotations

import itertools
import os
import resource
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tgir.benchmarks.bench import CHECKPOINT_BACKENDS, STAGES, BenchConfig, Target
from tgir.benchmarks.search_scaling import unit_rows
from tgir.benchmarks.timing import stats_ms, summarize, time_calls
from tgir.runtime.base import Runner, UnknownWordsWarning
from tgir.runtime.index import GalleryIndex

from tgir.data.images import load_image
from tgir.errors import TgirUserError
from tgir.manifest import Manifest
from tgir.vocab import SPECIALS

SPLIT_KEYS = ("h2d_latency", "gpu_compute_time", "d2h_latency")  # trtexec's names


class Skip(Exception):
    """This machine or bundle lacks what the target needs; the message says what and how to get it."""


@dataclass
class Opened:
    """A target's runner and the facts recorded about it."""

    runner: Runner
    precision: str
    device: str
    versions: dict
    threads: int | None
    rgb_arrays: bool = False  # the C runtime takes uint8 [H, W, 3] arrays; the others PIL images
    sync: Callable[[], None] | None = None
    torch: object = None  # the torch module, for PyTorch targets on CUDA (allocator peak)
    split: bool = False  # the runner records CUDA events per call (``events``): the H2D / compute / D2H split
    notes: list[str] = field(default_factory=list)


def _rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(err, TgirUserError) else f"{type(err).__name__}: {first}".rstrip(": ")


def run_target(target: Target, cfg: BenchConfig, emit: Callable[[dict], None]) -> dict:
    """Measure one target; never raises for the target's own failures (they become its status)."""
    row = {**target.to_dict(), "status": "ok", "reason": None, "precision": None, "device": None, "versions": {},
           "threads": None, "search": target.option("search", cfg.search), "search_same_as_exact": None,
           "embed_dim": None, "open_s": None, "peak_rss_before_open_mib": _rss_mib(),
           "peak_rss_mib": None, "gpu_memory": None, "accuracy": None, "notes": [], "results": []}
    start = time.perf_counter()
    opened = None
    try:
        split = None
        if cfg.data:
            from tgir.data.registry import load_split

            split = load_split(cfg.dataset, cfg.data, cfg.split)
        opened = open_target(target, cfg)
        row.update(open_s=round(time.perf_counter() - start, 3), precision=opened.precision, device=opened.device,
                   versions=opened.versions, threads=opened.threads, notes=opened.notes)
        emit({"event": "open", "target": target.label, "open_s": row["open_s"], "device": opened.device,
              "precision": opened.precision})
        measure_stages(opened, split, cfg, target.label, row, emit)
        row["peak_rss_mib"] = _rss_mib()
        row["gpu_memory"] = gpu_memory(opened)
        if cfg.accuracy and split is not None:
            emit({"event": "accuracy", "target": target.label, "queries": len(split.queries)})
            try:
                row["accuracy"] = accuracy(opened, split)
            except Exception as err:  # keep the timings; say why recall is missing
                row["accuracy"] = {"error": _one_line(err)}
    except Skip as why:
        row.update(status="skipped", reason=str(why))
    except Exception as err:
        row.update(status="failed", reason=_one_line(err))
        if not isinstance(err, TgirUserError):
            row["traceback"] = traceback.format_exc().strip().splitlines()[-12:]
    finally:
        if opened is not None:
            opened.runner.close()
    row["wall_s"] = round(time.perf_counter() - start, 2)
    return row


# -- opening each backend ----------------------------------------------------------------------------
def open_target(target: Target, cfg: BenchConfig) -> Opened:
    """The target's runner, or ``Skip`` when this machine or bundle cannot run it."""
    manifest = Manifest.load(target.bundle)
    threads = int(target.option("threads", str(cfg.threads)))
    if target.backend in CHECKPOINT_BACKENDS:
        return _open_torch(target, manifest, threads)
    if target.backend == "onnxruntime":
        return _open_ort(target, manifest, threads)
    if target.backend == "c":
        return _open_c(target, manifest, threads)
    if target.backend == "aoti":
        return _open_aoti(target, manifest, threads)
    if target.backend == "tensorrt":
        return _open_trt(target, manifest)
    raise TgirUserError(f"unknown backend {target.backend!r}")


def _evented(base: type) -> type:
    """``base`` (a ``TorchDeviceRunner``: PyTorch eager, AOTInductor) whose graph calls record CUDA
    events around copy in, model and copy out while ``events`` is a list (the same work as
    ``TorchDeviceRunner._run``, split in three)."""
    import torch

    class Evented(base):
        events: list | None = None

        def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            if self.events is None:
                return super()._run(graph, feeds)
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            marks[0].record()
            args = [torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for v in feeds.values()]
            marks[1].record()
            out = self._forward(graph, args)
            marks[2].record()
            host = [o.float().cpu().numpy() for o in out]
            marks[3].record()
            self.events.append(marks)
            return host

    return Evented


def _cuda_facts(torch, device: str) -> tuple[str, dict]:
    """``("cuda:N (name)", versions)`` of a CUDA device; the allocator's peak is reset for it."""
    torch.cuda.reset_peak_memory_stats(device)
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    return (f"cuda:{index} ({torch.cuda.get_device_name(index)})",
            {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()})


def _require_torch(device: str):
    """The torch module, or ``Skip`` when it or the CUDA device ``device`` asks for is missing."""
    try:
        import torch
    except ImportError:
        raise Skip("PyTorch is not installed") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Skip(f"no CUDA device here (torch {torch.__version__}: torch.cuda.is_available() is False)")
    return torch


def _torch_device(target: Target, threads: int):
    """``(torch, device, device name, versions)`` of a target run by PyTorch (eager, compiled, AOTI)."""
    device = target.option("device", "cpu")
    torch = _require_torch(device)
    if threads:
        torch.set_num_threads(threads)
    name, versions = _cuda_facts(torch, device) if device.startswith("cuda") else ("cpu", {"torch": torch.__version__})
    return torch, device, name, versions


def _torch_opened(torch, runner: Runner, precision: str, name: str, versions: dict, notes: list[str]) -> Opened:
    cuda = name.startswith("cuda")
    return Opened(runner, precision, name, versions, torch.get_num_threads(),
                  sync=torch.cuda.synchronize if cuda else None, torch=torch if cuda else None, split=cuda, notes=notes)


def _open_aoti(target: Target, manifest: Manifest, threads: int) -> Opened:
    torch, device, name, versions = _torch_device(target, threads)
    from tgir.export.aoti import AotiRunner

    try:
        runner = _evented(AotiRunner)(target.bundle, device=device, manifest=manifest)
    except TgirUserError as err:
        raise Skip(str(err)) from None
    return _torch_opened(torch, runner, manifest.aoti.get("precision", "fp32"), name, versions,
                         ["AOTInductor packages of the fp32 model (tgir-export aoti) run from Python through torch's "
                          "loader: the kernels libtgir runs, with Python's host overhead"])


def _open_torch(target: Target, manifest: Manifest, threads: int) -> Opened:
    torch, device, name, versions = _torch_device(target, threads)
    from tgir.runtime.reference import TorchRunner

    runner = _evented(TorchRunner)(target.bundle, device=device, manifest=manifest)
    notes = ["PyTorch eager runs the bundle's source checkpoint in fp32 (AMC's router eagerly, experts as needed)"]
    if target.backend == "torch-compile":
        mode = target.option("mode", "default")
        for method in ("encode_image", "encode_text", "compose"):
            setattr(runner.model, method, torch.compile(getattr(runner.model, method),
                                                        mode=None if mode == "default" else mode))
        notes.append(f"torch.compile(mode={mode!r}) of encode_image, encode_text and compose; compiled during "
                     "the warm-up runs (see first_call_ms), recompiled per new batch size")
    return _torch_opened(torch, runner, "fp32", name, versions, notes)


def _open_ort(target: Target, manifest: Manifest, threads: int) -> Opened:
    import onnxruntime as ort
    from tgir.runtime.ort import OrtOptions, OrtRunner

    provider = target.option("provider", "cpu")
    if provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip(f"onnxruntime {ort.__version__} has no CUDA execution provider here "
                   "(install onnxruntime-gpu on a CUDA machine)")
    options = OrtOptions(provider=provider, threads=threads, level=target.option("level", "all"),
                         fused=target.option("fused", "on") == "on")
    runner = OrtRunner(target.bundle, options, manifest)
    device = "cuda (ORT CUDA EP)" if runner.providers[0] == "CUDAExecutionProvider" else "cpu"
    query = (f"queries through the fused {', '.join(runner.fused)} graph" if runner.fused
             else "queries through the three graphs")
    return Opened(runner, manifest.precision, device, {"onnxruntime": ort.__version__, "providers": runner.providers},
                  threads or None, notes=[f"ONNX Runtime graph optimisation level {options.level!r}", query])


def _open_c(target: Target, manifest: Manifest, threads: int) -> Opened:
    from tgir.runtime import clib

    try:
        library = clib.library_path(target.option("library") or None)
    except TgirUserError as err:
        raise Skip(str(err)) from None
    device = target.option("device", "cpu")
    index = -1 if device == "cpu" else int(device.partition(":")[2] or 0)
    engine = target.option("engine", "auto")
    if engine == "aoti" or (engine == "auto" and manifest.backend != "tensorrt"):
        want = "cpu" if index < 0 else "cuda"
        if not manifest.aoti:
            raise Skip(f"{target.bundle} has no AOTInductor packages for the C runtime; compile them with "
                       f"`tgir-export aoti --bundle {target.bundle} --device {want}`")
        if manifest.aoti.get("device") != want:
            raise Skip(f"{target.bundle}'s AOTInductor packages are compiled for {manifest.aoti.get('device')}, "
                       f"not {want}; recompile with `tgir-export aoti --device {want} --force`")
    runner = clib.CRunner(target.bundle, backend=engine, device=index, threads=threads, library=library,
                          manifest=manifest)
    precision = manifest.aoti.get("precision", "fp32") if runner.c_backend == "aoti" else manifest.precision
    version = clib.load_library(library).tgir_version().decode()
    return Opened(runner, precision, runner.device, {"libtgir": version, "c_backend": runner.c_backend,
                                                     "library": str(library)}, threads or None, rgb_arrays=True,
                  notes=["the C runtime preprocesses and tokenizes in C (inputs: decoded RGB uint8 arrays)"])


def _open_trt(target: Target, manifest: Manifest) -> Opened:
    device = target.option("device", "cuda")
    if device == "cpu":
        raise TgirUserError("tensorrt runs on CUDA devices only (device=cuda or cuda:N)")
    from tgir.runtime.trt import TensorRTRunner, TrtOptions, tensorrt_module

    try:  # first: without TensorRT, that is the reason worth reporting
        trt = tensorrt_module()
    except TgirUserError as err:
        raise Skip(str(err)) from None
    if manifest.backend != "tensorrt":
        raise Skip(f"{target.bundle} holds no TensorRT engines (built for {manifest.backend}); build them with "
                   "`tgir-export build-engine --backend tensorrt`")
    index = int(device.partition(":")[2] or 0)
    runner = TensorRTRunner(target.bundle, TrtOptions(device=index), manifest)
    return Opened(runner, manifest.precision, f"cuda:{index}", {"tensorrt": trt.__version__}, None, split=True)


# -- inputs and stages -------------------------------------------------------------------------------
def bench_inputs(runner: Runner, split, n: int, seed: int, rgb_arrays: bool) -> tuple[list, list, list[str]]:
    """``(gallery images, reference images, texts)``, ``n`` of each, decoded: the split's first gallery
    images and queries (repeated when it has fewer), else seeded random pixels and vocabulary words."""
    if split is not None:
        gallery = split.gallery.tolist()
        images = [load_image(split.images[gallery[i % len(gallery)]].path) for i in range(n)]
        queries = [split.queries[i % len(split.queries)] for i in range(n)]
        refs = [load_image(split.images[q.ref].path) for q in queries]
        texts = [q.text for q in queries]
    else:
        rng = np.random.default_rng(seed)
        side = runner.preprocess.resize or runner.preprocess.size
        images, refs = ([Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(n)]
                        for _ in range(2))
        words = [w for w in runner.vocab.itos if w not in SPECIALS] or ["red"]
        texts = [" ".join(rng.choice(words, 5)) for _ in range(n)]
    if rgb_arrays:
        images, refs = ([np.ascontiguousarray(np.asarray(im, np.uint8)) for im in ims] for ims in (images, refs))
    return images, refs, texts


class _SplitRecorder:
    """Collects, per timed run, the CUDA-event split of a runner's graph calls (``runner.events``)."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.samples: dict[str, list[float]] = {k: [] for k in SPLIT_KEYS}

    def start(self) -> None:
        self.runner.events = []

    def stop(self) -> None:  # the run was synchronised, so every event has completed
        events, self.runner.events = self.runner.events, None
        for n, key in enumerate(SPLIT_KEYS):
            self.samples[key].append(sum(m[n].elapsed_time(m[n + 1]) for m in events))
        for mark in (m for marks in events for m in marks if hasattr(m, "close")):
            mark.close()  # TensorRT's cuda-python events; torch's free themselves

    def summary(self) -> dict | None:
        return {k: stats_ms(v) for k, v in self.samples.items()} if self.samples["h2d_latency"] else None


def _stage_calls(runner: Runner, images: list, refs: list, texts: list[str], queries: np.ndarray, batch: int,
                 search: Callable[[np.ndarray], object]) -> dict[str, Callable[[], object]]:
    """One callable per stage. Successive calls take successive batches of the inputs (cycling), so
    a batch-1 figure is over a mix of queries: AMC's conditional experts run for some and not others,
    and one fixed query would time one routing only."""
    starts = {stage: itertools.cycle(range(0, max(len(refs) - batch, 0) + 1, batch)) for stage in STAGES}

    def part(stage: str, items):
        start = next(starts[stage])
        return items[start:start + batch]

    def query(stage: str) -> np.ndarray:
        start = next(starts[stage])
        return runner.encode_queries(refs[start:start + batch], texts[start:start + batch])

    return {"image_encode": lambda: runner.encode_images(part("image_encode", images)),
            "query_compose": lambda: query("query_compose"),
            "search": lambda: search(part("search", queries)),
            "end_to_end": lambda: search(query("end_to_end"))}


def measure_stages(opened: Opened, split, cfg: BenchConfig, label: str, row: dict,
                   emit: Callable[[dict], None]) -> None:
    """Append one result per batch and stage to ``row["results"]`` (summaries, first call, GPU split)."""
    runner = opened.runner
    images, refs, texts = bench_inputs(runner, split, max(cfg.batches), cfg.seed, opened.rgb_arrays)
    with warnings.catch_warnings():  # synthetic texts may hold no known word; that is part of the input
        warnings.simplefilter("ignore", UnknownWordsWarning)
        queries = runner.encode_queries(refs, texts)
        row["embed_dim"] = int(queries.shape[1])
        gallery = GalleryIndex(unit_rows(np.random.default_rng(cfg.seed + 1), cfg.gallery, queries.shape[1]),
                               [str(i) for i in range(cfg.gallery)], "bench")
        gallery.threads = opened.threads or 0
        method = row["search"]
        # Untimed: builds FAISS's or the int8 index, and checks the method against exact search.
        found, exact = gallery.search(queries, cfg.k, method), gallery.search(queries, cfg.k)
        row["search_same_as_exact"] = float(np.mean([a == b for a, b in zip(found.ids, exact.ids, strict=True)]))

        def search(q: np.ndarray) -> object:
            return gallery.search(q, cfg.k, method)

        done, total = 0, len(cfg.batches) * len(STAGES)
        for batch in cfg.batches:
            calls = _stage_calls(runner, images, refs, texts, queries, batch, search)
            for stage in STAGES:
                rec = _SplitRecorder(runner) if opened.split and stage != "search" else None
                samples, first = time_calls(calls[stage], cfg.iters, cfg.warmup, opened.sync,
                                            rec.start if rec else None, rec.stop if rec else None)
                result = {"stage": stage, "batch": batch, **summarize(samples, batch),
                          "first_call_ms": round(first / 1e6, 4), "gpu_split": rec.summary() if rec else None}
                row["results"].append(result)
                done += 1
                emit({"event": "stage", "target": label, "stage": stage, "batch": batch, "done": done, "total": total,
                      "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "result": result})


def gpu_memory(opened: Opened) -> dict | None:
    """``{"mib", "source"}`` for a target on a GPU; None on the CPU."""
    if not opened.device.startswith("cuda"):
        return None
    if opened.torch is not None:
        torch = opened.torch
        return {"mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1),
                "source": "torch.cuda.max_memory_allocated (peak of PyTorch's allocator)"}
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        pid, _, used = (s.strip() for s in line.partition(","))
        if pid == str(os.getpid()) and used.isdigit():
            return {"mib": float(used), "source": "nvidia-smi used_memory of this process after timing"}
    return {"mib": None, "source": "unavailable: nvidia-smi lists no compute process with this pid"}


def accuracy(opened: Opened, split) -> dict:
    """Recall on the split, embeddings computed by the target itself (the C runtime included)."""
    from tgir.runtime.evaluate import evaluate_bundle

    from tgir.evaluate import evaluate_split

    runner = opened.runner
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownWordsWarning)
        if opened.rgb_arrays:  # the C runtime hands out no image tokens: whole queries instead
            paths = [split.images[i].path for i in split.gallery.tolist()]
            gallery = runner.encode_images(paths)
            queries = runner.encode_queries([split.images[q.ref].path for q in split.queries],
                                            [q.text for q in split.queries])
            result = evaluate_split(split, queries, gallery)
        else:
            result = evaluate_bundle(runner, split, batch=min(32, runner.max_batch))
    out = {k: round(float(v), 2) for k, v in result.items() if k.startswith("R@")}
    return {**out, "queries": int(result["queries"]), "gallery": len(split.gallery),
            "dataset": split.dataset, "split": split.split, "seconds": round(time.perf_counter() - start, 1)}
