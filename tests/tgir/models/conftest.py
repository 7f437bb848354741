"""Helpers shared by the model families' ONNX export tests (ITMA, TIRG), offered as fixtures."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn


class _Stage(nn.Module):
    """One exported stage of a model (``encode_text`` or ``compose``) as a module."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: torch.Tensor):
        return getattr(self.model, self.method)(*args)


def _export_and_check(model: nn.Module, method: str, names: list[str], outputs: list[str], example: tuple,
                     dynamic: dict, cases: list[tuple], path) -> float:
    """Export ``model.<method>`` with the dynamo exporter, run it in onnxruntime on ``cases``
    (other batch sizes and lengths than the example) and compare with torch within 1e-4.
    Returns the export time in seconds."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    stage = _Stage(model, method).eval()
    start = time.perf_counter()
    program = torch.onnx.export(stage, example, dynamo=True, input_names=names, output_names=outputs,
                                dynamic_shapes={"args": tuple(dynamic[n] for n in names)})
    program.save(str(path))
    seconds = time.perf_counter() - start
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == outputs
    for case in cases:
        with torch.no_grad():
            expected = stage(*case)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {n: x.numpy() for n, x in zip(names, case, strict=True)})
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == tuple(e.shape)
            np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=0)
    return seconds


def _text_case(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length  # the longest text fills the padded width, as the vocabulary pads
    ids = torch.randint(4, 20, (batch, length), generator=gen)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return ids, lengths




@pytest.fixture
def export_and_check():
    """``export_and_check(model, method, names, outputs, example, dynamic, cases, path) -> seconds``."""
    return _export_and_check


@pytest.fixture
def text_case():
    """``text_case(batch, length, seed) -> (ids, lengths)``: padded random texts, the first full."""
    return _text_case
