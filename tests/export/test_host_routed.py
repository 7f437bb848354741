"""Host-routed AMC composer: per-layer router and per-expert graphs give the model's query and run
only the experts some sample needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tgir.export.host_routed import HostRoutedComposer, host_routed_from_model

from tgir.errors import TgirUserError
from tgir.models.base import build_model


@pytest.mark.parametrize("residual", [False, True], ids=["paper", "residual"])
def test_host_routed_equals_the_model_and_skips(tiny, tmp_path, residual):
    torch.manual_seed(0)
    model = build_model(tiny("amc")).eval()
    model.set_router(tau=0.5, conditional=False, residual=residual)
    spec = host_routed_from_model(model, tmp_path, max_batch=8)
    assert spec["residual"] is residual
    assert [sorted(layer["experts"]) for layer in spec["layers"]] == [["crn", "gtn", "nin"]] * 2
    host = HostRoutedComposer(tmp_path, spec)
    g = torch.Generator().manual_seed(1)
    for batch in (1, 3):
        tokens, text = torch.randn(batch, 4, 32, generator=g), torch.randn(batch, 32, generator=g)
        with torch.no_grad():
            want, _, gates = model.compose_with_gates(tokens, text)
        got = host(tokens.numpy(), text.numpy())
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
        if batch == 1:  # an expert runs exactly when its effective gate is non-zero
            ran = np.stack([(gate[0] > 0).numpy() for gate in gates]).astype(np.int64)
            np.testing.assert_array_equal(host.executed, ran)
            assert ran.sum() < ran.size, "tau 0.5 should skip some expert of a random model"
    with pytest.raises(TgirUserError, match="AMC only"):
        host_routed_from_model(build_model(tiny("tirg")), tmp_path / "t")
