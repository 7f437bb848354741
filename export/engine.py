"""ONNX -> TensorRT engines: one ``.engine`` per graph, built into the bundle with its facts.

The path a build takes depends on the installed TensorRT and the bundle's precision; ``build_plan``
decides it in pure Python (tested without TensorRT) and ``export/TENSORRT.md`` tabulates it with the
documentation behind each rule. In short: TensorRT >= 11 is always strongly typed (the precision is
the ONNX's: fp32, FP16 ONNX, or the int8 Q/DQ bundle); 9.x-10.x build those strongly typed too, and
still offer the FP16 flag and implicit INT8 from a calibration cache (``legacy_calibrator``);
8.5-8.6 (JetPack 5.1) have no strong typing: Q/DQ builds with the INT8 flag, networks need
EXPLICIT_BATCH.

The engine facts (TensorRT version, GPU and compute capability, precision, flags, profiles, the
ONNX and calibration hashes) go into ``manifest.build["tensorrt"]``; runners check them at load
(``tgir.runtime.engine_facts``) and a rebuild reuses engines only when all of them still match.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tgir.calib.cache import CACHE_SUFFIX, read_calibration_cache, version_number
from tgir.runtime.engine_facts import parse_version
from tgir.runtime.trt import device_facts, make_logger, select_device, tensorrt_module

from tgir.errors import TgirUserError, unknown_choice
from tgir.manifest import Manifest, sha256

PRECISIONS = ("fp32", "fp16", "int8")
LOG_FILE = "build_log.txt"
OLDEST = (8, 5, 0)  # the name-based I/O API (execute_async_v3) and JetPack 5.1
CALIBRATION_ALGORITHM = "EntropyCalibration2"  # what IInt8EntropyCalibrator2 reads


@dataclass(frozen=True)
class EngineConfig:
    """How to build engines.

    Attributes:
        workspace_mib: Builder workspace limit (``MemoryPoolType.WORKSPACE``), MiB.
        timing_cache: File of TensorRT's timing cache: read if it exists, written back after each
            build, so rebuilds and the other graphs skip re-timing kernels. None: no cache file.
        version_compatible: Build plans that newer TensorRT runtimes can run (TensorRT >= 8.6).
        exclude_lean_runtime: Leave the lean runtime out of version-compatible plans (smaller; the
            deployment then loads ``libnvinfer_lean`` itself).
        dla_core: Jetson DLA core to build for (None: GPU only). DLA runs FP16/INT8 with a fixed batch.
        gpu_fallback: With DLA, let layers DLA cannot run fall back to the GPU.
        legacy_calibrator: Implicit INT8 from the fp32 ONNX and a calibration cache (TensorRT 8.5-10.x).
        builder_optimization_level: 0..5 (TensorRT >= 8.6); None: TensorRT's default (3).
        precision: Engine precision (None: the bundle's; ``"fp16"`` from an fp32 bundle on TensorRT < 11).
        static_batch: Build for the bundle's largest batch only (min = opt = max; forced for DLA).
        device: CUDA device to build on.
    """

    workspace_mib: int = 4096
    timing_cache: str | None = None
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = True
    legacy_calibrator: bool = False
    builder_optimization_level: int | None = None
    precision: str | None = None
    static_batch: bool = False
    device: int = 0

    def __post_init__(self) -> None:
        if self.workspace_mib < 1:
            raise TgirUserError(f"workspace must be >= 1 MiB, got {self.workspace_mib}")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise TgirUserError("--exclude-lean-runtime is for version-compatible engines; add --version-compatible")
        if self.dla_core is not None and self.dla_core < 0:
            raise TgirUserError(f"DLA core must be >= 0, got {self.dla_core}")
        level = self.builder_optimization_level
        if level is not None and not 0 <= level <= 5:
            raise TgirUserError(f"builder optimization level must be 0..5, got {level}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise unknown_choice("engine precision", self.precision, PRECISIONS)
        if self.device < 0:
            raise TgirUserError(f"CUDA device index must be >= 0, got {self.device}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BuildPlan:
    """What a build does on one TensorRT version: the engine's precision; the path
    (``"strongly-typed"``, ``"weakly-typed"``, ``"explicit-int8"`` = Q/DQ with the INT8 flag on 8.x,
    ``"implicit-int8"`` = calibration cache); the ``NetworkDefinitionCreationFlag`` and ``BuilderFlag``
    member names to set; whether a calibrator reads a cache; whether min = opt = max batch."""

    precision: str
    path: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    calibrator: bool
    static_batch: bool

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def tensorrt_version() -> str:
    """The installed TensorRT's version; raises ``TgirUserError`` (with how to install) if absent."""
    return tensorrt_module().__version__


def cuda_device_available(device: int = 0) -> bool:
    """Whether cuda-python is installed and sees CUDA device ``device``."""
    try:
        device_facts(device)
    except TgirUserError:
        return False
    return True


def build_plan(trt_version: str, precision: str, cfg: EngineConfig = EngineConfig()) -> BuildPlan:
    """Decide flags and path for a build, or refuse one TensorRT would reject.

    Args:
        trt_version: TensorRT version, e.g. ``"10.3.0"``.
        precision: The bundle's (ONNX's) precision: fp32, fp16 or int8 (Q/DQ).
        cfg: Build settings (engine precision, DLA, version compatibility...).

    Raises:
        TgirUserError: A combination the documentation rules out, with what to do instead.
    """
    v = parse_version(trt_version)
    if v < OLDEST:
        raise TgirUserError(f"TensorRT {trt_version} is older than 8.5, the oldest this builder supports")
    if precision not in PRECISIONS:
        raise unknown_choice("bundle precision", precision, PRECISIONS)
    if cfg.legacy_calibrator and v[0] >= 11:
        raise TgirUserError(f"TensorRT {trt_version} removed implicit INT8 calibration (--legacy-calibrator); "
                            "build the int8 engine from a Q/DQ bundle (tgir-export calibrate)")
    engine = _engine_precision(precision, cfg)
    path, flags = _precision_path(v, precision, engine, cfg)
    network = (("EXPLICIT_BATCH",) if v < (10, 0, 0) else ()) + (  # always explicit (and ignored) from 10
        ("STRONGLY_TYPED",) if path == "strongly-typed" and v < (11, 0, 0) else ())  # always on (ignored) in 11
    flags += _deployment_flags(v, engine, path, cfg)
    return BuildPlan(engine, path, network, flags, cfg.legacy_calibrator, cfg.static_batch or cfg.dla_core is not None)


def _engine_precision(onnx: str, cfg: EngineConfig) -> str:
    engine = cfg.precision or ("int8" if cfg.legacy_calibrator else onnx)
    if cfg.legacy_calibrator and (onnx != "fp32" or engine != "int8"):
        raise TgirUserError("--legacy-calibrator builds an int8 engine from the fp32 bundle and a calibration "
                            f"cache; this bundle is {onnx}, the engine would be {engine}")
    if onnx in ("int8", "fp16") and engine != onnx:
        raise TgirUserError(f"this {onnx} bundle builds {onnx} engines only; build {engine} from the fp32 bundle")
    if onnx == "fp32" and engine == "int8" and not cfg.legacy_calibrator:
        raise TgirUserError("an int8 engine needs a Q/DQ bundle (tgir-export calibrate), or --legacy-calibrator "
                            "with a calibration cache on TensorRT 8.5-10.x")
    return engine


def _precision_path(v: tuple, onnx: str, engine: str, cfg: EngineConfig) -> tuple[str, tuple[str, ...]]:
    """``(path, precision builder flags)``; strong typing wherever the ONNX already has the precision."""
    if cfg.legacy_calibrator:
        return "implicit-int8", ("INT8",)
    if onnx == "int8":  # TensorRT 8.x docs: Q/DQ networks need the INT8 flag; strong typing from 9
        return ("explicit-int8", ("INT8",)) if v < (9, 0, 0) else ("strongly-typed", ())
    dla_fp16 = cfg.dla_core is not None and v < (11, 0, 0)  # DLA before 11: "FP16 mode", i.e. the flag
    if engine == onnx and not (engine == "fp16" and (v < (9, 0, 0) or dla_fp16)):
        return ("weakly-typed", ()) if v < (9, 0, 0) else ("strongly-typed", ())
    if v[0] >= 11:
        raise TgirUserError("TensorRT 11 removed the FP16 builder flag: the precision comes from the ONNX; "
                            "export an FP16 ONNX (e.g. ModelOpt AutoCast) and build that")
    return "weakly-typed", ("FP16",)


def _deployment_flags(v: tuple, engine: str, path: str, cfg: EngineConfig) -> tuple[str, ...]:
    flags: tuple[str, ...] = ()
    if (cfg.version_compatible or cfg.builder_optimization_level is not None) and v < (8, 6, 0):
        raise TgirUserError("--version-compatible and --builder-optimization-level need TensorRT >= 8.6")
    if cfg.version_compatible:
        flags += ("VERSION_COMPATIBLE",) + (("EXCLUDE_LEAN_RUNTIME",) if cfg.exclude_lean_runtime else ())
    if cfg.dla_core is None:
        return flags
    if not ((8, 5, 0) <= v < (10, 8, 0) or v >= (11, 4, 1)):
        raise TgirUserError("this TensorRT has no DLA: 10.7 was the last 10.x with DLA, and 11.x has it "
                            "again from 11.4.1 (Jetson AGX Orin, JetPack 7.2.2)")
    if engine == "fp32":
        raise TgirUserError("DLA runs FP16 and INT8 networks only; build with precision fp16 or int8")
    if v[0] < 11 and path in ("strongly-typed", "explicit-int8"):
        raise TgirUserError("DLA before TensorRT 11 takes FP16 or implicit INT8 (--legacy-calibrator), "
                            "not the Q/DQ bundle (TensorRT 8.x: DLA does not support explicit quantization)")
    return flags + (("GPU_FALLBACK",) if cfg.gpu_fallback else ())


def profiles_from_manifest(manifest, graph: str, static_batch: bool = False) -> dict[str, tuple]:
    """Optimization-profile shapes of a graph's inputs from the manifest's contract and ranges.

    Args:
        manifest: A ``Manifest`` or its JSON dict.
        graph: Graph name.
        static_batch: Every named axis at the top of its range (min = opt = max).

    Returns:
        ``{input name: (min shape, opt shape, max shape)}``.

    Raises:
        TgirUserError: Unknown graph, or a named axis without a ``[min, opt, max]`` range.
    """
    graphs = manifest["graphs"] if isinstance(manifest, dict) else manifest.graphs
    if graph not in graphs:
        raise TgirUserError(f"unknown graph {graph!r}; this bundle has {', '.join(graphs)}")
    return _profile_shapes(graph, graphs[graph], static_batch)


def _profile_shapes(graph: str, spec: dict, static_batch: bool) -> dict[str, tuple]:
    out = {}
    for t in spec["inputs"]:
        dims = []
        for d in t["shape"]:
            if isinstance(d, int):
                dims.append((d, d, d))
            elif d not in spec["dynamic"]:
                raise TgirUserError(f"{graph} input {t['name']}: axis {d!r} has no [min, opt, max] range")
            else:
                lo, opt, hi = (int(x) for x in spec["dynamic"][d])
                dims.append((hi, hi, hi) if static_batch else (lo, opt, hi))
        out[t["name"]] = tuple(tuple(dim[k] for dim in dims) for k in range(3))
    return out


def calibration_cache_bytes(path: str | Path, trt_version: str, allow_empty: bool = False) -> bytes:
    """A calibration cache's bytes, once checked to be one this TensorRT's entropy calibrator reads.

    Raises:
        TgirUserError: Unreadable, or written for another TensorRT version or algorithm.
    """
    number, algorithm, amax = read_calibration_cache(path)
    if number != version_number(trt_version):
        raise TgirUserError(f"{path}: calibration cache written for TensorRT version number {number}; this is "
                            f"{trt_version} ({version_number(trt_version)}); write it again for this version")
    if algorithm != CALIBRATION_ALGORITHM:
        raise TgirUserError(f"{path}: needs an {CALIBRATION_ALGORITHM} cache, got {algorithm}")
    if not amax and not allow_empty:
        raise TgirUserError(f"{path}: the calibration cache has no tensors")
    return Path(path).read_bytes()


def graph_cache(calibration_cache: str | Path, graph: str) -> tuple[Path, bool]:
    """The cache one graph builds with: ``calibration_cache`` itself (one file for every graph), or
    ``<folder>/<graph>.calibration.cache`` in a folder of per-graph caches (what ``tgir-export
    calibrate`` writes: tensor names differ between graphs). The flag says whether an empty cache
    is acceptable (a per-graph cache of a graph with nothing to quantize)."""
    path = Path(calibration_cache)
    if not path.is_dir():
        return path, False
    own = path / f"{graph}{CACHE_SUFFIX}"
    if not own.is_file():
        raise TgirUserError(f"{path}: no calibration cache for the {graph} graph ({own.name}); calibrate the "
                            "bundle again (tgir-export calibrate writes one per graph)")
    return own, True


def calibration_digest(calibration_cache: str | Path, graphs) -> str:
    """One hash over the caches every graph builds with (engine facts, stale detection)."""
    return hashlib.sha256("".join(sha256(graph_cache(calibration_cache, g)[0]) for g in graphs).encode()).hexdigest()


def _cache_calibrator(trt, cache: bytes):
    """An entropy calibrator that never calibrates: every range comes from ``cache``."""

    class _CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the docs require the explicit base __init__

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            return None  # no calibration data: TensorRT uses the cache

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, data) -> None:
            return None  # the cache is the bundle's input, not TensorRT's to rewrite

    return _CacheCalibrator()


def _builder_config(trt, builder, plan: BuildPlan, cfg: EngineConfig, profile: dict, cache: bytes | None):
    """``(config, calibrator)`` with workspace, flags, DLA, profile and calibrator set."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if cfg.builder_optimization_level is not None:
        config.builder_optimization_level = cfg.builder_optimization_level
    if cfg.dla_core is not None:
        if cfg.dla_core >= builder.num_DLA_cores:
            raise TgirUserError(f"DLA core {cfg.dla_core}: this device has {builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg.dla_core
    shapes = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        shapes.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(shapes) < 0:
        raise TgirUserError(f"TensorRT rejected the optimization profile {profile}")
    calibrator = None
    if plan.calibrator:
        calibrator = _cache_calibrator(trt, cache)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(shapes)  # required for calibration with dynamic shapes
    return config, calibrator


def _parse(trt, builder, plan: BuildPlan, onnx_path: Path, logger, profile: dict):
    """``(network, parser)`` for an ONNX file, its inputs checked against the manifest's."""
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise TgirUserError(f"{onnx_path}: TensorRT's ONNX parser failed: {'; '.join(errors) or 'no reason given'}")
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    if names != set(profile):
        raise TgirUserError(f"{onnx_path}: the graph's inputs {sorted(names)} differ from manifest.json's "
                            f"{sorted(profile)}")
    return network, parser


def _timing_cache(config, path: str | None):
    if path is None:
        return None
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # strict: a cache from another device is refused
        raise TgirUserError(f"{path}: TensorRT refused this timing cache (another GPU or TensorRT version?); "
                            "delete it or pass another --timing-cache")
    return cache


def _write_atomic(path: Path, data) -> None:  # data: bytes or TensorRT's IHostMemory (a buffer)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(memoryview(data))
    os.replace(tmp, path)


def engine_from_onnx(onnx_path: str | Path, out_path: str | Path, graph_spec: dict, precision: str,
                     cfg: EngineConfig = EngineConfig(), calibration_cache: str | Path | None = None,
                     log: Callable[[str], None] | None = None) -> dict:
    """Build one TensorRT engine from an ONNX graph of a bundle.

    Args:
        onnx_path: The graph.
        out_path: Where the serialized engine goes (written atomically).
        graph_spec: The graph's manifest entry (``inputs``, ``outputs``, ``dynamic``).
        precision: The bundle's precision (fp32, fp16 or int8 Q/DQ).
        cfg: Build settings.
        calibration_cache: Cache for the implicit INT8 path (``cfg.legacy_calibrator``).
        log: Receives TensorRT's log lines (``"[W] ..."``; verbose lines dropped).

    Returns:
        Facts of the build: plan, profile, ONNX and calibration SHA-256, size, seconds.

    Raises:
        TgirUserError: TensorRT missing, a refused combination, a parser or builder failure.
    """
    trt, start = tensorrt_module(), time.monotonic()
    plan = build_plan(trt.__version__, precision, cfg)
    if plan.calibrator != (calibration_cache is not None):
        raise TgirUserError("a calibration cache goes with --legacy-calibrator, and only with it")
    cache_path, cache = None, None
    if plan.calibrator:
        cache_path, allow_empty = graph_cache(calibration_cache, Path(onnx_path).stem)
        cache = calibration_cache_bytes(cache_path, trt.__version__, allow_empty)
    profile = _profile_shapes(Path(onnx_path).stem, graph_spec, plan.static_batch)
    select_device(cfg.device)
    logger = make_logger(trt, log)
    builder = trt.Builder(logger)
    network, parser = _parse(trt, builder, plan, Path(onnx_path), logger, profile)
    config, calibrator = _builder_config(trt, builder, plan, cfg, profile, cache)
    timing = _timing_cache(config, cfg.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TgirUserError(f"{onnx_path}: TensorRT could not build an engine: "
                            f"{'; '.join(logger.errors[-3:]) or 'see the build log'}")
    _write_atomic(Path(out_path), serialized)
    if timing is not None:
        _write_atomic(Path(cfg.timing_cache), config.get_timing_cache().serialize())
    del calibrator, parser  # held until here: TensorRT calls them during the build
    return {"plan": plan.to_dict(), "profile": {k: [list(s) for s in v] for k, v in profile.items()},
            "onnx_sha256": sha256(onnx_path), "calibration_sha256": sha256(cache_path) if cache else None,
            "bytes": Path(out_path).stat().st_size, "seconds": round(time.monotonic() - start, 2)}


def reuse_blockers(manifest: Manifest, wanted: dict) -> list[str]:
    """Why the bundle's engines cannot be reused for a build with ``wanted`` facts (empty: reuse).
    Every fact (TensorRT, GPU, flags, profiles, ONNX and calibration hashes) must match and every
    engine be listed, so a stale engine is always rebuilt, never silently reused."""
    recorded = manifest.build.get("tensorrt")
    if not recorded:
        return ["no engines yet"]
    missing = [g for g, spec in manifest.graphs.items() if not spec.get("engine")]
    changed = [k for k, v in wanted.items() if recorded.get(k) != v]
    return [f"no engine for {g}" for g in missing] + [f"{k} changed" for k in changed]


def _wanted_facts(manifest: Manifest, folder: Path, version: str, plan: BuildPlan, cfg: EngineConfig,
                  calibration_sha256: str | None) -> dict:
    names = list(manifest.graphs)
    files = {g: manifest.graphs[g]["file"] for g in names}
    return {"version": version, **device_facts(cfg.device), "precision": plan.precision, "path": plan.path,
            "network_flags": list(plan.network_flags), "builder_flags": list(plan.builder_flags),
            "workspace_mib": cfg.workspace_mib, "builder_optimization_level": cfg.builder_optimization_level,
            "dla_core": cfg.dla_core, "version_compatible": cfg.version_compatible,
            "exclude_lean_runtime": cfg.exclude_lean_runtime,
            "profiles": {g: {k: [list(s) for s in v] for k, v in
                             profiles_from_manifest(manifest, g, plan.static_batch).items()} for g in names},
            "onnx_sha256": {g: manifest.files.get(f) or sha256(folder / f) for g, f in files.items()},
            "calibration_sha256": calibration_sha256}


def _require_tensorrt_bundle(manifest: Manifest, folder: Path) -> None:
    flavour = manifest.build.get("quantization", {}).get("flavour")
    if manifest.precision == "int8" and flavour != "tensorrt":
        raise TgirUserError(f"{folder}: this int8 bundle was calibrated for {flavour or 'an unknown target'} "
                            "(uint8 activations are for ONNX Runtime); TensorRT takes symmetric int8: "
                            "run tgir-export calibrate --flavour tensorrt")


def engines_from_bundle(bundle_dir: str | Path, cfg: EngineConfig = EngineConfig(),
                        progress: Callable[[str], None] | None = None, *,
                        calibration_cache: str | Path | None = None, force: bool = False) -> dict:
    """Build a TensorRT engine for every graph of a bundle, in place.

    Writes ``<graph>.engine`` and ``build_log.txt`` and records them in the manifest
    (``graphs[g]["engine"]``, ``backend = "tensorrt"``, ``build["tensorrt"]``: the facts runners
    check). The ONNX graphs stay (ONNX Runtime still runs the bundle); nothing changes unless every
    engine builds; engines whose facts all still match are reused unless ``force``.

    Args:
        bundle_dir: Bundle directory (fp32, fp16 or a TensorRT-flavour int8 Q/DQ bundle).
        cfg: Build settings.
        progress: Called with each graph's name before it is built.
        calibration_cache: Calibration cache for ``cfg.legacy_calibrator``.
        force: Rebuild even when the engines are fresh.

    Returns:
        ``build["tensorrt"]`` plus ``"built"`` and ``"reused"`` graph lists.
    """
    folder = Path(bundle_dir)
    manifest = Manifest.load(folder)
    _require_tensorrt_bundle(manifest, folder)
    version = tensorrt_version()
    plan = build_plan(version, manifest.precision, cfg)  # refuse before any work
    if plan.calibrator != (calibration_cache is not None):
        raise TgirUserError("--legacy-calibrator needs --calibration-cache, and a calibration cache is used only "
                            "with --legacy-calibrator")
    wanted = _wanted_facts(manifest, folder, version, plan, cfg,
                           calibration_digest(calibration_cache, manifest.graphs) if plan.calibrator else None)
    if not force and not reuse_blockers(manifest, wanted):
        return {**manifest.build["tensorrt"], "built": [], "reused": list(manifest.graphs)}
    lines: list[str] = []
    tmp = {g: folder / f".{g}.engine.building" for g in manifest.graphs}
    try:
        seconds = {}
        for name, spec in manifest.graphs.items():
            if progress:
                progress(name)
            lines.append(f"== {name}")
            facts = engine_from_onnx(folder / spec["file"], tmp[name], spec, manifest.precision, cfg,
                                     calibration_cache, lines.append)
            seconds[name] = facts["seconds"]
        for name, path in tmp.items():
            os.replace(path, folder / f"{name}.engine")
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    (folder / LOG_FILE).write_text("\n".join(lines) + "\n")
    for name, spec in manifest.graphs.items():
        spec["engine"] = f"{name}.engine"
        manifest.files[spec["engine"]] = ""
    manifest.files[LOG_FILE] = ""
    manifest.backend = "tensorrt"
    manifest.build["tensorrt"] = {**wanted, "log": LOG_FILE, "timing_cache": cfg.timing_cache, "seconds": seconds}
    manifest.save(folder)
    return {**manifest.build["tensorrt"], "built": list(manifest.graphs), "reused": []}
