"""Activation observers: from the values a tensor takes on calibration data to a quantization range.

Three methods, one interface (``observe(name, values)`` then ``ranges()``):

- ``max``: the observed minimum and maximum (ours: there is no math to borrow).
- ``percentile``: the range holding ``percentile`` % of the values (e.g. 99.99), and
- ``entropy``: the threshold minimising the KL divergence between the float histogram and its
  128-level quantised version (the TensorRT entropy calibrator's algorithm).

The histogram math of the last two is onnxruntime.quantization's ``HistogramCollector`` (a
maintained implementation of both); we only feed it. We collect the values ourselves (from PyTorch,
see ``tgir.calib``), because onnxruntime's and ModelOpt's ONNX calibrators cannot see tensors inside
the ``If`` branches that hold AMC's experts (notes/feasibility.md).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from onnxruntime.quantization.calibrate import HistogramCollector

from tgir.errors import TgirUserError, unknown_choice

METHODS = ("entropy", "percentile", "max")


@dataclass(frozen=True)
class Range:
    """A tensor's calibrated range (``lo <= 0 <= hi`` is not assumed)."""

    lo: float
    hi: float

    @property
    def amax(self) -> float:
        """The symmetric bound: what INT8 symmetric (TensorRT) quantisation uses, scale = amax / 127."""
        return max(abs(self.lo), abs(self.hi))


class Observer(Protocol):
    method: str

    def observe(self, name: str, values: np.ndarray) -> None: ...

    def ranges(self) -> dict[str, Range]: ...


class MaxObserver:
    """Running minimum and maximum per tensor."""

    method = "max"

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, float]] = {}

    def observe(self, name: str, values: np.ndarray) -> None:
        values = _finite(name, values)
        lo, hi = float(values.min()), float(values.max())
        old = self._seen.get(name)
        self._seen[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    def ranges(self) -> dict[str, Range]:
        return {name: Range(lo, hi) for name, (lo, hi) in self._seen.items()}


class _Histogram:
    """A signed histogram of a fixed number of bins over ``[-bound, bound)``. When a value beyond the
    bound arrives, the bound doubles and pairs of bins merge (edges stay aligned, so this is exact):
    memory stays fixed and no batch is ever seen twice."""

    def __init__(self, bins: int) -> None:
        self.counts = np.zeros(bins, np.int64)
        self.bound = 0.0
        self.lo, self.hi = np.inf, -np.inf

    def add(self, values: np.ndarray) -> None:
        self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))
        amax = max(abs(self.lo), abs(self.hi))
        if self.bound == 0.0:
            self.bound = amax if amax > 0 else 1e-8
        while amax > self.bound:
            n = len(self.counts)
            merged = self.counts.reshape(-1, 2).sum(axis=1)  # [n/2]: the old range at half resolution
            self.counts = np.zeros(n, np.int64)
            self.counts[n // 4: n // 4 + n // 2] = merged
            self.bound *= 2
        counts, _ = np.histogram(values, bins=len(self.counts), range=(-self.bound, self.bound))
        self.counts += counts

    def signed(self, flatten_zero: bool = False) -> tuple:
        """onnxruntime's entry for the entropy method: (hist, edges, min, max, threshold); with
        ``flatten_zero`` the bin holding 0 gets the count of the bin above it."""
        edges = np.linspace(-self.bound, self.bound, len(self.counts) + 1, dtype=np.float32)
        counts = self.counts
        if flatten_zero:
            counts = counts.copy()
            zero = len(counts) // 2  # [0, w): np.histogram puts exact zeros here
            counts[zero] = counts[zero + 1]
        return (counts, edges, np.float32(self.lo), np.float32(self.hi), np.float32(self.bound))

    def absolute(self) -> tuple:
        """onnxruntime's entry for the symmetric percentile method: a histogram of |x| over [0, bound)."""
        half = len(self.counts) // 2
        folded = self.counts[half:] + self.counts[:half][::-1]  # [n/2]: bin k holds |x| in [k w, (k+1) w)
        edges = np.linspace(0, self.bound, half + 1, dtype=np.float32)
        return (folded, edges, np.float32(self.lo), np.float32(self.hi))


class HistogramObserver:
    """Percentile or entropy thresholds, the math being onnxruntime's ``HistogramCollector``.

    We keep the histograms (``_Histogram``: fixed size, exact re-binning) and hand them to the
    collector only to compute thresholds: its own merge grows the bin count with every larger value
    (one outlier can make it millions of bins and its entropy search quadratic in them).

    Args:
        method: ``"percentile"`` or ``"entropy"``.
        percentile: Share of |values| kept (percentile method), e.g. 99.99.
        bins: Histogram bins over ``[-bound, bound)``.
        quantized_bins: Levels of the quantised histogram in the entropy search (128: INT8).
        flatten_zero: Entropy only: give the bin that holds exact zeros its neighbour's count before
            the search, as NVIDIA's pytorch-quantization entropy calibrator does (``bins[0] =
            bins[1]``). After a ReLU (and zero padding) most values are exactly 0; every candidate
            threshold wide enough to merge histogram bins spreads that spike over its quantised
            bin and pays a large divergence for it, so the search settles on its narrowest
            candidate whatever it clips. Measured on the shipped AMC: two depthwise-conv inputs
            (90% zeros, values up to 6) got 0.19 and R@1 fell from 71.5 to 12.8.
    """

    def __init__(self, method: str, percentile: float = 99.99, bins: int = 4096, quantized_bins: int = 128,
                 flatten_zero: bool = True) -> None:
        if method not in ("percentile", "entropy"):
            raise unknown_choice("histogram method", method, ("percentile", "entropy"))
        if not 0 < percentile <= 100:
            raise TgirUserError(f"percentile must be in (0, 100], got {percentile}")
        if bins < 512 or bins % 4:
            raise TgirUserError(f"bins must be a multiple of 4 and >= 512, got {bins}")
        self.method, self.percentile, self.bins, self.quantized_bins = method, percentile, bins, quantized_bins
        self.flatten_zero = flatten_zero
        self._hists: dict[str, _Histogram] = {}

    def observe(self, name: str, values: np.ndarray) -> None:
        values = _finite(name, values).astype(np.float32, copy=False)
        self._hists.setdefault(name, _Histogram(self.bins)).add(values)

    def ranges(self) -> dict[str, Range]:
        if not self._hists:
            return {}
        collector = HistogramCollector(self.method, symmetric=True, num_bins=self.bins,
                                       num_quantized_bins=self.quantized_bins, percentile=self.percentile,
                                       scenario="same")
        for name, hist in self._hists.items():
            collector.histogram_dict[name] = (hist.signed(self.flatten_zero) if self.method == "entropy"
                                              else hist.absolute())
        with contextlib.redirect_stdout(io.StringIO()):  # the collector prints progress lines
            thresholds = collector.compute_collection_result()
        out = {}
        for name, hist in self._hists.items():
            t = float(abs(thresholds[name][1]))  # (-t, t, ...): a symmetric threshold
            out[name] = Range(max(hist.lo, -t), min(hist.hi, t))  # never wider than what was seen
        return out


def make_observer(method: str, percentile: float = 99.99) -> Observer:
    """An observer for ``method`` (one of ``METHODS``)."""
    if method == "max":
        return MaxObserver()
    if method in ("percentile", "entropy"):
        return HistogramObserver(method, percentile=percentile)
    raise unknown_choice("calibration method", method, METHODS)


def _finite(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values).ravel()
    if values.size == 0:
        raise TgirUserError(f"calibration: tensor {name!r} produced no values")
    if not np.isfinite(values).all():
        raise TgirUserError(f"calibration: tensor {name!r} holds NaN or inf on the calibration data")
    return values
