"""TensorRT engines. Pure Python everywhere: build plans per TensorRT version, profiles, engine facts
and staleness, calibration caches, the runner's casts. The builder and runner code against a
recording stand-in of the documented TensorRT / cuda-python API (enum members per version, strict
signatures, host memory posing as device memory), so their call sequences and buffer handling run
here. Real engines against ONNX Runtime where TensorRT and a CUDA GPU exist."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from tgir.calib.cache import write_calibration_cache
from tgir.export.engine import (
    EngineConfig,
    build_plan,
    calibration_cache_bytes,
    cuda_device_available,
    engines_from_bundle,
    profiles_from_manifest,
    reuse_blockers,
    tensorrt_version,
)
from tgir.runtime.engine_facts import engine_facts_mismatch, require_fresh_engine, runs_on, stale_engines
from tgir.runtime.trt import (
    TensorRTRunner,
    cuda_runtime,
    engine_dtype_problem,
    feed_for_engine,
    max_shape,
)

from tgir.errors import TgirUserError
from tgir.manifest import Manifest
from tgir.vocab import Vocabulary

# -- build plans ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version, precision, cfg, path, network, flags", [
    ("8.5.2", "fp32", EngineConfig(), "weakly-typed", ("EXPLICIT_BATCH",), ()),
    ("8.5.2", "int8", EngineConfig(), "explicit-int8", ("EXPLICIT_BATCH",), ("INT8",)),
    ("8.5.2", "fp16", EngineConfig(), "weakly-typed", ("EXPLICIT_BATCH",), ("FP16",)),
    ("9.2.0", "int8", EngineConfig(), "strongly-typed", ("EXPLICIT_BATCH", "STRONGLY_TYPED"), ()),
    ("10.3.0.26", "int8", EngineConfig(), "strongly-typed", ("STRONGLY_TYPED",), ()),
    ("10.3.0", "fp16", EngineConfig(), "strongly-typed", ("STRONGLY_TYPED",), ()),
    ("10.3.0", "fp32", EngineConfig(precision="fp16"), "weakly-typed", (), ("FP16",)),
    ("10.3.0", "fp32", EngineConfig(legacy_calibrator=True), "implicit-int8", (), ("INT8",)),
    ("8.5.2", "fp32", EngineConfig(legacy_calibrator=True), "implicit-int8", ("EXPLICIT_BATCH",), ("INT8",)),
    ("11.1.0", "int8", EngineConfig(), "strongly-typed", (), ()),
    ("11.1.0", "fp32", EngineConfig(), "strongly-typed", (), ()),
    ("10.3.0", "fp32", EngineConfig(version_compatible=True, exclude_lean_runtime=True), "strongly-typed",
     ("STRONGLY_TYPED",), ("VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME")),
    ("10.3.0", "fp32", EngineConfig(precision="fp16", dla_core=0), "weakly-typed", (), ("FP16", "GPU_FALLBACK")),
    ("10.3.0", "fp16", EngineConfig(dla_core=1, gpu_fallback=False), "weakly-typed", (), ("FP16",)),
    ("8.5.2", "fp32", EngineConfig(legacy_calibrator=True, dla_core=0), "implicit-int8", ("EXPLICIT_BATCH",),
     ("INT8", "GPU_FALLBACK")),
    ("11.4.1", "fp16", EngineConfig(dla_core=0), "strongly-typed", (), ("GPU_FALLBACK",)),
])
def test_build_plan_per_version(version, precision, cfg, path, network, flags):
    plan = build_plan(version, precision, cfg)
    assert (plan.path, plan.network_flags, plan.builder_flags) == (path, network, flags)
    assert plan.calibrator == cfg.legacy_calibrator
    assert plan.static_batch == (cfg.dla_core is not None)
    assert plan.precision == ("int8" if cfg.legacy_calibrator else cfg.precision or precision)


@pytest.mark.parametrize("version, precision, cfg, message", [
    ("11.0.0", "fp32", EngineConfig(legacy_calibrator=True), "removed implicit INT8"),
    ("11.1.0", "fp32", EngineConfig(precision="fp16"), "FP16 ONNX"),
    ("10.3.0", "int8", EngineConfig(legacy_calibrator=True), "fp32 bundle"),
    ("10.3.0", "fp32", EngineConfig(precision="int8"), "Q/DQ bundle"),
    ("10.3.0", "int8", EngineConfig(precision="fp16"), "int8 engines only"),
    ("10.3.0", "fp16", EngineConfig(precision="fp32"), "fp16 engines only"),
    ("8.5.2", "fp32", EngineConfig(version_compatible=True), ">= 8.6"),
    ("8.5.2", "fp32", EngineConfig(builder_optimization_level=2), ">= 8.6"),
    ("8.4.3", "fp32", EngineConfig(), "older than 8.5"),
    ("ten", "fp32", EngineConfig(), "MAJOR.MINOR"),
    ("10.3.0", "bf16", EngineConfig(), "bundle precision"),
    ("10.3.0", "fp32", EngineConfig(dla_core=0), "FP16 and INT8"),
    ("10.3.0", "int8", EngineConfig(dla_core=0), "explicit quantization"),
    ("8.5.2", "int8", EngineConfig(dla_core=0), "explicit quantization"),
    ("10.8.0", "fp16", EngineConfig(dla_core=0), "10.7 was the last"),
    ("11.2.0", "fp16", EngineConfig(dla_core=0), "11.4.1"),
    ("11.4.1", "fp32", EngineConfig(dla_core=0), "FP16 and INT8"),
])
def test_build_plan_refuses(version, precision, cfg, message):
    with pytest.raises(TgirUserError, match=message):
        build_plan(version, precision, cfg)


@pytest.mark.parametrize("changes, message", [
    ({"workspace_mib": 0}, "workspace"), ({"exclude_lean_runtime": True}, "--version-compatible"),
    ({"dla_core": -1}, "DLA core"), ({"builder_optimization_level": 6}, "0..5"),
    ({"precision": "bf16"}, "engine precision"), ({"device": -1}, "device index"),
])
def test_engine_config_validation(changes, message):
    with pytest.raises(TgirUserError, match=message):
        EngineConfig(**changes)
    assert EngineConfig(builder_optimization_level=5, dla_core=0).to_dict()["dla_core"] == 0


# -- profiles ------------------------------------------------------------------------------------


def test_profiles_from_a_real_manifest(contract_graphs):
    manifest = {"graphs": contract_graphs()}
    image = profiles_from_manifest(manifest, "image_encoder")
    assert image == {"images": ((1, 3, 64, 64), (2, 3, 64, 64), (8, 3, 64, 64))}
    text = profiles_from_manifest(manifest, "text_encoder")
    assert text == {"ids": ((1, 6), (2, 6), (8, 6)), "lengths": ((1,), (2,), (8,))}  # length fixed
    assert set(profiles_from_manifest(manifest, "composer")) == {"tokens", "text_features"}
    static = profiles_from_manifest(manifest, "image_encoder", static_batch=True)
    assert static["images"] == ((8, 3, 64, 64),) * 3
    manifest["graphs"]["text_encoder"]["inputs"][0]["shape"] = ["batch", "length"]
    with pytest.raises(TgirUserError, match="'length' has no"):
        profiles_from_manifest(manifest, "text_encoder")
    with pytest.raises(TgirUserError, match="unknown graph"):
        profiles_from_manifest(manifest, "decoder")


# -- engine facts and staleness ------------------------------------------------------------------

HERE = {"version": "10.3.0.26", "device": "Orin", "compute_capability": "8.7"}


def _manifest_with_engines(contract_graphs, **facts):
    graphs = contract_graphs()
    files = {spec["file"]: f"sha-{name}" for name, spec in graphs.items()}
    for name, spec in graphs.items():
        spec["engine"] = f"{name}.engine"
    built = {**HERE, "version_compatible": False, "onnx_sha256": {g: f"sha-{g}" for g in graphs},
             "calibration_sha256": None, **facts}
    return {"graphs": graphs, "files": files, "build": {"tensorrt": built}}


def test_engine_facts_match_and_mismatch(contract_graphs):
    assert engine_facts_mismatch(_manifest_with_engines(contract_graphs), HERE) == []
    other = engine_facts_mismatch(_manifest_with_engines(contract_graphs), {**HERE, "version": "10.4.0"})
    assert len(other) == 1 and "built with TensorRT 10.3.0.26" in other[0] and "10.4.0" in other[0]
    cc = engine_facts_mismatch(_manifest_with_engines(contract_graphs), {**HERE, "compute_capability": "8.6"})
    assert len(cc) == 1 and "compute capability 8.7" in cc[0]
    device = {**HERE, "device": "Xavier"}
    assert engine_facts_mismatch(_manifest_with_engines(contract_graphs), device) == []
    strict = engine_facts_mismatch(_manifest_with_engines(contract_graphs), device, strict_device=True)
    assert "built on Orin" in strict[0]
    missing = _manifest_with_engines(contract_graphs)
    del missing["graphs"]["composer"]["engine"]
    assert "'composer' has no engine" in engine_facts_mismatch(missing, HERE)[0]
    assert "no TensorRT engines" in engine_facts_mismatch({"graphs": {}, "build": {}}, HERE)[0]


@pytest.mark.parametrize("built, installed, compatible, ok", [
    ("10.3.0", "10.3.0.26", False, True), ("10.3.0", "10.3.1", False, False),
    ("10.3.0", "10.7.0", True, True), ("10.7.0", "10.3.0", True, False),
    ("10.3.0", "11.1.0", True, True), ("8.6.1", "10.3.0", True, True), ("8.6.1", "11.1.0", True, False),
])
def test_version_compatibility_rules(built, installed, compatible, ok):
    assert runs_on(built, installed, compatible) is ok


def test_stale_engines_are_refused(contract_graphs):
    fresh = _manifest_with_engines(contract_graphs)
    assert stale_engines(fresh) == [] and stale_engines(fresh, calibration_sha256=None) == []
    require_fresh_engine(fresh, HERE)
    stale = _manifest_with_engines(contract_graphs)
    stale["files"]["text_encoder.onnx"] = "sha-new"
    problems = stale_engines(stale)
    assert len(problems) == 1 and "text_encoder engine is stale" in problems[0] and "rebuild" in problems[0]
    assert "another calibration cache" in stale_engines(fresh, calibration_sha256="abc")[0]
    with pytest.raises(TgirUserError, match=r"stale(.|\n)*compute capability"):
        require_fresh_engine(stale, {**HERE, "compute_capability": "9.0"})


def test_reuse_blockers_name_what_changed(contract_graphs):
    data = _manifest_with_engines(contract_graphs)
    manifest = Manifest(model={}, graphs=data["graphs"], preprocess={}, tokenizer={}, build=data["build"])
    wanted = {k: v for k, v in data["build"]["tensorrt"].items()}
    assert reuse_blockers(manifest, wanted) == []
    assert reuse_blockers(manifest, {**wanted, "onnx_sha256": {"image_encoder": "x"}}) == ["onnx_sha256 changed"]
    assert reuse_blockers(manifest, {**wanted, "version": "10.4.0"}) == ["version changed"]
    del manifest.graphs["composer"]["engine"]
    assert reuse_blockers(manifest, wanted) == ["no engine for composer"]
    assert reuse_blockers(Manifest(model={}, graphs={}, preprocess={}, tokenizer={}), wanted) == ["no engines yet"]


def test_calibration_cache_must_fit_this_tensorrt(tmp_path):
    path = write_calibration_cache(tmp_path / "c.cache", {"images": 2.5}, tensorrt="10.3.0")
    assert calibration_cache_bytes(path, "10.3.0.26") == path.read_bytes()
    with pytest.raises(TgirUserError, match="write it again"):
        calibration_cache_bytes(path, "8.5.2")
    with pytest.raises(TgirUserError, match="removed implicit"):
        calibration_cache_bytes(path, "11.0.0")
    other = write_calibration_cache(tmp_path / "m.cache", {"images": 2.5}, tensorrt="10.3.0",
                                    algorithm="MinMaxCalibration")
    with pytest.raises(TgirUserError, match="EntropyCalibration2"):
        calibration_cache_bytes(other, "10.3.0")


# -- runner helpers ------------------------------------------------------------------------------


def test_feeds_are_cast_checked_and_padded():
    ids = np.array([[3, 4], [5, 6]], np.int64)
    narrow = feed_for_engine("ids", ids, np.int32, rows=4)
    assert narrow.dtype == np.int32 and narrow.tolist() == [[3, 4], [5, 6], [5, 6], [5, 6]]
    same = feed_for_engine("ids", ids, np.int64)
    assert same.dtype == np.int64 and same.tolist() == ids.tolist()  # no padding asked
    with pytest.raises(TgirUserError, match="outside int32"):
        feed_for_engine("ids", np.array([2**40]), np.int32)
    assert engine_dtype_problem("ids", "int64", np.dtype(np.int32)) is None
    assert engine_dtype_problem("x", "float32", np.dtype(np.float32)) is None
    assert "float16" in engine_dtype_problem("x", "float32", np.dtype(np.float16))
    assert max_shape(["batch", 3, 8], {"batch": [1, 2, 16]}) == (16, 3, 8)


def test_missing_tensorrt_and_cuda_python_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TgirUserError, match=r'pip install -e "\.\[trt\]"'):
        tensorrt_version()
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(TgirUserError, match=r'pip install -e "\.\[gpu\]"'):
        cuda_runtime()
    assert cuda_device_available() is False


# -- real TensorRT on a real GPU -----------------------------------------------------------------


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # a stub wheel raises at import
        return False
    return True


def _cuda_gpu() -> bool:
    try:
        from tgir.runtime.trt import device_facts

        device_facts(0)
    except Exception:
        return False
    return True


needs_tensorrt = pytest.mark.skipif(not _tensorrt_importable(), reason="tensorrt not installed")
needs_gpu = pytest.mark.skipif(not _cuda_gpu(), reason="no CUDA GPU")


@pytest.fixture
def fp32_bundle(tiny, tmp_path, tiny_css2d):
    import torch
    from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

    from tgir.data.registry import load_split
    from tgir.models.base import build_model
    from tgir.training.checkpoint import save_checkpoint
    from tgir.training.config import RunConfig

    torch.manual_seed(0)
    vocab = Vocabulary.build(q.text for q in load_split("css2d", tiny_css2d, "train").queries)
    cfg = tiny("amc")
    cfg = cfg.replace(text=cfg.text.__class__(**{**cfg.text.__dict__, "vocab_size": len(vocab)}))
    save_checkpoint(tmp_path / "m.pt", RunConfig(cfg), vocab, build_model(cfg))
    onnx_from_checkpoint(tmp_path / "m.pt", tmp_path / "fp32", OnnxConfig(tau=0.0, max_batch=8, text_length=8))
    return tmp_path / "fp32"


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_gpu
@needs_tensorrt
@pytest.mark.parametrize("precision, atol", [(None, 5e-3), ("fp16", 3e-2)])
def test_tensorrt_matches_onnxruntime(fp32_bundle, tmp_path, precision, atol):
    from tgir.runtime.ort import OrtRunner

    if precision == "fp16" and int(tensorrt_version().split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 builds fp16 only from an FP16 ONNX")
    cfg = EngineConfig(workspace_mib=1024, precision=precision, timing_cache=str(tmp_path / "timing.cache"))
    facts = engines_from_bundle(fp32_bundle, cfg)
    assert facts["built"] and (tmp_path / "timing.cache").stat().st_size > 0
    assert engines_from_bundle(fp32_bundle, cfg)["reused"] == ["image_encoder", "text_encoder", "composer"]
    rng = np.random.default_rng(0)
    images = rng.normal(size=(11, 3, 64, 64)).astype(np.float32)  # two full batches and a partial one
    texts = ["make it red", "move the cube left", "add a circle"] * 3 + ["red", "cube"]
    with TensorRTRunner(fp32_bundle) as trt_runner, OrtRunner(fp32_bundle) as ort_runner:
        np.testing.assert_allclose(trt_runner.encode_images(images), ort_runner.encode_images(images), atol=atol)
        np.testing.assert_allclose(trt_runner.encode_queries(images, texts), ort_runner.encode_queries(images, texts),
                                   atol=atol)
