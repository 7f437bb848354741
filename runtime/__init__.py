"""tgir.runtime: runners (ONNX Runtime, TensorRT, PyTorch, the C library), gallery index and search.

Never imports torch, the exporter or the calibrator at import time; the C runtime's sources live
beside this file (include/, src/). Imported as ``tgir.runtime``.

    import tgir.runtime
    with tgir.runtime.open("bundle/") as runner:           # backend from the manifest, or "auto"
        gallery = runner.encode_images(["a.png", "b.png"])  # [2, D]
        query = runner.encode_queries(["ref.png"], ["make the red circle big"])  # [1, D]
"""

from __future__ import annotations

from pathlib import Path

from tgir.runtime.base import QueryTextWarning, Runner, TextTooLongWarning, UnknownWordsWarning

from tgir.errors import TgirUserError, unknown_choice
from tgir.manifest import Manifest

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch", "c")

__all__ = ["BACKENDS", "QueryTextWarning", "Runner", "TextTooLongWarning", "UnknownWordsWarning", "open"]


def open(bundle: str | Path, backend: str = "auto", **options) -> Runner:
    """Open a bundle with a runner.

    Args:
        bundle: Bundle directory.
        backend: ``"auto"`` (TensorRT for a bundle with engines, else ONNX Runtime), ``"onnxruntime"``,
            ``"tensorrt"``, ``"torch"`` (the PyTorch reference of the source checkpoint) or ``"c"``
            (libtgir, the C runtime, through ctypes; needs ``tgir-export aoti`` packages or engines).
        **options: Backend settings: ONNX Runtime ``provider``, ``threads``, ``level``; torch
            ``checkpoint``, ``device``; TensorRT ``device``, ``lean_runtime``, ``strict_device``; C
            ``backend`` ("auto", "aoti", "tensorrt"), ``device``, ``threads``, ``max_batch``, ``library``.

    Raises:
        TgirUserError: Unknown backend, a bad bundle, or a backend this bundle or machine lacks.
    """
    if backend not in BACKENDS:
        raise unknown_choice("backend", backend, BACKENDS)
    manifest = Manifest.load(bundle)
    if backend == "auto":
        backend = "tensorrt" if manifest.backend == "tensorrt" else "onnxruntime"
    if backend == "onnxruntime":
        from tgir.runtime.ort import OrtOptions, OrtRunner

        _refuse_unknown(bundle, backend, OrtOptions, options)
        return OrtRunner(bundle, OrtOptions(**options), manifest)
    if backend == "c":
        from tgir.runtime.clib import CRunner

        _refuse_unknown(bundle, backend, CRunner, options)
        return CRunner(bundle, manifest=manifest, **options)
    if backend == "torch":
        from tgir.runtime.reference import TorchRunner

        _refuse_unknown(bundle, backend, TorchRunner, options)
        return TorchRunner(bundle, manifest=manifest, **options)
    from tgir.runtime.trt import TensorRTRunner, TrtOptions

    _refuse_unknown(bundle, backend, TrtOptions, options)
    return TensorRTRunner(bundle, TrtOptions(**options), manifest)


def _refuse_unknown(bundle: str | Path, backend: str, takes: type, options: dict) -> None:
    """Refuse, naming only them, the options ``takes`` (a runner or its options class) has no parameter
    for (e.g. threads for a TensorRT bundle)."""
    import inspect

    accepted = set(inspect.signature(takes).parameters) - {"self", "folder", "manifest"}
    rejected = sorted(name for name in options if name not in accepted)
    if rejected:
        raise TgirUserError(f"{bundle}: runs on {backend}, which does not take the option(s) {', '.join(rejected)} "
                            f"(it takes {', '.join(sorted(accepted))})")
