"""fp32 bundle -> INT8 Q/DQ bundle: calibrate the source model in PyTorch on real samples, export
the fake-quantized model with the same I/O contract, router form and tau."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tgir.calib.data import CalibData, bundle_inputs, calibration_batches
from tgir.calib.lstm import quantize_lstm_weights
from tgir.calib.qdq import QuantConfig, quantize_model
from tgir.export.onnx import OnnxConfig, onnx_from_model

from tgir.manifest import Manifest, sha256
from tgir.training.checkpoint import model_for_bundle


def quantized_from_bundle(bundle: str | Path, out_dir: str | Path, data: CalibData, cfg: QuantConfig,
                          checkpoint: str | Path | None = None, overwrite: bool = False,
                          progress: Callable[[str, int, int], None] | None = None) -> tuple[Manifest, dict]:
    """Calibrate the fp32 ``bundle``'s model on ``data`` and write an INT8 Q/DQ bundle to ``out_dir``.

    Args:
        checkpoint: The bundle's source checkpoint (default: the one its manifest names).

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
    return new, ranges


def _lstm_rewrite(cfg: QuantConfig) -> Callable[[str, Path], None] | None:
    if not cfg.lstm_in_int8:
        return None

    def rewrite(graph: str, path: Path) -> None:
        if graph == "text_encoder":
            quantize_lstm_weights(path)

    return rewrite
