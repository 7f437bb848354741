"""fp32 bundle -> INT8 Q/DQ bundle: calibrate the source model in PyTorch on real samples, export
the fake-quantized model with the same I/O contract, router form and tau."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tgir.calib.cache import CACHE_SUFFIX, DEFAULT_CACHE_VERSION, cache_entries, write_calibration_cache
from tgir.calib.data import CalibData, bundle_inputs, calibration_batches
from tgir.calib.lstm import quantize_lstm_weights
from tgir.calib.qdq import QuantConfig, QuantInput, quantize_model
from tgir.export.onnx import OnnxConfig, onnx_from_model

from tgir.manifest import Manifest, sha256
from tgir.training.checkpoint import model_for_bundle


def quantized_from_bundle(bundle: str | Path, out_dir: str | Path, data: CalibData, cfg: QuantConfig,
                          checkpoint: str | Path | None = None, overwrite: bool = False,
                          progress: Callable[[str, int, int], None] | None = None,
                          cache_version: str = DEFAULT_CACHE_VERSION) -> tuple[Manifest, dict]:
    """Calibrate the fp32 ``bundle``'s model on ``data`` and write an INT8 Q/DQ bundle to ``out_dir``.

    The new bundle also holds one TensorRT calibration cache per graph (``<graph>.calibration.cache``)
    from the same ranges, keyed by the tensor names of the *fp32* bundle's graphs: the implicit-INT8
    path (TensorRT 8.5-10.x, ``build-engine --legacy-calibrator``) builds those with it.

    Args:
        checkpoint: The bundle's source checkpoint (default: the one its manifest names).
        cache_version: TensorRT version the caches are written for (their header must match it).

    Returns:
        The new manifest and the calibrated ranges (module name -> ``Range``).
    """
    manifest, _, vocab = bundle_inputs(bundle)
    model = model_for_bundle(manifest, bundle, checkpoint)
    router = manifest.router
    onnx_cfg = OnnxConfig(tau=router.get("tau"), router=router.get("form", "if") if router.get("tau") else "if",
                          opset=manifest.build.get("opset", 18),
                          max_batch=manifest.graphs["image_encoder"]["dynamic"]["batch"][-1],
                          opt_batch=manifest.graphs["image_encoder"]["dynamic"]["batch"][1],
                          text_length=manifest.tokenizer["max_length"])
    batches = calibration_batches(bundle, data, progress=lambda d, n: progress and progress("calibrating", d, n))
    ranges, kept = quantize_model(model, batches, cfg)
    facts = {"quantization": {"flavour": cfg.flavour, "method": cfg.method, "percentile": cfg.percentile,
                              "weights": f"int8 per channel, [-{cfg.weight_qmax}, {cfg.weight_qmax}]",
                              "lstm": "int8 weights (onnxruntime DynamicQuantizeLSTM, per channel)"
                              if cfg.lstm_in_int8 else "float",
                              "keep": list(cfg.keep), "tensors": len(ranges), "samples": data.samples,
                              "kept_by_sensitivity": [{"layer": n, "score": round(v, 6)} for n, v in kept],
                              "seed": data.seed, "dataset": data.dataset, "split": data.split},
             "source_bundle_sha256": sha256(Path(bundle) / "manifest.json")}
    source = {k: manifest.model[k] for k in ("checkpoint", "checkpoint_sha256") if k in manifest.model}
    new = onnx_from_model(model, vocab, out_dir, onnx_cfg, overwrite,
                          progress=lambda g: progress and progress(f"exporting {g}", 0, 0), source=source,
                          precision="int8", build=facts, rewrite=_lstm_rewrite(cfg))
    _write_caches(Path(out_dir), new, Path(bundle), manifest, model, ranges, cache_version)
    return new, ranges


def _write_caches(out: Path, new: Manifest, source: Path, source_manifest: Manifest, model, ranges: dict,
                  version: str) -> None:
    """One calibration cache per graph, keyed by the fp32 source graphs' tensors; listed in the manifest."""
    import onnx

    quantized = [m for m in model.modules() if isinstance(m, QuantInput) and m.mode == "quant"]
    weights = {m.name: m.inner.weight.detach().float().numpy() for m in quantized}
    amax = {m.name: ranges[m.name].amax for m in quantized}
    caches, unmatched = {}, set(weights)
    for graph, spec in source_manifest.graphs.items():
        entries, missed = cache_entries(onnx.load(source / spec["file"]), weights, amax)
        unmatched &= set(missed)
        name = f"{graph}{CACHE_SUFFIX}"
        write_calibration_cache(out / name, entries, tensorrt=version, allow_empty=True)
        new.files[name] = ""
        caches[graph] = {"file": name, "tensors": len(entries)}
    new.build["quantization"]["calibration_caches"] = {
        "tensorrt": version, "graphs": caches, "keyed_by": "tensor names of the fp32 source bundle's graphs",
        "source_graphs_sha256": {g: source_manifest.files.get(s["file"]) for g, s in source_manifest.graphs.items()},
        "modules_without_a_tensor": sorted(unmatched)}
    new.save(out)


def _lstm_rewrite(cfg: QuantConfig) -> Callable[[str, Path], None] | None:
    if not cfg.lstm_in_int8:
        return None

    def rewrite(graph: str, path: Path) -> None:
        if graph == "text_encoder":
            quantize_lstm_weights(path)

    return rewrite
