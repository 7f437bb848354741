"""``benchmarks/device/run.sh``, the one command for a lent GPU machine, rehearsed here without CUDA
(``REHEARSE=1``): it must run to the end inside its deadline, measure the CPU rows, and report every
GPU target as skipped with its reason. Lent machines are rare and short, so the script is checked
where the tests run, not first there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds the shipped AMC's fp32 bundle and scores 360 queries twice (about 60 s)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device" / "run.sh"


def _run(out: Path, work: Path, **env: str) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    knobs = {"REHEARSE": "1", "INSTALL": "0", "AOTI": "0", "BATCHES": "1", "ITERS": "2", "WARMUP": "0",
             "SEARCH_SIZES": "1K", "DEADLINE": "400", "WORK": str(work), "PATH": path, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), str(out)], env={**os.environ, **knobs}, capture_output=True,
                          text=True, timeout=600, cwd=work.parent)


@pytest.mark.skipif(sys.platform != "linux", reason="the script is for Linux GPU machines")
def test_rehearsal_measures_the_cpu_rows_and_skips_the_gpu_ones(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the rehearsal is for machines without one")
    done = _run(tmp_path / "out", tmp_path / "work")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "bench_gpu.json").read_text())
    assert result["complete"] and result["baseline"] == "eager-cpu"
    assert [(s["gallery"], s["batch"]) for s in result["search_scaling"]] == [(1000, 1)]
    assert result["machine"]["thread_env"]["OPENBLAS_NUM_THREADS"] == os.environ.get("OPENBLAS_NUM_THREADS", "1")
    by = {t["label"]: t for t in result["targets"]}
    assert list(by) == ["eager-cpu", "eager-cuda", "ort-cpu", "ort-cuda", "trt", "compile-cuda"]
    for label in ("eager-cpu", "ort-cpu"):
        assert by[label]["status"] == "ok" and len(by[label]["results"]) == 4
        assert by[label]["accuracy"]["queries"] == 360 and by[label]["accuracy"]["R@1"] > 50
    assert abs(by["eager-cpu"]["accuracy"]["R@1"] - by["ort-cpu"]["accuracy"]["R@1"]) < 0.5
    for label in ("eager-cuda", "ort-cuda", "trt", "compile-cuda"):
        assert by[label]["status"] == "skipped" and by[label]["reason"]
    table = (tmp_path / "out" / "bench_gpu.md").read_text()
    assert "| `eager-cpu` | torch | fp32 | cpu | 1 |" in table and "- `trt` (tensorrt," in table
    log = (tmp_path / "out" / "bench_gpu.log").read_text()
    assert "REHEARSE=1: no CUDA device" in log and "5/5 tgir bench" in log


def test_without_cuda_and_without_rehearse_it_stops_at_once_and_says_why(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    done = _run(tmp_path / "out", tmp_path / "work", REHEARSE="0")
    assert done.returncode != 0
    assert "PyTorch sees no CUDA device" in done.stderr and "REHEARSE=1" in done.stderr
    assert not (tmp_path / "out" / "bench_gpu.json").exists()
