"""TensorRT engine facts: what a bundle's engines were built with, and whether this machine may run them.

Pure Python (no TensorRT, no CUDA), so the exporter, the runner and the tests share one set of rules.
The builder writes ``manifest.build["tensorrt"]``; at load the runner compares it with the installed
TensorRT and the GPU and refuses, with a message, what TensorRT would otherwise reject with a crash
or, worse, run from a stale engine. The compatibility rules follow NVIDIA's documentation (see
``export/TENSORRT.md``):

- A plan runs only on the TensorRT version that built it, unless built with ``VERSION_COMPATIBLE``
  (TensorRT >= 8.6): then on the same or a newer runtime of the same major version, and across
  majors only 8 -> 9/10 and 10 -> 11.
- Without hardware compatibility (never used here) a plan runs only on the compute capability it
  was built for. Another GPU model of the same compute capability works but TensorRT warns about
  it, so a different device name is reported only when asked (``strict_device``).
"""

from __future__ import annotations

import re

from tgir.errors import TgirUserError

REBUILD = "rebuild them with `tgir-export build-engine --backend tensorrt`"
# Version-compatible plans across major versions, as NVIDIA's support matrix lists them.
CROSS_MAJOR = {(8, 9), (8, 10), (9, 10), (10, 11)}
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``.

    Raises:
        TgirUserError: Not a MAJOR.MINOR[.PATCH...] version.
    """
    match = _VERSION.match(str(text).strip())
    if match is None:
        raise TgirUserError(f"TensorRT version {text!r}: expected MAJOR.MINOR.PATCH, e.g. 10.3.0")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def runs_on(built: str, installed: str, version_compatible: bool) -> bool:
    """Whether a plan built by TensorRT ``built`` deserializes on TensorRT ``installed``."""
    b, i = parse_version(built), parse_version(installed)
    if not version_compatible:
        return b == i
    if i < b:
        return False  # newer plans never run on older runtimes
    return b[0] == i[0] or (b[0], i[0]) in CROSS_MAJOR


def _graphs_and_build(manifest) -> tuple[dict, dict, dict]:
    """``(graphs, build, files)`` of a ``Manifest`` or of its JSON dict."""
    if isinstance(manifest, dict):
        return manifest.get("graphs", {}), manifest.get("build", {}), manifest.get("files", {})
    return manifest.graphs, manifest.build, manifest.files


def engine_facts_mismatch(manifest, runtime_facts: dict, strict_device: bool = False) -> list[str]:
    """Why this machine cannot run the bundle's engines (empty: it can).

    Args:
        manifest: The bundle's ``Manifest`` (or its JSON dict).
        runtime_facts: ``{"version", "device", "compute_capability"}`` of the installed TensorRT and
            the GPU the runner will use.
        strict_device: Also count a different GPU model of the same compute capability.

    Returns:
        One sentence per problem.
    """
    graphs, build, _ = _graphs_and_build(manifest)
    facts = build.get("tensorrt")
    if not facts:
        return [f"the bundle has no TensorRT engines; {REBUILD}"]
    problems = [f"graph {g!r} has no engine file in the manifest; {REBUILD}"
                for g, spec in graphs.items() if not spec.get("engine")]
    built, installed = facts.get("version", "?"), runtime_facts.get("version", "?")
    compatible = bool(facts.get("version_compatible"))
    if not runs_on(built, installed, compatible):
        kind = "version-compatible engines need TensorRT" if compatible else "engines run only on TensorRT"
        wanted = f">= {built} (same major, or 8->10, 10->11)" if compatible else built
        problems.append(f"the engines were built with TensorRT {built}; this machine has {installed} "
                        f"({kind} {wanted}); {REBUILD} here")
    cc_built, cc_here = str(facts.get("compute_capability")), str(runtime_facts.get("compute_capability"))
    if cc_built != cc_here:
        problems.append(f"the engines were built for compute capability {cc_built} ({facts.get('device')}); "
                        f"this GPU ({runtime_facts.get('device')}) is {cc_here}; {REBUILD} on this device")
    elif strict_device and facts.get("device") != runtime_facts.get("device"):
        problems.append(f"the engines were built on {facts.get('device')}; this GPU is {runtime_facts.get('device')}")
    return problems


def stale_engines(manifest, calibration_sha256: str | None = None) -> list[str]:
    """Engines built from other inputs than the bundle now holds (empty: all fresh).

    An engine is stale when the ONNX graph it was built from has another SHA-256 than the bundle's
    graph file now (``manifest.files``), or when ``calibration_sha256`` is given and differs from the
    calibration cache the engines were built with.
    """
    graphs, build, files = _graphs_and_build(manifest)
    facts = build.get("tensorrt")
    if not facts:
        return []  # no engines at all: engine_facts_mismatch says so
    built_from = facts.get("onnx_sha256", {})
    problems = []
    for name, spec in graphs.items():
        now = files.get(spec["file"])
        if name not in built_from:
            problems.append(f"no record of the ONNX the {name} engine was built from; {REBUILD}")
        elif now != built_from[name]:
            problems.append(f"the {name} engine is stale: {spec['file']} changed since the engine was built; "
                            f"{REBUILD}")
    if calibration_sha256 is not None and facts.get("calibration_sha256") != calibration_sha256:
        problems.append(f"the engines were built with another calibration cache; {REBUILD}")
    return problems


def require_fresh_engine(manifest, runtime_facts: dict, calibration_sha256: str | None = None,
                         strict_device: bool = False) -> None:
    """Refuse engines this machine cannot run or that no longer match the bundle's graphs.

    Raises:
        TgirUserError: Every problem, one per line (stale engines, another TensorRT version or
            compute capability, missing engine entries).
    """
    problems = stale_engines(manifest, calibration_sha256) + engine_facts_mismatch(manifest, runtime_facts,
                                                                                  strict_device)
    if problems:
        raise TgirUserError("cannot use the bundle's TensorRT engines:\n  " + "\n  ".join(problems))
