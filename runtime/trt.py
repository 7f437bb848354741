"""TensorRT runner: a bundle's engines behind the runner protocol, with cuda-python buffers.

Imports neither TensorRT nor cuda-python until a runner (or a helper below) is used, and never the
exporter. Opening a bundle first checks its engine facts against the installed TensorRT and the
GPU (``tgir.runtime.engine_facts``): a stale or foreign engine is refused with a message instead of
a TensorRT crash. Then, per graph: the engine is deserialized, device buffers for the largest batch
and pinned host buffers are allocated once, and their addresses are bound once
(``set_tensor_address``); each call only sets the input shapes, copies in, runs
``execute_async_v3`` on the runner's CUDA stream and copies out. Every TensorRT and CUDA call used
here is listed, with the page that documents it, in ``export/TENSORRT.md``.

Not thread-safe: one runner owns one stream and one set of buffers.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tgir.runtime.base import Runner
from tgir.runtime.engine_facts import REBUILD, require_fresh_engine

from tgir.errors import TgirUserError
from tgir.manifest import Manifest

INSTALL_TENSORRT = ('install it with `pip install -e ".[trt]"` (x86-64/SBSA), or use the TensorRT that '
                    "JetPack ships on a Jetson")
INSTALL_CUDA = 'install cuda-python with `pip install -e ".[gpu]"`'


def tensorrt_module():
    """Import TensorRT (lazily: nothing in tgir needs it until an engine is built or run).

    Raises:
        TgirUserError: TensorRT is missing or cannot load its libraries; the message says how to
            install it.
    """
    try:
        import tensorrt
    except (ImportError, OSError) as err:  # OSError: the bindings are there, libnvinfer is not
        raise TgirUserError(f"TensorRT is not usable here ({err}); {INSTALL_TENSORRT}") from None
    return tensorrt


def cuda_runtime():
    """The CUDA runtime module of cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6.1).

    Raises:
        TgirUserError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:  # the layout before cuda-python 12.6.1; removed in 13.0
            from cuda import cudart as runtime
        except ImportError:
            raise TgirUserError(f"cuda-python is not installed; {INSTALL_CUDA}") from None
    return runtime


def cuda_check(cudart, result, what: str):
    """Unpack a cuda-python ``(cudaError_t, *values)`` result, raising on an error.

    Returns:
        The single value, the tuple of values, or None when the call returns only its status.

    Raises:
        TgirUserError: The call failed; the message names the call and CUDA's error name.
    """
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        text = cudart.cudaGetErrorString(err)[1]
        name, text = (v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in (name, text))
        raise TgirUserError(f"CUDA {what} failed: {name} ({text})")
    return values[0] if len(values) == 1 else (values or None)


def device_facts(device: int = 0) -> dict:
    """Name and compute capability of a CUDA device: ``{"device", "compute_capability"}``.

    Raises:
        TgirUserError: No CUDA driver or GPU, or no such device index.
    """
    cudart = cuda_runtime()
    count = cuda_check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount (is there a CUDA GPU?)")
    if not 0 <= device < count:
        raise TgirUserError(f"CUDA device {device}: this machine has {count} device(s)")
    prop = cuda_check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"device": name.rstrip("\x00").strip(), "compute_capability": f"{prop.major}.{prop.minor}"}


def select_device(device: int) -> None:
    """Make ``device`` current for this thread (TensorRT builds and runs on the current device)."""
    cudart = cuda_runtime()
    cuda_check(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")


def make_logger(trt, sink=None):
    """A ``trt.ILogger`` that keeps TensorRT's errors (for our messages) and hands lines to ``sink``.

    Verbose messages are dropped: they run to megabytes per build and say little to a user.
    """
    sev = trt.ILogger.Severity
    letters = {sev.INTERNAL_ERROR: "F", sev.ERROR: "E", sev.WARNING: "W", sev.INFO: "I"}

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # the docs require the explicit base __init__
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            letter = letters.get(severity)
            if letter in ("F", "E"):
                self.errors.append(str(msg))
            if letter and sink is not None:
                sink(f"[{letter}] {msg}")

    return _Logger()


def engine_dtype_problem(name: str, contract: str, engine: np.dtype) -> str | None:
    """Why an engine tensor's dtype cannot carry the contract's (None: it can).

    The one tolerated difference is int64 -> int32: TensorRT 8.x has no INT64, so its ONNX parser
    turns int64 graph inputs into INT32 network inputs; the runner narrows (range-checked) on copy.
    """
    if np.dtype(contract) == engine or (contract == "int64" and engine == np.int32):
        return None
    return f"tensor {name}: the engine has {engine}, the manifest says {contract}"


def feed_for_engine(name: str, value: np.ndarray, dtype: np.dtype, rows: int | None = None) -> np.ndarray:
    """``value`` as the engine takes it: cast to ``dtype`` and, for a fixed-batch engine, padded to
    ``rows`` by repeating the last sample (its outputs are cut back to the real batch).

    Raises:
        TgirUserError: A value does not fit the engine's integer type.
    """
    dtype = np.dtype(dtype)
    if value.dtype != dtype:
        if dtype.kind in "iu" and value.size:
            info = np.iinfo(dtype)
            if value.min() < info.min or value.max() > info.max:
                raise TgirUserError(f"input {name}: values outside {dtype} range [{info.min}, {info.max}] "
                                    "cannot be passed to this engine")
        value = value.astype(dtype)
    if rows is not None and len(value) < rows:
        value = np.concatenate([value, np.repeat(value[-1:], rows - len(value), axis=0)])
    return np.ascontiguousarray(value)


def max_shape(shape: list, dynamic: dict) -> tuple[int, ...]:
    """A contract shape with every named axis at the top of its range (the buffer size)."""
    return tuple(d if isinstance(d, int) else int(dynamic[d][2]) for d in shape)


@dataclass(frozen=True)
class TrtOptions:
    """How to run a bundle's engines.

    Attributes:
        device: CUDA device index.
        lean_runtime: Path of TensorRT's lean runtime library (``libnvinfer_lean.so.*``), needed
            only for engines built with ``--exclude-lean-runtime``.
        strict_device: Refuse engines built on another GPU model of the same compute capability
            (TensorRT runs them but warns that performance or results may differ).
    """

    device: int = 0
    lean_runtime: str | None = None
    strict_device: bool = False

    def __post_init__(self) -> None:
        if self.device < 0:
            raise TgirUserError(f"CUDA device index must be >= 0, got {self.device}")


@dataclass
class _Buffer:
    device: int  # device pointer
    host: np.ndarray  # pinned host memory, flat, the engine's dtype
    host_ptr: int


class _Graph:
    """One engine with its execution context and bound buffers."""

    def __init__(self, engine, context, inputs: list[str], outputs: list[str], rows: int | None) -> None:
        self.engine, self.context = engine, context
        self.inputs, self.outputs, self.rows = inputs, outputs, rows
        self.buffers: dict[str, _Buffer] = {}


class CudaEventMark:
    """A CUDA event recorded on the runner's stream, timed against another like ``torch.cuda.Event``
    (``elapsed_time``), so benchmarks split a call into copy in / run / copy out the same way for
    TensorRT as for PyTorch. ``close()`` destroys it."""

    def __init__(self, cudart, stream) -> None:
        self._cudart = cudart
        self.event = cuda_check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
        cuda_check(cudart, cudart.cudaEventRecord(self.event, stream), "cudaEventRecord")

    def elapsed_time(self, end: CudaEventMark) -> float:
        """Milliseconds from this event to ``end`` (both completed: call after synchronising)."""
        return float(cuda_check(self._cudart, self._cudart.cudaEventElapsedTime(self.event, end.event),
                                "cudaEventElapsedTime"))

    def close(self) -> None:
        if self.event is not None:
            self._cudart.cudaEventDestroy(self.event)
            self.event = None


class TensorRTRunner(Runner):
    """Runs a bundle's TensorRT engines (``tgir-export build-engine --backend tensorrt``).

    Outputs are fresh arrays (copied out of the reused pinned buffers), never views.

    Args:
        folder: Bundle directory.
        options: Device and lean-runtime settings.
        manifest: Already loaded manifest, if any.

    Raises:
        TgirUserError: TensorRT or cuda-python missing, no GPU, stale engines, engines built for
            another TensorRT version or compute capability, or an engine whose tensors differ from
            the manifest's contract.
    """

    backend = "tensorrt"
    events: list | None = None  # a list: each call appends its 4 CudaEventMarks (benchmarks' H2D/compute/D2H)

    def __init__(self, folder: str | Path, options: TrtOptions = TrtOptions(), manifest: Manifest | None = None):
        super().__init__(folder, manifest)
        self.options = options
        self._graphs: dict[str, _Graph] = {}
        self._allocations: list[tuple[str, int]] = []
        self._stream = None
        self._trt, self._cudart = tensorrt_module(), cuda_runtime()
        facts = {"version": self._trt.__version__, **device_facts(options.device)}
        require_fresh_engine(self.manifest, facts, strict_device=options.strict_device)
        built = self.manifest.build["tensorrt"]
        if built.get("device") != facts["device"]:
            warnings.warn(f"{self.folder}: engines built on {built.get('device')}, running on {facts['device']} "
                          "(same compute capability; TensorRT may run slower)", stacklevel=2)
        try:
            select_device(options.device)
            self._stream = cuda_check(self._cudart, self._cudart.cudaStreamCreate(), "cudaStreamCreate")
            self._logger = make_logger(self._trt)
            self._runtime = self._make_runtime(built)
            for name, spec in self.graphs.items():
                self._graphs[name] = self._open(name, spec)
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------------
    def _make_runtime(self, built: dict):
        trt = self._trt
        runtime = trt.Runtime(self._logger)
        if built.get("exclude_lean_runtime"):
            if not self.options.lean_runtime:
                raise TgirUserError(f"{self.folder}: the engines were built without the lean runtime "
                                    f"(--exclude-lean-runtime); pass the TensorRT {built.get('version')} lean "
                                    "runtime library (TrtOptions(lean_runtime=.../libnvinfer_lean.so...))")
            self._base_runtime = runtime  # keep the runtime that loaded the lean one alive
            runtime = runtime.load_runtime(self.options.lean_runtime)
            if runtime is None:
                raise TgirUserError(f"{self.options.lean_runtime}: TensorRT could not load this lean runtime")
        elif built.get("version_compatible"):
            # The plan embeds the lean runtime, i.e. host code; the bundle's checksums vouch for it.
            runtime.engine_host_code_allowed = True
        if built.get("dla_core") is not None:
            runtime.DLA_core = int(built["dla_core"])
        return runtime

    def _open(self, name: str, spec: dict) -> _Graph:
        trt, path = self._trt, self.folder / spec["engine"]
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise TgirUserError(f"{path}: TensorRT cannot deserialize this engine "
                                f"({'; '.join(self._logger.errors[-3:]) or 'no reason given'}); {REBUILD}")
        context = engine.create_execution_context()
        if context is None:
            raise TgirUserError(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        tensors = {}
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            mode = "input" if engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT else "output"
            tensors[tname] = (mode, np.dtype(trt.nptype(engine.get_tensor_dtype(tname))))
        _require_engine_contract(path, spec, tensors)
        inputs = [t["name"] for t in spec["inputs"]]
        lo, _, hi = engine.get_tensor_profile_shape(inputs[0], 0)
        graph = _Graph(engine, context, inputs, [t["name"] for t in spec["outputs"]],
                       rows=int(hi[0]) if tuple(lo) == tuple(hi) else None)  # fixed batch (DLA)
        for t in [*spec["inputs"], *spec["outputs"]]:
            dtype = tensors[t["name"]][1]
            graph.buffers[t["name"]] = self._allocate(math.prod(max_shape(t["shape"], spec["dynamic"])), dtype)
            context.set_tensor_address(t["name"], graph.buffers[t["name"]].device)  # bound once, reused
        return graph

    def _allocate(self, count: int, dtype: np.dtype) -> _Buffer:
        cudart, nbytes = self._cudart, count * dtype.itemsize
        device = cuda_check(cudart, cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})")
        self._allocations.append(("device", device))
        host_ptr = cuda_check(cudart, cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})")
        self._allocations.append(("host", host_ptr))
        raw = np.ctypeslib.as_array(ctypes.cast(ctypes.c_void_p(host_ptr), ctypes.POINTER(ctypes.c_ubyte)), (nbytes,))
        return _Buffer(int(device), raw.view(dtype), int(host_ptr))

    # -- running -------------------------------------------------------------------------------
    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        marks = [] if self.events is not None else None
        try:
            return self._run_marked(graph, feeds, marks)
        except BaseException:
            for mark in marks or []:
                mark.close()
            raise

    def _run_marked(self, graph: str, feeds: dict[str, np.ndarray], marks: list | None) -> list[np.ndarray]:
        g, cudart, stream = self._graphs[graph], self._cudart, self._stream
        rows = len(feeds[g.inputs[0]])
        self._mark(marks)
        for name in g.inputs:
            buf = g.buffers[name]
            value = feed_for_engine(name, feeds[name], buf.host.dtype, g.rows)
            buf.host[:value.size] = value.reshape(-1)
            cuda_check(cudart, cudart.cudaMemcpyAsync(buf.device, buf.host_ptr, value.nbytes,
                                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                       "cudaMemcpyAsync (to device)")
            if not g.context.set_input_shape(name, value.shape):
                raise TgirUserError(f"{graph}: TensorRT refused input shape {value.shape} for {name}")
        self._mark(marks)
        if not g.context.execute_async_v3(self._stream_handle()):
            raise TgirUserError(f"{graph}: TensorRT failed to run ({'; '.join(self._logger.errors[-3:])})")
        self._mark(marks)
        shapes = []
        for name in g.outputs:
            buf, shape = g.buffers[name], tuple(g.context.get_tensor_shape(name))
            if min(shape, default=0) < 0 or math.prod(shape) > buf.host.size:
                raise TgirUserError(f"{graph}: output {name} has shape {shape}, beyond its buffer; {REBUILD}")
            cuda_check(cudart, cudart.cudaMemcpyAsync(buf.host_ptr, buf.device, math.prod(shape) * buf.host.itemsize,
                                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                       "cudaMemcpyAsync (to host)")
            shapes.append(shape)
        self._mark(marks)
        cuda_check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        if marks is not None:
            self.events.append(marks)
        kinds = {t["name"]: t["dtype"] for t in self.graphs[graph]["outputs"]}
        return [g.buffers[n].host[:math.prod(s)].reshape(s)[:rows].astype(kinds[n])  # a copy, never a view
                for n, s in zip(g.outputs, shapes, strict=True)]

    def _mark(self, marks: list | None) -> None:
        if marks is not None:
            marks.append(CudaEventMark(self._cudart, self._stream))

    def _stream_handle(self) -> int:
        # cuda-python 12.9.1+/13 deprecate int(handle) in favour of get_cuda_native_handle.
        try:
            from cuda.bindings.utils import get_cuda_native_handle
        except ImportError:
            return int(self._stream)
        return get_cuda_native_handle(self._stream)

    def close(self) -> None:
        """Free the device and pinned buffers, the stream, contexts and engines (idempotent)."""
        super().close()
        for graph in getattr(self, "_graphs", {}).values():  # contexts before their engines
            graph.context = None
            graph.engine = None
        self._graphs = {}
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        # Best effort, one by one: a failed free must neither stop the others nor hide the first error.
        for kind, ptr in reversed(getattr(self, "_allocations", [])):
            with contextlib.suppress(Exception):
                (cudart.cudaFree if kind == "device" else cudart.cudaFreeHost)(ptr)
        if getattr(self, "_stream", None) is not None:
            with contextlib.suppress(Exception):
                cudart.cudaStreamDestroy(self._stream)
        self._allocations, self._stream = [], None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _require_engine_contract(path: Path, spec: dict, tensors: dict[str, tuple[str, np.dtype]]) -> None:
    """The engine's I/O tensors must be the manifest's: names, directions and (castable) dtypes."""
    want = {t["name"]: ("input", t["dtype"]) for t in spec["inputs"]}
    want.update({t["name"]: ("output", t["dtype"]) for t in spec["outputs"]})
    if {n: m for n, (m, _) in tensors.items()} != {n: m for n, (m, _) in want.items()}:
        raise TgirUserError(f"{path}: the engine's tensors {sorted(tensors)} differ from manifest.json's "
                            f"{sorted(want)}; {REBUILD}")
    problems = [p for n, (_, dtype) in want.items() if (p := engine_dtype_problem(n, dtype, tensors[n][1]))]
    if problems:
        raise TgirUserError(f"{path}: " + "; ".join(problems) + f"; {REBUILD}")
