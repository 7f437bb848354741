"""Facts a benchmark records about where it ran: CPU model and cores, memory, OS, GPUs, versions.

Nothing here imports torch or a runtime: GPUs come from nvidia-smi, versions from package metadata.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def machine_facts() -> dict:
    """CPU model and cores (/proc/cpuinfo), memory, OS, and GPUs as nvidia-smi lists them (no torch)."""
    cpu, cores = platform.processor() or platform.machine(), set()
    try:
        block: dict[str, str] = {}
        for line in [*Path("/proc/cpuinfo").read_text().splitlines(), ""]:
            if not line.strip():
                cores.add((block.get("physical id"), block.get("core id")))
                block = {}
                continue
            key, _, value = line.partition(":")
            block[key.strip()] = value.strip()
            if key.strip() == "model name":
                cpu = value.strip()
    except OSError:
        pass
    facts = {"cpu": cpu, "logical_cpus": os.cpu_count(), "physical_cores": len(cores - {(None, None)}) or None,
             "memory_gib": _mem_gib(), "os": platform.platform(), "python": platform.python_version(), "gpus": []}
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
