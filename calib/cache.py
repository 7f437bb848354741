"""TensorRT calibration caches: the text format TensorRT's implicit INT8 calibrators read and write.

Format (one line per tensor after a header)::

    TRT-<version number>-<algorithm>
    <tensor name>: <scale as the 8 hex digits of its big-endian IEEE-754 float32 bits>

with ``scale = amax / 127`` (symmetric INT8). The version number is TensorRT's ``NV_TENSORRT_VERSION``:
``major * 1000 + minor * 100 + patch`` up to 9.x (8.5.2 -> 8502), ``major * 10000 + minor * 100 +
patch`` from 10.0 (10.3.0 -> 100300). The algorithm must be the calibrator's that reads the cache
(``EntropyCalibration2`` for ``IInt8EntropyCalibrator2``).

Which TensorRT takes which path: the implicit-quantization path with a calibrator (and so this cache)
exists in TensorRT 8.x and 10.x, deprecated since 10.1 and removed in 11; JetPack 5.1 ships 8.5.2 and
JetPack 6.1/6.2 ship 10.3. TensorRT 11 (and any strongly typed network) takes the Q/DQ ONNX instead.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from tgir.errors import TgirUserError

DEFAULT_CACHE_VERSION = "10.3.0"  # JetPack 6.1/6.2: the newest TensorRT that still reads calibration caches
CACHE_SUFFIX = ".calibration.cache"  # <graph>.calibration.cache: one cache per graph of a bundle
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{1,8})$")


def version_number(version: str) -> int:
    """TensorRT's ``NV_TENSORRT_VERSION`` for a version string: ``"8.5.2"`` -> 8502, ``"10.3.0"`` -> 100300."""
    parts = version.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise TgirUserError(f"TensorRT version {version!r}: expected MAJOR.MINOR.PATCH, e.g. 10.3.0")
    major, minor, patch = (int(p) for p in [*parts, "0", "0"][:3])
    if major >= 11:
        raise TgirUserError(f"TensorRT {version} removed implicit INT8 calibration; build from the Q/DQ ONNX")
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def encode_scale(amax: float) -> str:
    """The cache's hex text for a tensor whose symmetric range is ``[-amax, amax]``."""
    if not amax > 0:
        raise TgirUserError(f"calibration range must be positive, got amax={amax}")
    return struct.pack(">f", amax / 127.0).hex()


def decode_scale(text: str) -> float:
    """The amax a cache line's hex text stands for."""
    return struct.unpack(">f", bytes.fromhex(text.zfill(8)))[0] * 127.0


def write_calibration_cache(path: str | Path, amax: dict[str, float], tensorrt: str = DEFAULT_CACHE_VERSION,
                            algorithm: str = "EntropyCalibration2", allow_empty: bool = False) -> Path:
    """Write ``amax`` (tensor name -> symmetric bound) as a cache for ``tensorrt``'s calibrator;
    ``allow_empty`` for a graph with nothing to quantize (TensorRT then keeps it in float)."""
    if algorithm not in ALGORITHMS:
        raise TgirUserError(f"unknown calibration algorithm {algorithm!r}; valid choices: {', '.join(ALGORITHMS)}")
    if not amax and not allow_empty:
        raise TgirUserError("no calibrated tensors to write")
    lines = [f"TRT-{version_number(tensorrt)}-{algorithm}"]
    for name in sorted(amax):
        if not name or name != name.strip() or "\n" in name or ": " in name:
            raise TgirUserError(f"tensor name {name!r} cannot be written to a calibration cache")
        lines.append(f"{name}: {encode_scale(amax[name])}")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_calibration_cache(path: str | Path) -> tuple[int, str, dict[str, float]]:
    """Read a cache: ``(version number, algorithm, {tensor name: amax})``."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TgirUserError(f"{path}: cannot read calibration cache ({err})") from None
    header = _HEADER.match(lines[0].strip()) if lines else None
    if header is None:
        raise TgirUserError(f"{path}: not a TensorRT calibration cache "
                            "(first line should be TRT-<version>-<algorithm>)")
    amax = {}
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        match = _LINE.match(line.rstrip())
        if match is None:
            raise TgirUserError(f"{path}:{number}: expected '<tensor>: <hex scale>', got {line!r}")
        amax[match.group(1)] = decode_scale(match.group(2))
    return int(header.group(1)), header.group(2), amax


# -- ranges of a float graph's tensors, from calibrated module inputs ------------------------------------
_WEIGHTED = ("Conv", "Gemm", "MatMul")


def cache_entries(graph, weights: dict[str, np.ndarray], amax: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """The calibration-cache entries of a float ONNX graph: ``{tensor name: amax}``.

    Calibration observes the input of each quantized module (PyTorch names); the implicit-INT8
    path needs ranges keyed by the *float graph's* tensor names, which the exporter does not keep
    for nodes inside ``If`` bodies (their name scopes are bare ``linear_3``) and changes for convs
    whose BatchNorm it folded. The link used here does not depend on names: a Conv, Gemm or MatMul
    (at any depth of ``If``/``Loop`` bodies) whose weight initializer holds the same values as a
    calibrated module's weight (BatchNorm-folded, as the graph is) gets that module's input range
    for its data input.

    Args:
        graph: The float ``onnx.ModelProto``.
        weights: Module name -> its float weight as the module holds it (``[out, in, ...]``).
        amax: Module name -> symmetric bound of its calibrated input.

    Returns:
        The entries, and the modules matched to no node (reported, not fatal: TensorRT keeps a
        tensor without a range in higher precision).
    """
    inits = {t.name: t for t in graph.graph.initializer}
    by_size: dict[int, list[str]] = {}
    for name, w in weights.items():
        by_size.setdefault(w.size, []).append(name)
    entries: dict[str, float] = {}
    matched: set[str] = set()
    for node in _walk(graph.graph):
        if node.op_type not in _WEIGHTED or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = _node_weight(node, inits[node.input[1]])
        names = [n for n in by_size.get(w.size, ()) if n in amax and _same(weights[n], w)]
        if len(names) != 1:  # none, or an ambiguous twin: leave the tensor to TensorRT's fallback
            continue
        entries[node.input[0]] = max(entries.get(node.input[0], 0.0), amax[names[0]])
        matched.add(names[0])
    return entries, sorted(set(weights) - matched)


def _walk(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _walk(sub)


def _node_weight(node, init) -> np.ndarray:
    """The node's weight in the module's layout (``[out, in, ...]``)."""
    from onnx import numpy_helper

    w = numpy_helper.to_array(init)
    if node.op_type == "MatMul" or (node.op_type == "Gemm" and not any(
            a.name == "transB" and a.i for a in node.attribute)):
        return w.T  # [in, out] in the graph
    return w


def _same(module: np.ndarray, node: np.ndarray) -> bool:
    return module.shape == node.shape and np.allclose(module, node, rtol=1e-4, atol=1e-6)
