"""Facts a benchmark records about where it ran: CPU model and cores, memory, OS, GPUs, versions.

Nothing here imports torch or a runtime: GPUs come from nvidia-smi, versions from package metadata.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

# The vector features the CPU kernels of ONNX Runtime and PyTorch dispatch on. Int8 GEMMs run several
# times faster with VNNI or AMX (x86) or dot-product / i8mm (Arm) than without, so a CPU latency figure
# means little without them: the same INT8 bundle measured 6.1x eager on an AVX2 VM and 9.4x on an
# AVX-512 VNNI one (benchmarks/RESULTS.md, sessions 7 and 8).
CPU_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "asimd", "asimddp", "i8mm", "sve", "bf16")


def parse_cpuinfo(text: str) -> dict:
    """CPU model, physical cores and vector features from the text of ``/proc/cpuinfo``.

    Returns:
        ``{"cpu", "physical_cores", "cpu_features"}``; ``cpu`` is None when no model name is listed,
        ``cpu_features`` keeps :data:`CPU_FEATURES` order (x86 ``flags``, Arm ``Features``).
    """
    cpu, cores, flags, block = None, set(), set(), {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if block:
                cores.add((block.get("physical id"), block.get("core id")))
            block = {}
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        block[key] = value
        if key in ("model name", "Model") and cpu is None:
            cpu = value
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return {"cpu": cpu, "physical_cores": len(cores - {(None, None)}) or None,
            "cpu_features": [f for f in CPU_FEATURES if f in flags]}


# Settings that change how thread pools share the cores (and so the timings): recorded with each run.
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def machine_facts() -> dict:
    """CPU model, cores and vector features (/proc/cpuinfo), memory, OS, and GPUs as nvidia-smi lists
    them (no torch)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""  # not Linux: the model comes from platform below, cores and features stay unknown
    info = parse_cpuinfo(cpuinfo)
    facts = {"cpu": info["cpu"] or platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
             "physical_cores": info["physical_cores"], "cpu_features": info["cpu_features"],
             "memory_gib": _mem_gib(), "os": platform.platform(), "python": platform.python_version(), "gpus": [],
             "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0:
            facts["gpus"] = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict:
    """Installed versions of tgir and what it benchmarks with (package metadata; nothing imported)."""
    out = {}
    for name in ("tgir", "numpy", "torch", "onnxruntime", "onnxruntime-gpu", "faiss-cpu", "tensorrt", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
