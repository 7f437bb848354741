"""TensorRT engines against a recording stand-in of the documented TensorRT / cuda-python API (enum
members per version, strict signatures, host memory posing as device memory): the builder's and
the runner's call sequences, buffer handling, reuse and staleness, DLA, calibrators and caches run
here without TensorRT or a GPU. Pure-Python checks and real engines: ``test_engine.py``."""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tgir.calib.cache import write_calibration_cache
from tgir.export.engine import (
    EngineConfig,
    cuda_device_available,
    engines_from_bundle,
)
from tgir.runtime.trt import (
    TensorRTRunner,
    cuda_check,
)

from tgir.data.images import Preprocess
from tgir.errors import TgirUserError
from tgir.manifest import Manifest
from tgir.vocab import Vocabulary


def test_cpu_flavour_int8_bundle_is_refused(tmp_path, contract_graphs):
    _fake_bundle(tmp_path, contract_graphs, precision="int8", flavour="cpu")
    with pytest.raises(TgirUserError, match="--flavour tensorrt"):
        engines_from_bundle(tmp_path / "b")


# -- a recording stand-in of the documented APIs -------------------------------------------------

_ONNX_TYPES = {TensorProto.FLOAT: "FLOAT", TensorProto.INT64: "INT64", TensorProto.FLOAT16: "HALF"}
_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64}


class _Cudart(types.ModuleType):
    """cuda.bindings.runtime: host memory posing as device memory; copies check their direction."""

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self):
        super().__init__("cuda.bindings.runtime")
        self.device, self.host, self.current = {}, {}, None
        self.clock, self.events, self.next_event = 0.0, {}, 1  # ms; copies advance it (H2D 0.25, D2H 0.5)

    def _alloc(self, pool, size):
        buf = ctypes.create_string_buffer(size)
        pool[ctypes.addressof(buf)] = buf
        return self.cudaError_t.cudaSuccess, ctypes.addressof(buf)

    def cudaMalloc(self, size):
        return self._alloc(self.device, size)

    def cudaMallocHost(self, size):
        return self._alloc(self.host, size)

    def cudaFree(self, devPtr):
        del self.device[devPtr]
        return (self.cudaError_t.cudaSuccess,)

    def cudaFreeHost(self, ptr):
        del self.host[ptr]
        return (self.cudaError_t.cudaSuccess,)

    def _inside(self, pool, ptr, count):
        return any(base <= ptr and ptr + count <= base + len(buf) for base, buf in pool.items())

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        to_device = kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice
        assert isinstance(stream, _Stream)
        assert self._inside(self.device if to_device else self.host, dst, count)
        assert self._inside(self.host if to_device else self.device, src, count)
        ctypes.memmove(dst, src, count)
        self.clock += 0.25 if to_device else 0.5
        return (self.cudaError_t.cudaSuccess,)

    def cudaEventCreate(self):
        event, self.next_event = self.next_event, self.next_event + 1
        self.events[event] = None
        return self.cudaError_t.cudaSuccess, event

    def cudaEventRecord(self, event, stream):
        assert isinstance(stream, _Stream) and event in self.events
        self.events[event] = self.clock
        return (self.cudaError_t.cudaSuccess,)

    def cudaEventElapsedTime(self, start, end):
        return self.cudaError_t.cudaSuccess, self.events[end] - self.events[start]

    def cudaEventDestroy(self, event):
        del self.events[event]
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):
        return self.cudaError_t.cudaSuccess, _Stream()

    def cudaStreamSynchronize(self, stream):
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        return (self.cudaError_t.cudaSuccess,)

    def cudaSetDevice(self, device):
        self.current = device
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetDeviceCount(self):
        return self.cudaError_t.cudaSuccess, 1

    def cudaGetDeviceProperties(self, device):
        return self.cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"Fake Orin", major=8, minor=7)

    def cudaGetErrorName(self, error):
        return self.cudaError_t.cudaSuccess, error.name.encode()

    def cudaGetErrorString(self, error):
        return self.cudaError_t.cudaSuccess, b"described"


class _Stream:
    def __int__(self):
        return 7


def _fake_tensorrt(version: str, dla_cores: int = 0) -> types.ModuleType:
    """``tensorrt`` with the enum members of ``version``'s Python bindings that matter here."""
    major, minor = (int(p) for p in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__, trt.records = version, []
    network_flags = {8: {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1},
                     9: {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1, "STRONGLY_TYPED": 2},
                     10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}}.get(major, {"STRONGLY_TYPED": 0})
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", network_flags)
    flags = ["DEBUG", "GPU_FALLBACK"] + (["FP16", "INT8"] if major < 11 else [])
    flags += ["VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"] if (major, minor) >= (8, 6) else []
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags, start=0)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"], start=0)
    trt.DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"], start=0)
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
    trt.DataType = enum.IntEnum("DataType", ["FLOAT", "HALF", "INT32"] + (["INT64"] if major >= 9 else []), start=0)
    trt.nptype = lambda t: _NUMPY[t.name]

    class ILogger:
        Severity = enum.IntEnum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"], start=0)

        def __init__(self):
            pass

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass

    trt.ILogger = ILogger
    if major < 11:
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    trt.Builder = lambda logger: _Builder(trt, logger, dla_cores)
    trt.OnnxParser = lambda network, logger: _Parser(trt, network)
    trt.Runtime = lambda logger: _Runtime(trt)
    return trt


class _Builder:
    def __init__(self, trt, logger, dla_cores):
        self.trt, self.logger, self.num_DLA_cores = trt, logger, dla_cores

    def create_network(self, flags=0):
        return types.SimpleNamespace(flags=flags, inputs=[], outputs=[], num_inputs=0,
                                     get_input=None)

    def create_builder_config(self):
        return _Config(self.trt)

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        self.logger.log(self.trt.ILogger.Severity.WARNING, "fake builder warning")
        self.logger.log(self.trt.ILogger.Severity.VERBOSE, "fake verbose chatter")
        if config.int8_calibrator is not None:
            config.records["calibration_cache"] = config.int8_calibrator.read_calibration_cache()
            assert config.int8_calibrator.get_batch(["x"]) is None
        self.trt.records.append(config.records)
        plan = {"flags": network.flags, "inputs": network.inputs, "outputs": network.outputs,
                "profile": config.profiles[0].shapes}
        return json.dumps(plan).encode()


class _Parser:
    def __init__(self, trt, network):
        self.trt, self.network, self.num_errors = trt, network, 0

    def parse_from_file(self, model):
        graph = onnx.load(model).graph

        def tensors(values):
            out = []
            for v in values:
                kind = _ONNX_TYPES[v.type.tensor_type.elem_type]
                kind = "INT32" if kind == "INT64" and "INT64" not in self.trt.DataType.__members__ else kind
                dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                out.append({"name": v.name, "dtype": kind, "shape": dims})
            return out

        self.network.inputs, self.network.outputs = tensors(graph.input), tensors(graph.output)
        self.network.num_inputs = len(graph.input)
        self.network.get_input = lambda i: types.SimpleNamespace(name=self.network.inputs[i]["name"])
        return True


class _Config:
    def __init__(self, trt):
        self.trt, self.records, self.profiles, self.int8_calibrator = trt, {"flags": []}, [], None
        self.cache = None

    def set_memory_pool_limit(self, pool, pool_size):
        self.records["pool"] = (pool.name, pool_size)

    def set_flag(self, flag):
        self.records["flags"].append(flag.name)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return 0

    def set_calibration_profile(self, profile):
        self.records["calibration_profile"] = profile is self.profiles[0]
        return True

    def create_timing_cache(self, serialized_timing_cache):
        self.records["timing_cache_in"] = bytes(serialized_timing_cache)
        return types.SimpleNamespace(data=bytes(serialized_timing_cache),
                                     serialize=lambda: bytes(serialized_timing_cache) + b"+")

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return cache.data != b"foreign"

    def get_timing_cache(self):
        return self.cache

    def __setattr__(self, name, value):
        if name in ("default_device_type", "DLA_core", "builder_optimization_level"):
            self.records[name] = getattr(value, "name", value)
        object.__setattr__(self, name, value)


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, input, min, opt, max):
        self.shapes[input] = [list(min), list(opt), list(max)]


class _Runtime:
    def __init__(self, trt):
        self.trt = trt

    def deserialize_cuda_engine(self, serialized_engine):
        self.trt.records.append({"runtime": {k: v for k, v in vars(self).items() if k != "trt"}})
        return _Engine(self.trt, json.loads(bytes(serialized_engine)))


class _Engine:
    def __init__(self, trt, plan):
        self.trt, self.plan = trt, plan
        self.tensors = {t["name"]: ("INPUT", t) for t in plan["inputs"]}
        self.tensors.update({t["name"]: ("OUTPUT", t) for t in plan["outputs"]})
        self.num_io_tensors = len(self.tensors)

    def get_tensor_name(self, index):
        return list(self.tensors)[index]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode[self.tensors[name][0]]

    def get_tensor_dtype(self, name):
        return self.trt.DataType[self.tensors[name][1]["dtype"]]

    def get_tensor_profile_shape(self, name, profile_index):
        return [tuple(s) for s in self.plan["profile"][name]]

    def create_execution_context(self):
        return _Context(self)


class _Context:
    """Every output row k of output j is ``sum of row k of all inputs + j``."""

    def __init__(self, engine):
        self.engine, self.addresses, self.shapes = engine, {}, {}

    def set_tensor_address(self, name, memory):
        self.addresses[name] = memory
        return True

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        self.shapes[name] = tuple(shape)
        return all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))

    def get_tensor_shape(self, name):
        kind, t = self.engine.tensors[name]
        if kind == "INPUT":
            return self.shapes[name]
        rows = next(iter(self.shapes.values()))[0]
        return tuple(rows if d == "batch" else d for d in t["shape"])

    def _array(self, name):
        t, shape = self.engine.tensors[name][1], self.get_tensor_shape(name)
        dtype = np.dtype(_NUMPY[t["dtype"]])
        raw = (ctypes.c_ubyte * (int(np.prod(shape)) * dtype.itemsize)).from_address(self.addresses[name])
        return np.frombuffer(raw, dtype).reshape(shape)

    def execute_async_v3(self, stream_handle):
        assert stream_handle == 7
        inputs = [self._array(t["name"]).astype(np.float64) for t in self.engine.plan["inputs"]]
        rows = sum(x.reshape(len(x), -1).sum(axis=1) for x in inputs)
        for j, t in enumerate(self.engine.plan["outputs"]):
            out = self._array(t["name"])
            out[...] = (rows + j).reshape(-1, *[1] * (out.ndim - 1))
        return True


def _write_onnx(path, spec, name=None):
    kinds = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "float16": TensorProto.FLOAT16}

    def value(t):
        return helper.make_tensor_value_info(t["name"], kinds[t["dtype"]], t["shape"])

    inputs, outputs = [value(t) for t in spec["inputs"]], [value(t) for t in spec["outputs"]]
    graph = helper.make_graph([], name or path.stem, inputs, outputs)
    onnx.save(helper.make_model(graph), str(path))


def _fake_bundle(tmp_path, contract_graphs, precision="fp32", flavour=None):
    folder = tmp_path / "b"
    folder.mkdir()
    graphs = contract_graphs("tirg", max_batch=4, text_length=5)
    for spec in graphs.values():
        _write_onnx(folder / spec["file"], spec)
    Vocabulary(["red", "cube", "left"]).save(folder / "vocab.json")
    manifest = Manifest(model={"family": "tirg"}, graphs=graphs, preprocess=Preprocess(size=64).to_dict(),
                        tokenizer={"vocab_file": "vocab.json", "max_length": 5, "pad_id": 0}, precision=precision,
                        build={"quantization": {"flavour": flavour}} if flavour else {},
                        files=dict.fromkeys([*(s["file"] for s in graphs.values()), "vocab.json"], ""))
    manifest.save(folder)
    return folder


@pytest.fixture
def fake_gpu(monkeypatch):
    """A stand-in cuda-python; returns a function installing a stand-in TensorRT of a version."""
    cudart = _Cudart()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", None)  # older cuda-python: int(stream)

    def install(version, dla_cores=0):
        trt = _fake_tensorrt(version, dla_cores)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    install.cudart = cudart
    return install


@pytest.mark.parametrize("version, network_flags", [("8.5.2.2", 1 << 0), ("10.3.0.26", 1 << 1), ("11.1.0.5", 0)])
def test_build_and_run_against_the_documented_api(fake_gpu, tmp_path, contract_graphs, version, network_flags):
    trt = fake_gpu(version)
    folder = _fake_bundle(tmp_path, contract_graphs)
    assert cuda_device_available() and not cuda_device_available(1)
    built = engines_from_bundle(folder, EngineConfig(workspace_mib=64), progress=lambda g: None)
    assert built["built"] == ["image_encoder", "text_encoder", "composer"] and built["version"] == version
    assert built["compute_capability"] == "8.7" and built["device"] == "Fake Orin"
    assert all(r == {"flags": [], "pool": ("WORKSPACE", 64 << 20)} for r in trt.records)
    manifest = Manifest.load(folder)  # checksums of the engines and the log hold
    assert manifest.backend == "tensorrt" and manifest.graphs["composer"]["engine"] == "composer.engine"
    assert json.loads((folder / "image_encoder.engine").read_bytes())["flags"] == network_flags
    assert manifest.build["tensorrt"]["profiles"]["image_encoder"]["images"] == [[1, 3, 64, 64], [2, 3, 64, 64],
                                                                                 [4, 3, 64, 64]]
    log = (folder / "build_log.txt").read_text()
    assert "[W] fake builder warning" in log and "verbose chatter" not in log
    images = np.random.default_rng(0).normal(size=(6, 3, 64, 64)).astype(np.float32)
    with TensorRTRunner(folder) as runner:  # 6 images: batches of 4 and 2
        gallery, tokens = runner.encode_images(images, tokens=True)
        text = runner.run("text_encoder", {"ids": np.array([[1, 2, 0, 0, 0]] * 3), "lengths": np.array([2, 2, 1])})
    np.testing.assert_allclose(gallery[:, 0], images.reshape(6, -1).sum(axis=1, dtype=np.float64), atol=1e-3)
    np.testing.assert_allclose(tokens[:, 0, 0], gallery[:, 0] + 1, atol=1e-3)
    assert text["text_features"][:, 0].tolist() == [5.0, 5.0, 4.0]  # int64 -> int32 on 8.5 included
    assert fake_gpu.cudart.device == {} and fake_gpu.cudart.host == {}  # close() freed every buffer


def test_runner_splits_each_call_into_copy_in_run_and_copy_out(fake_gpu, tmp_path, contract_graphs):
    """With ``events`` a list, each call records CUDA events around its copies and its run: the
    trtexec split ``tgir bench`` reports (here the stand-in's clock: 0.25 ms per copy in, 0.5 out)."""
    from tgir.benchmarks.bench_measure import _SplitRecorder

    fake_gpu("10.3.0.26")
    folder = _fake_bundle(tmp_path, contract_graphs)
    engines_from_bundle(folder, EngineConfig(), progress=lambda g: None)
    feeds = {"ids": np.array([[1, 2, 0, 0, 0]] * 2), "lengths": np.array([2, 1])}
    with TensorRTRunner(folder) as runner:
        runner.run("text_encoder", feeds)  # no list: no events
        assert fake_gpu.cudart.events == {}
        recorder = _SplitRecorder(runner)
        for _ in range(2):  # two timed runs of two calls each
            recorder.start()
            runner.run("text_encoder", feeds)
            runner.run("text_encoder", feeds)
            assert len(runner.events) == 2 and all(len(m) == 4 for m in runner.events)
            recorder.stop()
        assert fake_gpu.cudart.events == {}  # every event destroyed once timed
        split = recorder.summary()
        assert split["h2d_latency"]["p50_ms"] == 1.0  # 2 inputs x 0.25 ms x 2 calls
        assert split["gpu_compute_time"]["p50_ms"] == 0.0
        assert split["d2h_latency"]["p50_ms"] == 1.0  # 1 output x 0.5 ms x 2 calls
        runner.events = []
        runner._graphs["text_encoder"].context.execute_async_v3 = lambda stream: False
        with pytest.raises(TgirUserError, match="TensorRT failed to run"):
            runner.run("text_encoder", feeds)
        assert fake_gpu.cudart.events == {} and runner.events == []  # a failing call leaves no event behind


def test_reuse_force_and_stale_rebuild(fake_gpu, tmp_path, contract_graphs):
    fake_gpu("10.3.0.26")
    folder = _fake_bundle(tmp_path, contract_graphs)
    engines_from_bundle(folder)
    assert engines_from_bundle(folder)["built"] == []
    assert engines_from_bundle(folder, force=True)["built"] == ["image_encoder", "text_encoder", "composer"]
    assert engines_from_bundle(folder, EngineConfig(workspace_mib=512))["built"] != []  # a setting changed
    # The same contract, a re-exported (changed) graph file:
    _write_onnx(folder / "composer.onnx", Manifest.load(folder).graphs["composer"], name="re-exported")
    manifest = Manifest.load(folder, verify=False)
    manifest.save(folder)  # new checksum of composer.onnx, old engine facts
    with pytest.raises(TgirUserError, match="composer engine is stale"):
        TensorRTRunner(folder)
    assert engines_from_bundle(folder)["built"] == ["image_encoder", "text_encoder", "composer"]
    TensorRTRunner(folder).close()


def test_runner_checks_version_and_version_compatible_engines(fake_gpu, tmp_path, contract_graphs):
    fake_gpu("10.3.0.26")
    folder = _fake_bundle(tmp_path, contract_graphs)
    engines_from_bundle(folder)
    fake_gpu("10.4.0.1")
    with pytest.raises(TgirUserError, match=r"built with TensorRT 10\.3\.0\.26; this machine has 10\.4\.0\.1"):
        TensorRTRunner(folder)
    fake_gpu("10.3.0.26")
    engines_from_bundle(folder, EngineConfig(version_compatible=True))
    trt = fake_gpu("10.4.0.1")
    TensorRTRunner(folder).close()
    assert trt.records[0]["runtime"] == {"engine_host_code_allowed": True}
    fake_gpu("10.3.0.26")
    engines_from_bundle(folder, EngineConfig(version_compatible=True, exclude_lean_runtime=True))
    with pytest.raises(TgirUserError, match="lean runtime"):
        TensorRTRunner(folder)


def test_dla_builds_a_fixed_batch_and_the_runner_pads(fake_gpu, tmp_path, contract_graphs):
    trt = fake_gpu("10.3.0.26", dla_cores=1)
    folder = _fake_bundle(tmp_path, contract_graphs)
    with pytest.raises(TgirUserError, match="this device has 1 DLA core"):
        engines_from_bundle(folder, EngineConfig(precision="fp16", dla_core=1))
    engines_from_bundle(folder, EngineConfig(precision="fp16", dla_core=0))
    assert trt.records[-1] == {"flags": ["FP16", "GPU_FALLBACK"], "pool": ("WORKSPACE", 4096 << 20),
                               "default_device_type": "DLA", "DLA_core": 0}
    assert Manifest.load(folder).build["tensorrt"]["profiles"]["text_encoder"]["lengths"] == [[4], [4], [4]]
    images = np.random.default_rng(1).normal(size=(3, 3, 64, 64)).astype(np.float32)
    with TensorRTRunner(folder) as runner:
        gallery = runner.encode_images(images)
    assert trt.records[-1] == {"runtime": {"DLA_core": 0}}
    assert gallery.shape == (3, 32)
    np.testing.assert_allclose(gallery[:, 0], images.reshape(3, -1).sum(axis=1, dtype=np.float64), atol=1e-3)


def test_legacy_calibrator_and_timing_cache(fake_gpu, tmp_path, contract_graphs):
    trt = fake_gpu("10.3.0.26")
    folder = _fake_bundle(tmp_path, contract_graphs)
    cache = write_calibration_cache(tmp_path / "c.cache", {"images": 2.5, "gallery": 1.0}, tensorrt="10.3.0")
    with pytest.raises(TgirUserError, match="needs --calibration-cache"):
        engines_from_bundle(folder, EngineConfig(legacy_calibrator=True))
    with pytest.raises(TgirUserError, match="only with --legacy-calibrator"):
        engines_from_bundle(folder, calibration_cache=cache)
    timing = tmp_path / "timing.cache"
    cfg = EngineConfig(legacy_calibrator=True, timing_cache=str(timing))
    facts = engines_from_bundle(folder, cfg, calibration_cache=cache)
    first = trt.records[0]
    assert first["flags"] == ["INT8"] and first["calibration_profile"] is True
    assert first["calibration_cache"] == cache.read_bytes() and first["timing_cache_in"] == b""
    assert facts["precision"] == "int8" and facts["path"] == "implicit-int8" and facts["calibration_sha256"]
    assert trt.records[1]["timing_cache_in"] == b"+" and timing.read_bytes() == b"+++"  # reused and grown
    timing.write_bytes(b"foreign")
    with pytest.raises(TgirUserError, match="refused this timing cache"):
        engines_from_bundle(folder, cfg, calibration_cache=cache, force=True)


def test_per_graph_calibration_caches(fake_gpu, tmp_path, contract_graphs):
    """A folder of <graph>.calibration.cache files (what tgir-export calibrate writes): each graph
    builds with its own, an empty one included; a graph without one is refused."""
    trt = fake_gpu("10.3.0.26")
    folder = _fake_bundle(tmp_path, contract_graphs)
    graphs = list(Manifest.load(folder).graphs)
    caches = tmp_path / "caches"
    caches.mkdir()
    for n, graph in enumerate(graphs):
        write_calibration_cache(caches / f"{graph}.calibration.cache", {"images": 1.0 + n} if n else {},
                                tensorrt="10.3.0", allow_empty=True)
    facts = engines_from_bundle(folder, EngineConfig(legacy_calibrator=True), calibration_cache=caches)
    assert [r["calibration_cache"] for r in trt.records[:len(graphs)]] == [
        (caches / f"{g}.calibration.cache").read_bytes() for g in graphs]
    assert facts["calibration_sha256"] and facts["built"] == graphs
    (caches / f"{graphs[-1]}.calibration.cache").unlink()
    with pytest.raises(TgirUserError, match=f"no calibration cache for the {graphs[-1]} graph"):
        engines_from_bundle(folder, EngineConfig(legacy_calibrator=True), calibration_cache=caches, force=True)


def test_graph_inputs_must_match_the_manifest(fake_gpu, tmp_path, contract_graphs):
    fake_gpu("10.3.0.26")
    folder = _fake_bundle(tmp_path, contract_graphs)
    spec = Manifest.load(folder).graphs["text_encoder"]
    _write_onnx(folder / "text_encoder.onnx", {**spec, "inputs": [{**spec["inputs"][0], "name": "tokens"}]})
    Manifest.load(folder, verify=False).save(folder)
    with pytest.raises(TgirUserError, match=r"inputs \['tokens'\] differ"):
        engines_from_bundle(folder)
    assert not any(p.suffix == ".engine" or "building" in p.name for p in folder.iterdir())  # nothing left


def test_cuda_errors_name_the_call():
    cudart = _Cudart()
    assert cuda_check(cudart, (cudart.cudaError_t.cudaSuccess, 5), "x") == 5
    assert cuda_check(cudart, (cudart.cudaError_t.cudaSuccess,), "x") is None
    with pytest.raises(TgirUserError, match=r"CUDA cudaMalloc\(8\) failed: cudaErrorMemoryAllocation"):
        cuda_check(cudart, (cudart.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc(8)")


