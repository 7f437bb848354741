"""Observers against thresholds worked out by hand on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from tgir.calib.observers import HistogramObserver, MaxObserver, Range, make_observer

from tgir.errors import TgirUserError


def test_max_observer_keeps_running_extremes():
    obs = MaxObserver()
    obs.observe("a", np.array([-3.0, 2.0, 5.0]))
    obs.observe("a", np.array([1.0, -1.0]))
    obs.observe("b", np.array([0.5]))
    assert obs.ranges() == {"a": Range(-3.0, 5.0), "b": Range(0.5, 0.5)}
    assert obs.ranges()["a"].amax == 5.0


def test_percentile_threshold_by_hand():
    # 99 values at 1.0 and one outlier at 100: 4096 signed bins over [-100, 100) fold into 2048 bins
    # of |x| over [0, 100), width 100/2048. The CDF first reaches 0.99 in the bin holding 1.0 (index
    # floor(1.0 / width) = 20); onnxruntime's percentile returns its left edge: 20 * 100 / 2048.
    obs = HistogramObserver("percentile", percentile=99.0)
    obs.observe("t", np.array([1.0] * 99 + [100.0], np.float32))
    got = obs.ranges()["t"]
    assert got.hi == pytest.approx(20 * 100 / 2048) and got.lo == pytest.approx(1.0)  # lo: nothing below 1 seen
    # The same data in two batches, the outlier last: the first bound is 1.0 and 1.0 lands in the top
    # bin [1 - w, 1] (numpy closes the last bin). The bound doubles 1 -> 128 (bins merge pairwise), so
    # that bin becomes [1 - 128/2048, 1) = [0.9375, 1) and the threshold is its left edge, 0.9375.
    obs = HistogramObserver("percentile", percentile=99.0)
    obs.observe("t", np.array([1.0] * 99, np.float32))
    obs.observe("t", np.array([100.0], np.float32))
    assert obs.ranges()["t"].hi == pytest.approx(0.9375)
    obs = HistogramObserver("percentile", percentile=100.0)
    obs.observe("t", np.array([-2.0, 1.0, 4.0], np.float32))
    # The 100th percentile is the top bin of |x| over [0, 4): its left edge, 2047 * 4 / 2048.
    assert obs.ranges()["t"] == Range(-2.0, 2047 * 4 / 2048)


def test_entropy_clips_outliers_but_keeps_the_bulk():
    rng = np.random.default_rng(0)
    uniform = rng.uniform(-1, 1, 200_000).astype(np.float32)
    obs = HistogramObserver("entropy")
    obs.observe("u", uniform)
    # No tail to trade off: the KL-optimal threshold keeps (almost) the whole range.
    assert 0.9 <= obs.ranges()["u"].amax <= 1.0
    gauss = np.concatenate([rng.normal(0, 1, 200_000), [1000.0]]).astype(np.float32)
    obs = HistogramObserver("entropy")
    obs.observe("g", gauss[:100_000])
    obs.observe("g", gauss[100_000:])  # histograms merge across batches
    amax = obs.ranges()["g"].amax
    # Far below the outlier, above the bulk's 2 sigma (the outlier made the bins 1/2 wide, hence the
    # coarse answer: the price of a fixed-size histogram).
    assert 2.0 < amax < 100.0, amax


def test_bad_input():
    with pytest.raises(TgirUserError, match="unknown calibration method 'kl'; valid choices: 'entropy'"):
        make_observer("kl")
    with pytest.raises(TgirUserError, match="NaN or inf"):
        MaxObserver().observe("x", np.array([1.0, np.nan]))
    with pytest.raises(TgirUserError, match="produced no values"):
        make_observer("entropy").observe("x", np.array([]))
    with pytest.raises(TgirUserError, match="percentile must be in"):
        HistogramObserver("percentile", percentile=0)


def test_entropy_is_not_ruled_by_the_zero_spike_of_a_relu_output():
    # A ReLU6 output as the shipped AMC's late depthwise convs see it: 90% exact zeros, the rest
    # spread up to 6. With the zero bin as counted, KL favours the narrowest candidate (0.19 of 6,
    # clipping 8% of the values; it collapsed the model, R@1 71 -> 13).
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(180_000), rng.exponential(1.2, 20_000).clip(0, 6)]).astype(np.float32)
    fixed, bare = HistogramObserver("entropy"), HistogramObserver("entropy", flatten_zero=False)
    for obs in (fixed, bare):
        obs.observe("relu6", x)
    assert bare.ranges()["relu6"].hi < 0.5  # the flaw, reproduced
    hi = fixed.ranges()["relu6"].hi
    assert (x > hi).mean() < 0.01 and hi > 2.0, hi  # clips < 1% of values
    # a long tail is still clipped by the entropy search
    tail = rng.standard_t(3, 100_000).astype(np.float32)
    obs = HistogramObserver("entropy")
    obs.observe("t", tail)
    assert obs.ranges()["t"].amax < 0.5 * np.abs(tail).max()
