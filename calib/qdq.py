"""Explicit INT8 quantization in PyTorch, exported as ONNX QuantizeLinear/DequantizeLinear pairs.

Every ``nn.Linear`` and ``nn.Conv2d`` (the Gemm/MatMul/Conv of the graphs) is wrapped by a
``QuantInput``: in ``observe`` mode it feeds its input to an observer; in ``quant`` mode it fake-
quantizes its input per tensor and its weight per output channel with
``torch.ops.quantized_decomposed`` ops, which the dynamo exporter writes as Q/DQ nodes, also inside
the ``torch.cond`` branches that hold AMC's experts (onnxruntime's and ModelOpt's ONNX quantizers
leave ``If`` bodies untouched: notes/feasibility.md). Residual adds (``SkipAdd``) get both inputs
quantized by a ``QuantAdd``, so that the conv before each add can run quantized too. Normalisation
and softmax stay in floating point: the runtimes gain nothing there.

Two flavours from the same observed ranges:
- ``tensorrt``: int8 symmetric activations (zero point 0, scale amax / 127), what TensorRT's
  explicit quantization wants;
- ``cpu``: uint8 asymmetric activations, what ONNX Runtime's CPU kernels run fastest.
Weights are int8 symmetric per output channel in both; the ``cpu`` flavour keeps them in 7 bits
(``reduce_range``, [-63, 63]): on x86 CPUs without VNNI, ONNX Runtime's u8s8 kernels add pairs of
uint8 x int8 products in int16 and saturate with full 8-bit weights (measured here on an AVX2-only
AMD EPYC: 0.136 max abs error on a tiny composer against 6.7e-8 with the same graph unfused).
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.ao.quantization.fx._decomposed  # registers torch.ops.quantized_decomposed
from tgir.calib.fold import fold_batchnorms
from tgir.calib.observers import METHODS, Observer, Range, make_observer
from tgir.calib.sensitivity import sweep
from torch import nn
from torch.nn import functional as F

from tgir.errors import TgirUserError, unknown_choice
from tgir.models.backbones import SkipAdd

FLAVOURS = ("tensorrt", "cpu")
_QD = torch.ops.quantized_decomposed


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize.

    Attributes:
        flavour: ``"tensorrt"`` (int8 symmetric activations) or ``"cpu"`` (uint8 asymmetric).
        method: Activation observer: ``"entropy"``, ``"percentile"`` or ``"max"``.
        percentile: Kept share of |values| for the percentile method.
        keep: Module-name patterns (fnmatch) left in floating point, e.g. sensitive layers. By
            default the router's last Linear (hidden -> one logit per expert) stays float: its
            gates decide which experts run. Its first, 2D -> hidden, holds nearly all the router's
            weights and quantizes without a measurable loss (shipped AMC, full CSS-2D test: R@1
            70.61 with it int8 vs 70.56 float; composer 0.77 -> 0.72 ms at batch 1). The image
            trunk's stem conv (EfficientNet ``_conv_stem``, ResNet ``conv1``) stays float too: it
            reads the image itself, the sensitivity sweep ranks it first for ITMA, and keeping it
            float costs no measurable latency (whole AMC query 1.75 vs 1.77 ms at batch 1) while
            it gains R@1 on the full CSS-2D test: ITMA +3.6, AMC +0.26, TIRG +0.26 (cpu flavour).
        reduce_range: 7-bit weights (None: on for the ``cpu`` flavour, off for ``tensorrt``).
        keep_sensitive: Also leave in float the this many layers an automatic sensitivity sweep
            finds most harmful to quantize (``tgir.calib.sensitivity``); 0: no sweep.
        int8_lstm: LSTM weights in int8 through ONNX Runtime's ``DynamicQuantizeLSTM``
            (``tgir.calib.lstm``; None: on for the ``cpu`` flavour; the op exists only in ONNX Runtime).
    """

    flavour: str = "tensorrt"
    method: str = "entropy"
    percentile: float = 99.99
    keep: tuple[str, ...] = ("*router.net.3", "*backbone._conv_stem", "*backbone.conv1")
    reduce_range: bool | None = None
    int8_lstm: bool | None = None
    keep_sensitive: int = 0

    @property
    def lstm_in_int8(self) -> bool:
        return self.flavour == "cpu" if self.int8_lstm is None else self.int8_lstm

    @property
    def weight_qmax(self) -> int:
        reduce = self.flavour == "cpu" if self.reduce_range is None else self.reduce_range
        return 63 if reduce else 127

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise unknown_choice("quantization flavour", self.flavour, FLAVOURS)
        if self.method not in METHODS:
            raise unknown_choice("calibration method", self.method, METHODS)
        if not 0 < self.percentile <= 100:
            raise TgirUserError(f"percentile must be in (0, 100] (e.g. 99.99), got {self.percentile}")
        if self.keep_sensitive < 0:
            raise TgirUserError(f"keep_sensitive must be >= 0, got {self.keep_sensitive}")
        if self.int8_lstm and self.flavour == "tensorrt":
            raise TgirUserError("int8 LSTM weights need ONNX Runtime's DynamicQuantizeLSTM, which TensorRT cannot "
                                "parse; use the cpu flavour or keep the LSTM in float")


def activation_params(rng: Range, flavour: str) -> tuple[float, int, int, int, torch.dtype]:
    """``(scale, zero point, qmin, qmax, dtype)`` of a per-tensor activation quantizer for a range."""
    if flavour == "tensorrt":
        return (max(rng.amax, 1e-12) / 127.0, 0, -128, 127, torch.int8)
    # uint8 asymmetric over [min(lo, 0), max(hi, 0)]: zero stays exactly representable
    lo, hi = min(rng.lo, 0.0), max(rng.hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255.0
    return (scale, int(np.clip(round(-lo / scale), 0, 255)), 0, 255, torch.uint8)


def fake_quant(x: torch.Tensor, act: tuple[float, int, int, int, torch.dtype]) -> torch.Tensor:
    """Quantize then dequantize ``x`` per tensor (exported as a QuantizeLinear/DequantizeLinear pair)."""
    scale, zp, qmin, qmax, dtype = act
    return _QD.dequantize_per_tensor(_QD.quantize_per_tensor(x, scale, zp, qmin, qmax, dtype),
                                     scale, zp, qmin, qmax, dtype)


class QuantInput(nn.Module):
    """A Linear or Conv2d whose input and weight are fake-quantized in ``quant`` mode."""

    def __init__(self, inner: nn.Linear | nn.Conv2d, name: str) -> None:
        super().__init__()
        self.inner, self.name = inner, name
        self.mode = "float"
        self.observer: Observer | None = None
        self.act: tuple[float, int, int, int, torch.dtype] | None = None  # scale, zp, qmin, qmax, dtype
        out = inner.weight.shape[0]
        self.w_qmax = 127
        self.register_buffer("w_scale", torch.ones(out), persistent=False)
        self.register_buffer("w_zero", torch.zeros(out, dtype=torch.int64), persistent=False)

    def observed(self) -> tuple[str, ...]:
        """Names of the tensors this wrapper observes (keys of the calibrated ranges)."""
        return (self.name,)

    def configure(self, ranges: dict[str, Range], cfg: QuantConfig) -> None:
        """Set the activation quantizer from the observed range and the weight scales."""
        self.set_activation(ranges[self.name], cfg.flavour)
        self.set_weight_scales(cfg.weight_qmax)

    def set_weight_scales(self, qmax: int = 127) -> None:
        """Symmetric int8 per output channel: scale = max |w| / qmax over each channel."""
        w = self.inner.weight.detach()
        amax = w.abs().reshape(w.shape[0], -1).amax(dim=1).clamp_min(1e-12)  # [out]
        self.w_scale, self.w_qmax = (amax / qmax).to(torch.float32), qmax

    def set_activation(self, rng: Range, flavour: str) -> None:
        self.act = activation_params(rng, flavour)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            self.observer.observe(self.name, x.detach().float().cpu().numpy())
        if self.mode != "quant":
            return self.inner(x)
        x = fake_quant(x, self.act)
        w = self.inner.weight
        # The scale alone keeps |w / scale| <= w_qmax; declaring int8's full range keeps the exporter
        # from adding an int8 Clip (which TensorRT's parser rejects).
        w = _QD.dequantize_per_channel(_QD.quantize_per_channel(w, self.w_scale, self.w_zero, 0, -128, 127,
                                                                torch.int8),
                                       self.w_scale, self.w_zero, 0, -128, 127, torch.int8)
        if isinstance(self.inner, nn.Linear):
            if x.dim() == 2:
                # as [B, 1, D]: the exporter writes a 2-D linear as a Gemm with a float bias, which ONNX
                # Runtime does not fuse with its Q/DQ (it dequantizes the weight on every call and runs
                # an fp32 Gemm); a Q/DQ MatMul on 3-D inputs becomes MatMulIntegerToFloat.
                return F.linear(x[:, None], w, self.inner.bias)[:, 0]  # [B, out]
            return F.linear(x, w, self.inner.bias)
        return self.inner._conv_forward(x, w, self.inner.bias)


class QuantAdd(nn.Module):
    """A residual ``SkipAdd`` whose two inputs are fake-quantized in ``quant`` mode.

    The skip input is the tensor the block's first conv also reads, observed the same way, so both
    get the same quantizer and ``tgir.export.cleanup.merge_duplicate_quantizers`` makes them one
    QuantizeLinear: the residual stream is then int8 from add to add, and the conv that feeds the add
    ends in a QuantizeLinear, which is what lets ONNX Runtime and TensorRT run it quantized.
    """

    def __init__(self, inner: SkipAdd, name: str) -> None:
        super().__init__()
        self.inner, self.name = inner, name
        self.mode = "float"
        self.observer: Observer | None = None
        self.acts: tuple[tuple, tuple] | None = None

    def observed(self) -> tuple[str, ...]:
        return (f"{self.name}[branch]", f"{self.name}[skip]")

    def configure(self, ranges: dict[str, Range], cfg: QuantConfig) -> None:
        self.acts = tuple(activation_params(ranges[n], cfg.flavour) for n in self.observed())

    def forward(self, branch: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            for name, t in zip(self.observed(), (branch, skip), strict=True):
                self.observer.observe(name, t.detach().float().cpu().numpy())
        if self.mode != "quant":
            return self.inner(branch, skip)
        return self.inner(fake_quant(branch, self.acts[0]), fake_quant(skip, self.acts[1]))


_WRAPPERS: dict[type[nn.Module], type[QuantInput | QuantAdd]] = {
    nn.Linear: QuantInput, nn.Conv2d: QuantInput, SkipAdd: QuantAdd}


def prepare(model: nn.Module, cfg: QuantConfig) -> list[QuantInput | QuantAdd]:
    """Wrap every Linear/Conv2d (inputs and weights) and every residual ``SkipAdd`` (both inputs) of
    ``model`` not matched by ``cfg.keep``, in place; returns the wrappers."""
    wrappers = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, QuantInput | QuantAdd):
                raise TgirUserError("model is already prepared for quantization")
            kind = _WRAPPERS.get(type(child))
            if kind is None or any(fnmatch.fnmatch(name, p) for p in cfg.keep):
                continue
            wrapper = kind(child, name)
            setattr(parent, child_name, wrapper)
            wrappers.append(wrapper)
    if not any(isinstance(w, QuantInput) for w in wrappers):
        raise TgirUserError("nothing to quantize: every Linear/Conv2d matched a keep pattern")
    return wrappers


def set_mode(wrappers: Iterable[QuantInput | QuantAdd], mode: str, observer: Observer | None = None) -> None:
    for w in wrappers:
        w.mode, w.observer = mode, observer


def calibrate(model: nn.Module, wrappers: list[QuantInput | QuantAdd], batches: Iterable, cfg: QuantConfig,
              forward: Callable[[nn.Module, object], None]) -> dict[str, Range]:
    """Observe every wrapped input on ``batches`` (``forward(model, batch)`` runs the model on one),
    then set activation and weight scales; returns the ranges (for caches and reports)."""
    observer = make_observer(cfg.method, cfg.percentile)
    set_mode(wrappers, "observe", observer)
    with torch.no_grad():
        for batch in batches:
            forward(model, batch)
    ranges = observer.ranges()
    missing = [n for w in wrappers for n in w.observed() if n not in ranges]
    if missing:
        raise TgirUserError(f"calibration never reached {', '.join(missing[:5])}: run every expert (tau 0, "
                            "eager) while calibrating")
    for w in wrappers:
        w.configure(ranges, cfg)
    set_mode(wrappers, "quant")
    return ranges


def model_forward(model: nn.Module, batch) -> None:
    """Run a retrieval model the way the three graphs will: references and targets through the image
    encoder, texts through the text encoder, the composer on the references' tokens.

    ``batch`` is a ``tgir.calib.data.CalibBatch``.
    """
    _, tokens = model.encode_image(torch.from_numpy(batch.references))
    model.encode_image(torch.from_numpy(batch.targets))
    text = model.encode_text(torch.from_numpy(batch.ids), torch.from_numpy(batch.lengths))
    model.compose(tokens, *text)


def quantize_model(model: nn.Module, batches: Iterable, cfg: QuantConfig
                   ) -> tuple[dict[str, Range], list[tuple[str, float]]]:
    """Fold BatchNorms into their convs, then prepare, calibrate and switch ``model`` to fake-quantized
    mode, in place; with ``cfg.keep_sensitive`` the worst layers of a sensitivity sweep (on the
    first two batches) go back to float.

    AMC's router is set to run every expert while observing (each expert's inputs get a range even
    if the threshold would skip it on the calibration data) and restored afterwards.

    Returns:
        The calibrated ranges and the layers kept in float by the sweep with their scores.
    """
    router = getattr(model.config, "router", None) if model.config.family == "amc" else None
    if router is not None:
        model.set_router(tau=0.0, conditional=False)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise TgirUserError("no calibration batches")
    second = next(batches, None)
    head = [first] if second is None else [first, second]
    fold_batchnorms(model.eval(), lambda: model_forward(model, first))  # see tgir.calib.fold: why
    wrappers = prepare(model, cfg)
    try:
        ranges = calibrate(model, wrappers, itertools.chain(head, batches), cfg, model_forward)
        kept: list[tuple[str, float]] = []
        if cfg.keep_sensitive:
            kept = sweep(model, wrappers, head)[:cfg.keep_sensitive]
            names = {name for name, _ in kept}
            for w in wrappers:
                if w.name in names:
                    w.mode = "float"  # exported without Q/DQ
        return ranges, kept
    finally:
        if router is not None:
            model.set_router(tau=router.tau, conditional=router.conditional)
