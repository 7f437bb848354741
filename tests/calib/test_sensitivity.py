"""Sensitivity sweep: ranks a layer whose quantization hurts most first, and keep_sensitive leaves
the worst layers in float (no Q/DQ)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tgir.calib.data import CalibBatch
from tgir.calib.qdq import QuantConfig, QuantInput, calibrate, model_forward, prepare, quantize_model
from tgir.calib.sensitivity import sweep

from tgir.errors import TgirUserError
from tgir.models.base import build_model


def _batches(n=3, b=4, seed=0):
    rng = np.random.default_rng(seed)
    return [CalibBatch(rng.normal(size=(b, 3, 64, 64)).astype(np.float32),
                       rng.normal(size=(b, 3, 64, 64)).astype(np.float32),
                       rng.integers(4, 20, (b, 6)).astype(np.int64), np.full(b, 6, np.int64)) for _ in range(n)]


def test_sweep_ranks_a_badly_quantized_layer_first(tiny):
    torch.manual_seed(0)
    model = build_model(tiny("amc")).eval()
    model.set_router(tau=0.0, conditional=False)
    cfg = QuantConfig(flavour="cpu", method="max")
    wrappers = prepare(model, cfg)
    calibrate(model, wrappers, _batches(), cfg, model_forward)
    victim = next(w for w in wrappers if isinstance(w, QuantInput) and w.name.startswith("layers.0.experts.2"))
    scale, zp, qmin, qmax, dtype = victim.act
    victim.act = (scale * 1e-3, zp, qmin, qmax, dtype)  # clips almost everything
    scores = sweep(model, wrappers, _batches(2, seed=1))
    assert scores[0][0] == victim.name and scores[0][1] > 10 * scores[1][1], scores[:3]
    assert len(scores) == len(wrappers) and all(s >= -1e-6 for _, s in scores)
    assert all(w.mode == "quant" for w in wrappers)  # left as found


def test_keep_sensitive_leaves_the_worst_layers_in_float(tiny):
    torch.manual_seed(0)
    model = build_model(tiny("amc"))
    _, kept = quantize_model(model, _batches(), QuantConfig(flavour="cpu", method="max", keep_sensitive=3))
    assert len(kept) == 3 and kept[0][1] >= kept[1][1] >= kept[2][1]
    modes = {m.name: m.mode for m in model.modules() if hasattr(m, "observed")}
    assert {n for n, _ in kept} == {n for n, mode in modes.items() if mode == "float"}
    assert model.config.router.tau == build_model(tiny("amc")).config.router.tau  # router restored
    with pytest.raises(TgirUserError, match="keep_sensitive must be >= 0"):
        QuantConfig(keep_sensitive=-1)
