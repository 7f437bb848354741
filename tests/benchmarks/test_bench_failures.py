"""``tgir bench`` when things go wrong: a backend that raises or crashes its process, a target past its
timeout or the run's deadline (kept as ``partial`` with the stages it measured), later targets
skipped at the deadline, and a search-scaling table that fails or runs out of time."""

from __future__ import annotations

import json
import stat
import sys
import time
from types import SimpleNamespace

from tgir.benchmarks import bench, bench_measure, bench_process, bench_report
from tgir.benchmarks.bench import BenchConfig, Target
from tgir.benchmarks.search_scaling import search_scaling

FAST = {"batches": (1, 2), "iters": 3, "warmup": 1, "gallery": 40, "k": 5}


def test_inline_run_reports_a_crashing_backend_and_a_missing_gpu(tiny_amc_bundle, monkeypatch):
    import torch

    real_open = bench_measure.open_target

    def open_or_break(target, cfg):
        if target.label == "broken":
            raise RuntimeError("backend exploded\nsecond line")
        return real_open(target, cfg)

    monkeypatch.setattr(bench_measure, "open_target", open_or_break)
    b = str(tiny_amc_bundle)
    targets = (Target("broken", "onnxruntime", b), Target("ort", "onnxruntime", b, (("threads", "1"),)),
               Target("gpu", "torch", b, (("device", "cuda"),)), Target("trt", "tensorrt", b))
    result = bench.run_bench(BenchConfig(targets=targets, isolate=False, **FAST))
    by = {t["label"]: t for t in result["targets"]}
    assert by["broken"]["status"] == "failed" and by["broken"]["reason"] == "RuntimeError: backend exploded"
    assert by["broken"]["traceback"]
    assert by["ort"]["status"] == "ok" and len(by["ort"]["results"]) == 8
    assert by["ort"]["accuracy"] is None  # no --data
    assert result["inputs"]["source"] == "synthetic" and result["baseline"] == "gpu"
    if not torch.cuda.is_available():
        assert by["gpu"]["status"] == "skipped" and "no CUDA device" in by["gpu"]["reason"]
    assert by["trt"]["status"] == "skipped"
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):  # the reason worth reading first: TensorRT itself is missing
        assert by["trt"]["reason"].startswith("TensorRT is not usable here")
    else:
        assert "holds no TensorRT engines" in by["trt"]["reason"]  # an ORT bundle
    assert all(r["speedup_vs_baseline"] is None for r in by["ort"]["results"])  # its baseline did not run


def _fake_python(tmp_path, monkeypatch, script: str) -> None:
    """``sys.executable`` -> a shell script standing in for the child process."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n{script}")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(fake))


def test_a_crashing_child_process_is_reported(tmp_path, monkeypatch):
    _fake_python(tmp_path, monkeypatch, "echo 'Fatal Python error: Segmentation fault'\nkill -SEGV $$\n")
    t = Target("x", "onnxruntime", "/b")
    row = bench_process.run_isolated(t, BenchConfig(targets=(t,)), lambda e: None)
    assert row["status"] == "failed"
    assert row["reason"] == "killed by SIGSEGV: Fatal Python error: Segmentation fault"


def test_a_target_past_its_timeout_is_reported(tmp_path, monkeypatch):
    _fake_python(tmp_path, monkeypatch, "exec sleep 30\n")
    t = Target("x", "torch", "/b")
    row = bench_process.run_isolated(t, BenchConfig(targets=(t,), timeout_s=0.5), lambda e: None)
    assert (row["status"], row["reason"]) == ("failed", "timed out after 0.5 s")


def _stage_event(stage: str, batch: int, done: int, total: int = 8) -> dict:
    result = {"stage": stage, "batch": batch, "iters": 3, "mean_ms": 2.0, "p50_ms": 2.0, "p90_ms": 2.5,
              "p99_ms": 3.0, "throughput_per_s": batch / 0.002, "first_call_ms": 9.0, "gpu_split": None}
    return {"event": "stage", "target": "x", "stage": stage, "batch": batch, "done": done, "total": total,
            "p50_ms": 2.0, "p99_ms": 3.0, "result": result}


def _slow_child(tmp_path, monkeypatch, stages: int) -> None:
    """``sys.executable`` -> a child that opens, reports ``stages`` stage rows, then hangs."""
    events = [{"event": "open", "target": "x", "open_s": 0.1, "device": "cpu", "precision": "int8"}]
    events += [_stage_event(s, 1, n + 1) for n, s in enumerate(bench.STAGES[:stages])]
    lines = "".join(f"echo '{bench.PROGRESS_PREFIX}{json.dumps(e)}'\n" for e in events)
    _fake_python(tmp_path, monkeypatch, f"{lines}exec sleep 30\n")


def test_a_target_cut_short_keeps_the_stages_it_measured(tmp_path, monkeypatch):
    _slow_child(tmp_path, monkeypatch, stages=2)
    t = Target("x", "onnxruntime", "/b")
    row = bench_process.run_isolated(t, BenchConfig(targets=(t,), timeout_s=1), lambda e: None)
    assert row["status"] == "partial"
    assert row["reason"] == "timed out after 1 s (2 of 8 stage rows measured)"
    assert [(r["stage"], r["batch"]) for r in row["results"]] == [("image_encode", 1), ("query_compose", 1)]
    assert (row["precision"], row["device"], row["accuracy"]) == ("int8", "cpu", None)


def test_the_deadline_stops_the_run_and_each_target_is_written_as_it_ends(tmp_path, monkeypatch):
    _slow_child(tmp_path, monkeypatch, stages=4)
    targets = (Target("a", "torch", "/b"), Target("b", "onnxruntime", "/b"))
    cfg = BenchConfig(targets=targets, batches=(1,), deadline_s=1.5, search_sizes=(100,), gallery=100)
    partial: list[dict] = []
    result = bench.run_bench(cfg, partial=partial.append)
    a, b = result["targets"]
    assert a["status"] == "partial" and a["reason"].startswith("stopped at the run's --deadline of 1.5 s (4 of 8")
    assert [r["speedup_vs_baseline"] for r in a["results"]] == [1.0] * 4  # a partial baseline still counts
    assert b["status"] == "skipped" and "not started" in b["reason"] and b["results"] == []
    assert result["search_scaling"] == [] and result["search_scaling_skipped"] == [100] and result["complete"]
    assert [len(p["targets"]) for p in partial] == [1, 2] and not any(p["complete"] for p in partial)
    assert "--deadline 1.5" in result["command"]
    text = bench_report.markdown(result)
    assert "| `a` (partial) | torch | int8 | cpu | 1 |" in text
    assert "- `b` (onnxruntime, /b): skipped: not started" in text
    assert "Search scaling not measured (the run's --deadline was reached): galleries of 100" in text
    assert "cut short: 1 of 2 targets done" in bench_report.markdown(partial[0])


def test_a_failing_search_scaling_keeps_the_targets_and_the_sizes_done(monkeypatch):
    from tgir.benchmarks import search_scaling as module

    real = module.Int8Search

    def int8_or_break(gallery, threads=0):
        if len(gallery) == 60:
            raise RuntimeError("Unsupported model IR version: 14, max supported IR version: 13")
        return real(gallery, threads)

    monkeypatch.setattr(module, "Int8Search", int8_or_break)
    events: list[dict] = []
    cfg = BenchConfig(targets=(Target("missing", "onnxruntime", "/nonexistent"),), isolate=False, batches=(1,),
                      iters=1, warmup=0, gallery=50, k=2, search_sizes=(50, 60, 70), search_iters=1)
    result = bench.run_bench(cfg, events.append)
    assert result["targets"][0]["status"] == "failed" and result["complete"]
    assert [s["gallery"] for s in result["search_scaling"]] == [50] and result["search_scaling_skipped"] == [60, 70]
    assert result["search_scaling_error"] == ("RuntimeError: Unsupported model IR version: 14, "
                                              "max supported IR version: 13")
    assert {"event": "search_scaling_failed", "reason": result["search_scaling_error"]} in events
    assert "Search scaling not measured (failed: RuntimeError: Unsupported" in bench_report.markdown(result)


def test_search_scaling_stops_at_its_deadline():
    events: list[dict] = []
    rows = search_scaling((50, 60), dim=4, batches=(1,), iters=1, warmup=0, k=2, progress=events.append,
                          deadline=time.monotonic() - 1)
    assert rows == [] and events == [{"event": "search_scaling_skipped", "sizes": [50, 60],
                                      "reason": "the run's --deadline was reached"}]


def test_search_scaling_does_not_start_a_size_its_predecessor_says_would_overrun(monkeypatch):
    from tgir.benchmarks import search_scaling as module

    clock = [0.0]
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=lambda: clock[0], perf_counter=time.perf_counter))

    def thirty_seconds(gallery, queries, batches, *args):  # every size takes 30 s of the fake clock
        clock[0] += 30
        return [{"gallery": len(gallery), "batch": b} for b in batches]

    monkeypatch.setattr(module, "_one_size", thirty_seconds)
    events: list[dict] = []
    rows = search_scaling((10, 20, 40), dim=4, batches=(1,), iters=1, warmup=0, k=2, progress=events.append,
                          deadline=100.0)
    # 10 took 30 s -> 20 is estimated at 60 s with 70 s left: started; 20 took 30 s -> 40 at 60 s, 40 s left
    assert [r["gallery"] for r in rows] == [10, 20]
    assert events == [{"event": "search_scaling_skipped", "sizes": [40], "reason": (
        "a 40 gallery would take about 60 s (the 20 one took 30.0 s), 40 s were left before the run's --deadline")}]


def test_search_scaling_stops_between_batches_at_the_deadline(monkeypatch):
    from tgir.benchmarks import search_scaling as module

    clock = [0.0]
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=lambda: clock[0], perf_counter=time.perf_counter))
    real_time_calls = module.time_calls

    def time_calls_then_late(*args, **kwargs):  # the first batch's timing runs past the deadline
        clock[0] = 50.0
        return real_time_calls(*args, **kwargs)

    monkeypatch.setattr(module, "time_calls", time_calls_then_late)
    events: list[dict] = []
    cfg_rows = search_scaling((30,), dim=4, batches=(1, 2, 4), iters=1, warmup=0, k=2, progress=events.append,
                              deadline=10.0)
    assert [(r["gallery"], r["batch"]) for r in cfg_rows] == [(30, 1)]
    skipped = [e for e in events if e["event"] == "search_scaling_skipped"]
    assert skipped == [{"event": "search_scaling_skipped", "sizes": [30], "batches": [2, 4],
                        "reason": "the run's --deadline was reached"}]


def test_search_scaling_rows():
    rows = search_scaling((200, 500), dim=8, batches=(1, 3), iters=2, warmup=1, k=5)
    assert [(r["gallery"], r["batch"]) for r in rows] == [(200, 1), (200, 3), (500, 1), (500, 3)]
    for r in rows:
        assert r["exact"]["iters"] == 2 and r["dim"] == 8
        if r["faiss"] is not None:
            assert r["same_topk"] == 1.0 and r["faiss_build_s"] >= 0
        else:
            assert "faiss-cpu" in r["faiss_reason"]
        assert r["int8"]["iters"] == 2 and r["int8_same_topk"] == 1.0 and r["int8_build_s"] >= 0
        assert r["k"] <= r["int8_candidates"] <= r["gallery"]
