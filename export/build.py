"""``tgir-export build-engine``: checkpoint -> ONNX -> check -> (calibrate | FP16) -> engines or an
optimised ONNX Runtime bundle, as one deployable bundle directory.

Stages (each reported through ``progress(stage, done, total)``):
    export     fp32 ONNX graphs + manifest (``tgir.export.onnx``)
    check      ONNX checker, shape inference, hygiene, TensorRT lint, parity with PyTorch
    calibrate  INT8 Q/DQ graphs from real samples (``tgir.export.quantize``), or FP16 graphs
    build      TensorRT engines (``tgir.export.engine``) or ONNX Runtime's optimised graphs
    verify     the finished bundle opens with its runner and answers a query

The bundle records the ``BuildConfig`` it was made from (``build_config.json`` and its digest in the
manifest) with the checkpoint's SHA-256: an existing bundle built from the same recipe is reported
up to date and kept; one built from anything else is stale and rebuilt, never silently reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tgir.calib.cache import DEFAULT_CACHE_VERSION
from tgir.calib.data import CalibData, usable_queries
from tgir.export.engine import EngineConfig
from tgir.export.onnx import OnnxConfig

from tgir.errors import TgirInternalError, TgirUserError, unknown_choice
from tgir.manifest import Manifest, open_to_umask, sha256

PRECISIONS = ("fp32", "fp16", "int8", "best")
BACKENDS = ("auto", "tensorrt", "onnxruntime")
METHODS = ("entropy", "percentile", "max")
DEFAULT_CHECKPOINT = "amc_css2d.pt"
Progress = Callable[[str, int, int], None]
# Fused vs separate graphs, max abs on unit-norm queries: the same ops, maybe fused differently by
# ONNX Runtime (measured 0 on the INT8 and FP32 AMC bundles).
FUSED_TOLERANCE = 1e-4


@dataclass(frozen=True)
class CalibSettings:
    """INT8 calibration. Defaults are the shipped settings (benchmarks/RESULTS.md, precision table).

    Attributes:
        data: Dataset root of the samples; None generates a small CSS-2D training split.
        dataset: Its format.
        method: Observer: entropy, percentile or max.
        percentile: Kept share of |values| for ``percentile``.
        samples: Calibration queries.
        seed: Seed of the sample draw (and of a generated dataset).
        keep_sensitive: Layers a sensitivity sweep finds most harmful to quantize, left in float.
    """

    data: str | None = None
    dataset: str = "css2d"
    method: str = "percentile"
    percentile: float = 99.99
    samples: int = 512
    seed: int = 0
    keep_sensitive: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise unknown_choice("calibration method", self.method, METHODS)
        self.calib_data(self.data or "")  # dataset name and sample count, before any slow work
        if not 0 < self.percentile <= 100:
            raise TgirUserError(f"calibration percentile must be in (0, 100] (e.g. 99.99), got {self.percentile}")
        if self.keep_sensitive < 0:
            raise TgirUserError(f"--calib-keep-sensitive must be >= 0, got {self.keep_sensitive}")

    def calib_data(self, root: str) -> CalibData:
        """Where the samples come from: the training split of ``root`` in this format."""
        return CalibData(self.dataset, root, samples=self.samples, seed=self.seed)


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``build-engine`` does, from one checkpoint to one bundle.

    Attributes:
        checkpoint: Trained checkpoint (default: the shipped AMC, ``trained/amc_css2d.pt``).
        out: Bundle directory.
        precision: fp32, fp16, int8 or best. ``best`` builds the same int8 Q/DQ bundle as int8:
            TensorRT 11's strongly typed networks take precision from the graph only, so there is no
            "int8 plus fp16 elsewhere" switch to add on top.
        backend: auto (TensorRT when importable and a GPU is present, else ONNX Runtime),
            tensorrt or onnxruntime.
        onnx: Export settings (router form, tau, batch range, text length, opset).
        calib: INT8 calibration settings.
        parity: Run the ONNX Runtime vs PyTorch parity check on the fp32 graphs.
        tensorrt_lint: TensorRT version the operator lint targets (None: skip the lint).
        threads: ONNX Runtime intra-op threads recorded for the bundle's runner (0: one per core).
        engine: TensorRT builder settings (``tgir.export.engine.EngineConfig`` fields as a dict).
        calibration_cache: TensorRT calibration cache for the legacy implicit INT8 path
            (``engine["legacy_calibrator"]``, TensorRT 8.5-10.x): the fp32 graphs are built with it
            instead of Q/DQ graphs. A file (one cache for every graph) or a folder of per-graph
            caches; None with the legacy path: calibrate here and use the caches that writes.
    """

    checkpoint: str | None = None
    out: str = "bundle"
    precision: str = "int8"
    backend: str = "auto"
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    calib: CalibSettings = field(default_factory=CalibSettings)
    parity: bool = True
    tensorrt_lint: str | None = "10.15"
    threads: int = 0
    engine: dict = field(default_factory=dict)
    calibration_cache: str | None = None

    def __post_init__(self) -> None:
        if self.calibration_cache and not self.engine.get("legacy_calibrator"):
            raise TgirUserError("--calibration-cache goes with --legacy-calibrator (TensorRT 8.5-10.x implicit INT8)")
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision", self.precision, PRECISIONS)
        if self.backend not in BACKENDS:
            raise unknown_choice("backend", self.backend, BACKENDS)
        if self.threads < 0:
            raise TgirUserError(f"--threads must be >= 0 (0: one per core), got {self.threads}")
        EngineConfig(**self.engine)  # TensorRT settings are checked whatever the backend
        if self.calibration_cache and not Path(self.calibration_cache).exists():
            raise TgirUserError(f"{self.calibration_cache}: calibration cache not found (a file, or a folder of "
                                "per-graph caches)")

    @property
    def calibrates(self) -> bool:
        """Whether the build calibrates: int8/best with Q/DQ graphs, or the legacy path without a cache."""
        if self.engine.get("legacy_calibrator"):
            return self.calibration_cache is None
        return self.precision in ("int8", "best")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self, checkpoint_sha256: str) -> str:
        """What the bundle depends on: this config (minus where it is written) and the weights."""
        recipe = {k: v for k, v in self.to_dict().items() if k != "out"}
        text = json.dumps({"config": recipe, "checkpoint_sha256": checkpoint_sha256}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def shipped_checkpoint(name: str = DEFAULT_CHECKPOINT) -> Path:
    """A checkpoint shipped in the source tree's ``trained/`` folder (``pip install -e .``)."""
    import tgir

    path = Path(tgir.__file__).resolve().parents[1] / "trained" / name
    if not path.is_file():
        raise TgirUserError(f"shipped checkpoint {name} not found at {path}; pass --checkpoint "
                            "(the shipped models live in the source checkout's trained/ folder)")
    return path


def resolve_backend(choice: str) -> str:
    """``auto`` -> ``tensorrt`` when TensorRT imports and a CUDA GPU is visible, else ``onnxruntime``."""
    if choice != "auto":
        return choice
    from tgir.export.engine import cuda_device_available, tensorrt_version

    try:  # a stub wheel or missing CUDA libraries fail in other ways than ImportError
        tensorrt_version()
    except Exception:
        return "onnxruntime"
    return "tensorrt" if cuda_device_available() else "onnxruntime"


def up_to_date(out: Path, digest: str) -> Manifest | None:
    """The existing bundle at ``out`` if it was built from the same recipe and is intact, else None.

    Raises:
        TgirUserError: ``out`` holds files that are not a tgir bundle (never overwritten).
    """
    if not out.exists():
        return None
    if not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file()):
        raise TgirUserError(f"{out}: exists and is not a tgir bundle; choose another --out")
    if not (out / "manifest.json").is_file():
        return None
    try:
        manifest = Manifest.load(out)
    except TgirUserError:
        return None  # damaged or from another tgir: rebuilt
    return manifest if manifest.build.get("recipe_sha256") == digest else None


def build_bundle(cfg: BuildConfig, progress: Progress | None = None, force: bool = False) -> tuple[Manifest, dict]:
    """Run every stage and write the bundle to ``cfg.out`` (atomically: built aside, then renamed).

    Returns:
        The bundle's manifest and a summary (stages run, backend, files, whether it was rebuilt).
    """
    report = progress or (lambda stage, done, total: None)
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else shipped_checkpoint()
    if not checkpoint.is_file():
        raise TgirUserError(f"{checkpoint}: checkpoint not found")
    cfg = dataclasses.replace(cfg, checkpoint=str(checkpoint.resolve()))
    digest = cfg.digest(sha256(checkpoint))
    out = Path(cfg.out)
    existing = None if force else up_to_date(out, digest)
    if existing is not None:
        return existing, {"out": str(out), "up_to_date": True}
    backend = resolve_backend(cfg.backend)
    _preflight(cfg, backend)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build.", dir=out.parent))
    try:
        final, stages = _stages(cfg, backend, work, report)
        manifest = Manifest.load(final)
        manifest.build["recipe_sha256"] = digest
        (final / "build_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        manifest.files["build_config.json"] = ""
        manifest.save(final)
        report("verify", 0, 1)
        smoke = _verify(final, backend)
        report("verify", 1, 1)
        open_to_umask(final)
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Manifest.load(out), {"out": str(out), "up_to_date": False, "backend": backend, "stages": stages,
                                "verify": smoke}


def _preflight(cfg: BuildConfig, backend: str) -> None:
    """What can fail fast, before minutes of export and calibration: TensorRT present for that
    backend, and a calibration dataset that loads and has enough queries."""
    if backend == "tensorrt":
        from tgir.export.engine import tensorrt_version

        tensorrt_version()
    if cfg.calibrates and cfg.calib.data is not None:
        usable_queries(cfg.calib.calib_data(cfg.calib.data))


def _stages(cfg: BuildConfig, backend: str, work: Path, report: Progress) -> tuple[Path, list[str]]:
    from tgir.export.check import check_bundle, require_ok
    from tgir.export.onnx import onnx_from_checkpoint

    fp32 = work / "fp32"
    onnx_from_checkpoint(cfg.checkpoint, fp32, cfg.onnx, progress=lambda g: report(f"export {g}", 0, 0))
    report("check", 0, 0)
    require_ok(check_bundle(fp32, cfg.checkpoint, cfg.calib.data if cfg.calib.dataset == "css2d" else None,
                            "css2d", cfg.tensorrt_lint, cfg.parity, lambda d, n: report("parity", d, n)), fp32)
    stages, final = ["export", "check"], fp32
    # "best" is int8 Q/DQ: TensorRT 11's strongly typed networks take precision only from the graph,
    # so there is no documented "int8 where possible, fp16 elsewhere" switch to add on top.
    precision = "int8" if cfg.precision == "best" else cfg.precision
    legacy = bool(cfg.engine.get("legacy_calibrator"))
    cache = cfg.calibration_cache
    if precision == "int8" and not legacy:
        final = _calibrate(cfg, backend, fp32, work / "int8", report)
        stages.append("calibrate")
    elif legacy and cache is None:  # implicit INT8: our ranges as caches for the fp32 graphs
        from tgir.export.engine import tensorrt_version

        cache = str(_calibrate(cfg, backend, fp32, work / "calibration", report, tensorrt_version()))
        stages.append("calibrate (caches)")
    elif precision == "fp16":
        from tgir.calib.fp16 import fp16_from_bundle

        fp16_from_bundle(fp32, work / "fp16", progress=lambda *a: report("fp16", 0, 0))
        final = work / "fp16"
        stages.append("fp16")
    report("build", 0, 1)
    _build_backend(dataclasses.replace(cfg, calibration_cache=cache), backend, final)
    report("build", 1, 1)
    return final, [*stages, f"build ({backend})"]


def _calibrate(cfg: BuildConfig, backend: str, fp32: Path, out: Path, report: Progress,
               cache_version: str = DEFAULT_CACHE_VERSION) -> Path:
    from tgir.calib.qdq import QuantConfig
    from tgir.export.quantize import quantized_from_bundle

    c = cfg.calib
    data = c.data
    if data is None:  # no dataset given: the CSS-2D generator makes a small training split
        from tgir.data.css2d import Css2dConfig, write_css2d

        data = str(out.parent / "calib_css2d")
        report("generate calibration data (CSS-2D)", 0, 0)
        write_css2d(Css2dConfig(seed=1000 + c.seed, scale=max(0.01, c.samples / 18000 * 1.1)), data)
    # The runtime decides the flavour: TensorRT wants symmetric int8 activations, ONNX Runtime's CPU
    # kernels are fastest with uint8 activations and (without VNNI) 7-bit weights.
    flavour = "tensorrt" if backend == "tensorrt" else "cpu"
    quantized_from_bundle(fp32, out, c.calib_data(data),
                          QuantConfig(flavour=flavour, method=c.method, percentile=c.percentile,
                                      keep_sensitive=c.keep_sensitive),
                          cfg.checkpoint, progress=lambda s, d, n: report(s.replace("exporting", "export int8"), d, n),
                          cache_version=cache_version)
    if c.data is None:
        manifest = Manifest.load(out)
        manifest.build["quantization"]["dataset"] = f"generated css2d (seed {1000 + c.seed})"
        manifest.save(out)
    return out


def _build_backend(cfg: BuildConfig, backend: str, bundle: Path) -> None:
    manifest = Manifest.load(bundle)
    if backend == "onnxruntime":
        from tgir.export.fuse import query_graph_from_bundle
        from tgir.runtime.ort import OrtOptions, save_optimized

        query_graph_from_bundle(bundle, manifest)
        save_optimized(bundle, manifest, OrtOptions(provider="cpu", threads=cfg.threads))
        manifest.backend = "onnxruntime"
        manifest.build["runner"] = {"threads": cfg.threads}
        manifest.save(bundle)
        return
    from tgir.export.engine import EngineConfig, engines_from_bundle

    engine = dict(cfg.engine)
    if engine.get("legacy_calibrator"):  # fp32 graphs + cache: the engine itself is int8
        engine["precision"] = "int8"
    engines_from_bundle(bundle, EngineConfig(**engine), calibration_cache=cfg.calibration_cache)


def _verify(bundle: Path, backend: str) -> dict:
    """Open the finished bundle with its runner and embed one generated image and text; a fused query
    graph must give the separate graphs' answer."""
    import numpy as np
    from tgir.runtime import UnknownWordsWarning
    from tgir.runtime import open as open_runner

    with open_runner(bundle, backend) as runner:
        side = runner.preprocess.size
        pixels = np.random.default_rng(0).uniform(-2, 2, (2, 3, side, side)).astype(np.float32)
        texts = ["make it red", "remove the big circle"]
        ids, lengths = runner.vocab.encode_batch(texts, runner.text_length)
        query = runner.compose(runner.encode_images(pixels, tokens=True)[1], ids, lengths)
        with warnings.catch_warnings():  # a vocabulary without these words still verifies the graphs
            warnings.simplefilter("ignore", UnknownWordsWarning)
            fused = runner.encode_queries(pixels, texts) if runner.fused else query
    if not np.isfinite(query).all():
        raise TgirInternalError(f"{bundle}: the built bundle answers NaN; please report this with build_config.json")
    gap = float(np.abs(fused - query).max())
    if gap > FUSED_TOLERANCE:
        raise TgirInternalError(f"{bundle}: the fused query graph differs from the separate graphs by {gap:.2e} "
                                f"(> {FUSED_TOLERANCE}); please report this with build_config.json")
    return {"runner": backend, "query_dim": int(query.shape[1]), "fused": sorted(runner.fused),
            "fused_max_abs": gap}
