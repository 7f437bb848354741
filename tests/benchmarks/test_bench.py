"""``tgir bench``: the harness itself (timing math, parsing, JSON schema, failure reporting, report),
not the speed of anything. Runs are tiny: the tiny AMC bundle, batches 1 and 2, three timed runs."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from tgir.benchmarks import bench, bench_measure, bench_report
from tgir.benchmarks.bench import BenchConfig, Target, parse_backends, parse_ints, parse_target, targets_from
from tgir.benchmarks.timing import stats_ms, summarize, time_calls

from tgir.cli import main
from tgir.errors import TgirUserError

FAST = {"batches": (1, 2), "iters": 3, "warmup": 1, "gallery": 40, "k": 5}


# -- timing math ---------------------------------------------------------------------------------------
def test_summarize_matches_hand_computed_linear_percentiles():
    samples_ns = [int(ms * 1e6) for ms in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)]
    s = summarize(samples_ns, batch=4)
    # linear (type 7): h = (n - 1) p / 100 over sorted samples; n = 10
    assert s["iters"] == 10
    assert s["mean_ms"] == 5.5 and s["min_ms"] == 1 and s["max_ms"] == 10
    assert s["p50_ms"] == 5.5  # h = 4.5 -> 5 + 0.5 * (6 - 5)
    assert s["p90_ms"] == 9.1  # h = 8.1 -> 9 + 0.1 * (10 - 9)
    assert s["p99_ms"] == 9.91  # h = 8.91
    assert s["std_ms"] == round(math.sqrt(8.25), 4)  # population standard deviation
    assert s["throughput_per_s"] == round(4 / 5.5e-3, 2)


def test_percentiles_of_unsorted_samples():
    s = stats_ms([3.0, 1.0, 2.0])
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"]) == (2.0, 2.8, 2.98)  # h = 1, 1.8, 1.98
    with pytest.raises(ValueError):
        stats_ms([])


def test_time_calls_warms_up_syncs_and_brackets():
    calls, log = [], []
    samples, first = time_calls(lambda: calls.append(1), iters=5, warmup=2, sync=lambda: log.append("sync"),
                                before=lambda: log.append("before"), after=lambda: log.append("after"))
    assert len(calls) == 7 and len(samples) == 5 and all(s >= 0 for s in samples)
    assert log.count("sync") == 14 and log.count("before") == 5 and log.count("after") == 5
    assert first >= 0
    _, first = time_calls(lambda: None, iters=2, warmup=0)  # no warm-up: the first timed call
    assert first >= 0


def test_add_speedups_against_the_baseline():
    rows = [{"label": "eager", "status": "ok", "results": [{"stage": "end_to_end", "batch": 1, "p50_ms": 10.0}]},
            {"label": "ort", "status": "ok", "results": [{"stage": "end_to_end", "batch": 1, "p50_ms": 4.0},
                                                         {"stage": "end_to_end", "batch": 8, "p50_ms": 9.0}]},
            {"label": "gone", "status": "failed", "results": []}]
    bench.add_speedups(rows, "eager")
    assert rows[0]["results"][0]["speedup_vs_baseline"] == 1.0
    assert rows[1]["results"][0]["speedup_vs_baseline"] == 2.5
    assert rows[1]["results"][1]["speedup_vs_baseline"] is None  # the baseline has no batch 8


def test_split_recorder_sums_events_per_run():
    class Mark:
        def __init__(self, t):
            self.t = t

        def elapsed_time(self, other):
            return other.t - self.t

    class FakeRunner:
        events = None

    runner = FakeRunner()
    rec = bench_measure._SplitRecorder(runner)
    for _ in range(3):
        rec.start()
        runner.events += [[Mark(0), Mark(1), Mark(4), Mark(4.5)], [Mark(10), Mark(10.5), Mark(12), Mark(12.25)]]
        rec.stop()
    split = rec.summary()
    assert split["h2d_latency"]["p50_ms"] == 1.5
    assert split["gpu_compute_time"]["p50_ms"] == 4.5
    assert split["d2h_latency"]["p50_ms"] == 0.75
    assert runner.events is None


# -- parsing -------------------------------------------------------------------------------------------
def test_parse_ints():
    assert parse_ints("1,8,32", "--batch") == (1, 8, 32)
    assert parse_ints("10K, 100k,1M", "--search-sizes") == (10_000, 100_000, 1_000_000)
    assert parse_ints("", "--search-sizes", allow_empty=True) == ()
    for bad in ("0,x", "", "1,-2", "1.5"):
        with pytest.raises(TgirUserError, match="--batch: expected positive integers"):
            parse_ints(bad, "--batch")


def test_parse_backends_and_presets():
    assert parse_backends("torch,onnxruntime,provider=cuda,threads=1") == [
        ("torch", ()), ("onnxruntime", (("provider", "cuda"), ("threads", "1")))]
    assert [b for b, _ in parse_backends("cpu")] == ["torch", "onnxruntime", "c"]
    assert [b for b, _ in parse_backends("gpu")] == ["torch", "torch-compile", "onnxruntime", "aoti", "c", "tensorrt"]
    with pytest.raises(TgirUserError, match="unknown backend 'nope'"):
        parse_backends("torch,nope")
    with pytest.raises(TgirUserError, match="no option 'provider'"):
        parse_backends("torch,provider=cuda")
    with pytest.raises(TgirUserError, match="comes before any backend"):
        parse_backends("device=cuda,torch")


def test_parse_target():
    assert parse_target("int8=onnxruntime:/tmp/b/int8") == Target("int8", "onnxruntime", "/tmp/b/int8")
    t = parse_target("torch,device=cuda:1:/b:with:colons")
    assert t == Target("torch-cuda1", "torch", "/b:with:colons", (("device", "cuda:1"),))
    t = parse_target("gpu=torch,device=cuda,threads=2:/b")
    assert (t.label, t.option("device"), t.option("threads"), t.bundle) == ("gpu", "cuda", "2", "/b")
    assert parse_target("c,device=cpu,library=/x/libtgir.so:/b").label == "c"
    assert parse_target("onnxruntime,fused=off:/b").option("fused") == "off"
    for bad, why in (("onnxruntime", "expected"), ("nope:/b", "unknown backend"),
                     ("torch,device=gpu:/b", "device must be"), ("onnxruntime,level=max:/b", "unknown onnxruntime"),
                     ("onnxruntime,fused=yes:/b", "unknown onnxruntime"), ("torch,fused=off:/b", "has no option"),
                     ("a b=torch:/b", "labels are")):
        with pytest.raises(TgirUserError, match=why):
            parse_target(bad)


def test_targets_from_bundles_run_pytorch_once():
    targets = targets_from(["/b/fp32", "/b/int8"], ["torch,onnxruntime"], ["x=c:/b/fp32"])
    assert [(t.label, t.bundle) for t in targets] == [
        ("torch", "/b/fp32"), ("onnxruntime@fp32", "/b/fp32"), ("onnxruntime@int8", "/b/int8"), ("x", "/b/fp32")]


def test_config_validation_and_round_trip():
    a, b = Target("a", "torch", "/b"), Target("b", "onnxruntime", "/b")
    with pytest.raises(TgirUserError, match="two targets are labelled 'a'"):
        BenchConfig(targets=(a, a))
    with pytest.raises(TgirUserError, match="unknown baseline target 'z'"):
        BenchConfig(targets=(a, b), baseline="z")
    with pytest.raises(TgirUserError, match="nothing to measure"):
        BenchConfig(targets=())
    with pytest.raises(TgirUserError, match="-k 50 exceeds"):
        BenchConfig(targets=(a,), gallery=20, k=50)
    cfg = BenchConfig(targets=(b, a), batches=(1, 4), search_sizes=(100,))
    assert BenchConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.baseline_label() == "a"
    assert "--target b=onnxruntime:/b" in bench.config_command(cfg)


# -- real runs -------------------------------------------------------------------------------------------
TARGET_KEYS = {"label": str, "backend": str, "bundle": str, "options": dict, "status": str, "results": list}
OK_KEYS = {"precision": str, "device": str, "versions": dict, "embed_dim": int, "open_s": float,
           "peak_rss_mib": float, "peak_rss_before_open_mib": float, "notes": list, "wall_s": float}
RESULT_KEYS = {"stage": str, "batch": int, "iters": int, "mean_ms": float, "std_ms": float, "min_ms": float,
               "max_ms": float, "p50_ms": float, "p90_ms": float, "p99_ms": float, "throughput_per_s": float,
               "first_call_ms": float}


def _check_types(obj: dict, keys: dict, where: str) -> None:
    for key, kind in keys.items():
        assert key in obj, f"{where}: no {key!r}"
        value = obj[key]
        assert isinstance(value, kind) or (kind is float and isinstance(value, int)), f"{where}.{key}: {value!r}"


@pytest.fixture(scope="module")
def isolated_run(tiny_amc_bundle, tiny_css2d, tmp_path_factory):
    """ORT + eager on the tiny bundle, each in its own process, plus a missing bundle and a C target
    without its library."""
    targets = (Target("ort", "onnxruntime", str(tiny_amc_bundle), (("threads", "1"),)),
               Target("eager", "torch", str(tiny_amc_bundle), (("threads", "1"),)),
               Target("missing", "onnxruntime", str(tmp_path_factory.mktemp("x") / "no_bundle")),
               Target("c", "c", str(tiny_amc_bundle), (("library", "/nonexistent/libtgir.so"),)))
    events = []
    cfg = BenchConfig(targets=targets, data=str(tiny_css2d), **FAST)
    return bench.run_bench(cfg, events.append), events


def test_json_schema_of_a_real_run(isolated_run):
    result, _ = isolated_run
    result = json.loads(json.dumps(result))  # JSON-ready
    assert result["schema"] == "tgir-bench/1"
    for key in ("date", "command", "machine", "versions", "config", "inputs", "baseline", "targets",
                "search_scaling", "wall_s"):
        assert key in result
    assert result["machine"]["cpu"] and result["machine"]["logical_cpus"] >= 1
    assert {"tgir", "numpy", "torch", "onnxruntime"} <= set(result["versions"])
    assert result["config"]["batches"] == [1, 2] and result["config"]["iters"] == 3
    assert result["inputs"]["images_decoded_before_timing"] is True and "css2d" in result["inputs"]["source"]
    assert result["baseline"] == "eager"
    by = {t["label"]: t for t in result["targets"]}
    for label in ("ort", "eager"):
        row = by[label]
        _check_types(row, {**TARGET_KEYS, **OK_KEYS}, label)
        assert row["status"] == "ok" and row["reason"] is None and row["gpu_memory"] is None
        assert row["precision"] == "fp32" and row["device"] == "cpu" and row["threads"] == 1
        assert [(r["stage"], r["batch"]) for r in row["results"]] == [
            (s, b) for b in (1, 2) for s in ("image_encode", "query_compose", "search", "end_to_end")]
        for res in row["results"]:
            _check_types(res, RESULT_KEYS, f"{label}.{res['stage']}")
            assert res["iters"] == 3 and res["min_ms"] <= res["p50_ms"] <= res["p90_ms"] <= res["p99_ms"]
            assert res["gpu_split"] is None and isinstance(res["speedup_vs_baseline"], float)
        acc = row["accuracy"]
        assert 0 <= acc["R@1"] <= acc["R@10"] <= 100 and acc["queries"] == 180
    assert by["eager"]["versions"]["torch"] and by["ort"]["versions"]["onnxruntime"]
    assert all(r["speedup_vs_baseline"] == 1.0 for r in by["eager"]["results"])
    # the two recalls come from the same model, so they agree closely
    assert abs(by["ort"]["accuracy"]["R@1"] - by["eager"]["accuracy"]["R@1"]) < 2


def test_failing_and_skipped_targets_are_reported(isolated_run):
    result, events = isolated_run
    by = {t["label"]: t for t in result["targets"]}
    assert by["missing"]["status"] == "failed" and "not a tgir bundle" in by["missing"]["reason"]
    assert by["missing"]["results"] == []
    assert by["c"]["status"] == "skipped" and "libtgir not found" in by["c"]["reason"]
    done = [e for e in events if e["event"] == "target_done"]
    assert [e["status"] for e in done] == ["ok", "ok", "failed", "skipped"]
    assert sum(e["event"] == "stage" for e in events) == 16  # progress relayed from the children


def test_markdown_table_of_a_real_run(isolated_run):
    result, _ = isolated_run
    text = bench_report.markdown(result)
    lines = text.splitlines()
    head = next(line for line in lines if line.startswith("| target |"))
    for col in ("image encode p50", "query compose p50", "search p50", "end-to-end p50", "end-to-end p99",
                "queries/s", "x eager", "peak RSS MiB", "R@1", "R@10"):
        assert col in head
    rows = [line for line in lines if line.startswith("| `")]
    assert len(rows) == 4  # two targets measured, two batches each
    assert sum(r.startswith("| `ort` |") for r in rows) == 2 and sum(r.startswith("| `eager` |") for r in rows) == 2
    assert all(len(r.split("|")) == len(head.split("|")) for r in rows)
    assert "| 1.00 |" in next(r for r in rows if r.startswith("| `eager` |"))
    assert "- `missing` (onnxruntime," in text and "failed: " in text and "- `c` (c," in text
    assert result["command"] in text and result["machine"]["cpu"] in text


def test_markdown_gpu_split_and_scaling_tables():
    summary = {"p50_ms": 1.0, "p99_ms": 2.0}
    result = {"date": "2026-01-01T00:00:00", "command": "tgir bench ...", "baseline": None,
              "machine": {"cpu": "X", "logical_cpus": 16, "physical_cores": 8, "memory_gib": 128, "os": "Linux",
                          "python": "3.11", "gpus": ["NVIDIA H100, 81559 MiB, 550.1"]},
              "versions": {"tgir": "0.1.0"}, "config": {"batches": [1], "iters": 3, "warmup": 1, "k": 10,
                                                        "gallery": 100},
              "inputs": {"source": "synthetic", "search": "exact numpy", "peak_rss": "own process"},
              "targets": [{"label": "g", "backend": "torch", "bundle": "/b", "status": "ok", "precision": "fp32",
                           "device": "cuda:0 (H100)", "peak_rss_mib": 900.0, "accuracy": None,
                           "gpu_memory": {"mib": 321.0, "source": "torch"},
                           "results": [{"stage": "end_to_end", "batch": 1, "p50_ms": 3.0, "p90_ms": 3.5,
                                        "p99_ms": 4.0, "throughput_per_s": 333.3, "speedup_vs_baseline": None,
                                        "gpu_split": {"h2d_latency": summary, "gpu_compute_time": summary,
                                                      "d2h_latency": summary}}]}],
              "search_scaling": [{"gallery": 1_000_000, "dim": 512, "batch": 1, "k": 10,
                                  "exact": {"p50_ms": 40.0, "p99_ms": 50.0}, "faiss": {"p50_ms": 10.0, "p99_ms": 12.0},
                                  "faiss_build_s": 0.5, "same_topk": 1.0, "faiss_reason": None}]}
    text = bench_report.markdown(result)
    assert "GPU MiB" in text and "| 321 |" in text
    assert "H2D Latency p50 | GPU Compute Time p50 | D2H Latency p50" in text
    assert "| 1,000,000 | 1 | 40.0 | 50.0 | 10.0 | 12.0 | 4.0 | 0.50 | 100% |" in text


X86_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9B45
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 hypervisor

processor\t: 1
model name\t: AMD EPYC 9B45
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 hypervisor

processor\t: 2
model name\t: AMD EPYC 9B45
physical id\t: 0
core id\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 hypervisor
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41

processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
"""


def test_cpu_model_cores_and_vector_features_from_cpuinfo():
    from tgir.benchmarks.machine import parse_cpuinfo

    x86 = parse_cpuinfo(X86_CPUINFO)
    # two hyperthreads share core 0: two physical cores, three logical CPUs
    assert x86 == {"cpu": "AMD EPYC 9B45", "physical_cores": 2,
                   "cpu_features": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                                    "avx512_bf16"]}
    arm = parse_cpuinfo(ARM_CPUINFO)  # a Jetson Orin's Cortex-A78AE: no model name, no core ids
    assert arm == {"cpu": None, "physical_cores": None, "cpu_features": ["asimd", "asimddp"]}
    assert parse_cpuinfo("") == {"cpu": None, "physical_cores": None, "cpu_features": []}


def test_thread_settings_are_recorded_and_reported(isolated_run, monkeypatch):
    from tgir.benchmarks.machine import machine_facts

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    facts = machine_facts()
    assert facts["thread_env"].get("OPENBLAS_NUM_THREADS") == "1" and "OMP_WAIT_POLICY" not in facts["thread_env"]
    result, _ = isolated_run
    text = bench_report.markdown({**result, "machine": facts})
    assert "thread settings: " in text and "OPENBLAS_NUM_THREADS=1" in text


def test_markdown_names_the_cpu_features():
    result = {"date": "2026-01-01T00:00:00", "command": "tgir bench ...", "baseline": None,
              "machine": {"cpu": "X", "logical_cpus": 2, "physical_cores": 2, "memory_gib": 23.5, "os": "Linux",
                          "python": "3.11", "gpus": [], "cpu_features": ["avx2", "avx512_vnni"]},
              "versions": {"tgir": "0.1.0"}, "config": {"batches": [1], "iters": 3, "warmup": 1, "k": 10,
                                                        "gallery": 100},
              "inputs": {"source": "synthetic", "search": "exact numpy", "peak_rss": "own process"},
              "targets": [], "search_scaling": []}
    assert "machine: X (2 logical CPUs, 2 cores; avx2 avx512_vnni, 23.5 GiB)" in bench_report.markdown(result)


# -- command line ------------------------------------------------------------------------------------------
def _one_line_error(capsys, argv, *fragments):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tgir: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_errors_are_one_line(tiny_amc_bundle, capsys, monkeypatch):
    b = str(tiny_amc_bundle)
    _one_line_error(capsys, ["bench", "--bundle", b, "--batch", "0,x"], "--batch: expected positive integers", "0,x")
    _one_line_error(capsys, ["bench", "--bundle", b, "--backend", "nope"], "unknown backend 'nope'", "onnxruntime")
    _one_line_error(capsys, ["bench", "--target", "nope:" + b], "unknown backend 'nope'")
    _one_line_error(capsys, ["bench", "--target", b], "expected [LABEL=]BACKEND")
    _one_line_error(capsys, ["bench"], "nothing to measure")
    _one_line_error(capsys, ["bench", "--backend", "torch"], "--backend applies to --bundle")
    _one_line_error(capsys, ["bench", "--bundle", b, "--iters", "0"], "--iters must be a finite number >= 1")
    _one_line_error(capsys, ["bench", "--bundle", b, "-k", "0"], "-k must be", "got 0")
    for flag in ("--deadline", "--timeout"):
        for value in ("nan", "inf", "-1"):
            _one_line_error(capsys, ["bench", "--bundle", b, flag, value], f"{flag} must be a finite number >= 0")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    _one_line_error(capsys, ["bench", "--bundle", b, "--plot", "x.png"], "pip install matplotlib")


def test_cli_refuses_missing_inputs_and_unwritable_outputs_before_measuring(tiny_amc_bundle, tmp_path, capsys):
    b = str(tiny_amc_bundle)
    _one_line_error(capsys, ["bench", "--bundle", str(tmp_path / "nope")], "target 'torch'", "no such folder")
    _one_line_error(capsys, ["bench", "--target", f"x=onnxruntime:{tmp_path}"], "'x'", "not a tgir bundle")
    _one_line_error(capsys, ["bench", "--bundle", b, "--data", str(tmp_path / "nodata")], "--data", "no such folder")
    (tmp_path / "empty").mkdir()
    code = main(["bench", "--bundle", b, "--data", str(tmp_path / "empty")])  # the loader's own one-line error
    assert code == 1 and "Traceback" not in capsys.readouterr().err
    _one_line_error(capsys, ["bench", "--bundle", b, "--json", str(tmp_path / "no" / "r.json")],
                    "--json", "does not exist")
    (tmp_path / "ro").mkdir(mode=0o500)
    if not os.access(tmp_path / "ro", os.W_OK):  # root may write anywhere; a read-only mount then tells nothing
        _one_line_error(capsys, ["bench", "--bundle", b, "--markdown", str(tmp_path / "ro" / "r.md")],
                        "--markdown", "cannot write there")
    if Path("/proc/self").is_dir():  # /proc refuses new files even to root
        _one_line_error(capsys, ["bench", "--bundle", b, "--json", "/proc/r.json"], "--json", "cannot write there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "ro"]  # the probes left nothing behind


def test_cli_runs_and_writes_json_and_markdown(tiny_amc_bundle, tmp_path, capsys):
    md = tmp_path / "r.md"
    code = main(["bench", "--target", f"ort=onnxruntime,threads=1:{tiny_amc_bundle}", "--batch", "1", "--iters", "2",
                 "--warmup", "0", "--gallery", "20", "-k", "3", "--no-isolate", "--json", "-", "--markdown", str(md),
                 "--search-sizes", "50", "--search-iters", "2", "--search", "int8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["complete"] and result["targets"][0]["status"] == "ok" and result["config"]["search"] == "int8"
    assert result["targets"][0]["search"] == "int8" and result["targets"][0]["search_same_as_exact"] == 1.0
    assert result["search_scaling"][0]["gallery"] == 50 and result["search_scaling"][0]["dim"] == 32
    assert "[1/1] ort" in err and "end_to_end" in err and "search scaling: gallery 50" in err
    assert "| `ort` | onnxruntime | fp32 | cpu | 1 |" in md.read_text()
    assert "--search-sizes 50" in result["command"] and "--search int8" in result["command"]


@pytest.mark.skipif(not os.environ.get("TGIR_TEST_PLOT"), reason="set TGIR_TEST_PLOT=1 where matplotlib is installed")
def test_plot_writes_a_png(isolated_run, tmp_path):
    result, _ = isolated_run
    path = bench_report.plot(result, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.frombuffer(path.read_bytes(), np.uint8).size > 1000


def test_thread_contention_times_each_case():
    import torch
    from tgir.benchmarks.thread_contention import contention, median_ms

    before = torch.get_num_threads()
    try:
        result = contention(1, runs=2, gallery=50, dim=8)
    finally:
        torch.set_num_threads(before)
    assert result["torch_threads"] == 1
    assert all(result[k] > 0 for k in ("conv_ms", "search_ms", "conv_then_search_ms"))
    calls = []
    assert median_ms(lambda: calls.append(1), runs=3, warmup=2) >= 0 and len(calls) == 5


def test_cli_writes_the_json_file_whole_and_exits_1_when_nothing_was_measured(tmp_path, capsys):
    out, broken = tmp_path / "r.json", tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")  # a bundle in name only: the target fails
    code = main(["bench", "--target", f"gone=onnxruntime:{broken}", "--no-isolate", "--batch", "1",
                 "--iters", "1", "--gallery", "20", "-k", "3", "--deadline", "100", "--json", str(out),
                 "--markdown", str(tmp_path / "r.md")])
    _, err = capsys.readouterr()
    assert code == 1 and err.strip().splitlines()[-1] == (
        "tgir: error: no target was measured (1 failed); the table lists why"), err
    result = json.loads(out.read_text())
    assert result["complete"] and result["targets"][0]["status"] == "failed"
    assert "--deadline 100" in result["command"] and "- `gone` (onnxruntime," in (tmp_path / "r.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "r.json", "r.md"]  # in place, no .tmp left
