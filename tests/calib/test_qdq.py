"""Q/DQ in PyTorch: calibrated, exported with QuantizeLinear/DequantizeLinear inside the experts'
If branches, run by ONNX Runtime within a stated error of FP32."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tgir.calib.qdq import QuantConfig, calibrate, prepare, set_mode
from tgir.export.graphs import ComposerGraph

from tgir.errors import TgirUserError
from tgir.models.base import build_model


def _batches(n=3, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 3, 64, 64, generator=g), torch.randint(4, 20, (b, 6), generator=g),
             torch.full((b,), 6, dtype=torch.int64)) for _ in range(n)]


def _forward(model, batch):
    images, ids, lengths = batch
    _, tokens = model.encode_image(images)
    (text,) = model.encode_text(ids, lengths)
    return model.compose(tokens, text)


def _branch_ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for node in model.graph.node if node.op_type == "If" for a in node.attribute
            for n in a.g.node]


@pytest.mark.parametrize(("flavour", "tau"), [("tensorrt", 0.3), ("cpu", 0.3), ("cpu", 0.0)])
def test_qdq_inside_if_branches_runs_on_ort(tiny, tmp_path, flavour, tau):
    torch.manual_seed(0)
    model = build_model(tiny("amc")).eval()
    model.set_router(tau=0.0, conditional=False)  # calibrate with every expert running
    batch = _batches(1, b=3, seed=9)[0]
    with torch.no_grad():
        want = _forward(model, batch)
    wrappers = prepare(model, QuantConfig(flavour=flavour, method="max"))
    names = {w.name for w in wrappers}
    assert not any(n.endswith("router.net.3") for n in names)  # the gate logits stay float by default
    assert "backbone.conv1" not in names and "backbone.layer1.0.conv1" in names  # so does the stem alone
    assert any(n.endswith("router.net.0") for n in names)
    ranges = calibrate(model, wrappers, _batches(), QuantConfig(flavour=flavour, method="max"), _forward)
    assert {n for w in wrappers for n in w.observed()} == set(ranges)
    model.set_router(tau=tau, conditional=tau > 0)  # tau 0: no If, ORT fuses Q/DQ into integer kernels
    with torch.no_grad():
        _, tokens = model.encode_image(batch[0])
        (text,) = model.encode_text(batch[1], batch[2])
        fake = model.compose(tokens, text)
    path = tmp_path / "composer.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch_dim = torch.export.Dim("batch", min=1, max=8)
        torch.onnx.export(ComposerGraph(model), (tokens, text), dynamo=True, input_names=["tokens", "text_features"],
                          output_names=["query"], dynamic_shapes=({0: batch_dim}, {0: batch_dim})).save(str(path))
    graph = onnx.load(str(path))
    ops = _branch_ops(graph) if tau > 0 else [n.op_type for n in graph.graph.node]
    assert ("If" in {n.op_type for n in graph.graph.node}) == (tau > 0)
    assert ops.count("QuantizeLinear") >= 4 and "DequantizeLinear" in ops, ops
    opts = ort.SessionOptions()
    if flavour == "tensorrt":
        # ORT's fused int8 x int8 CPU kernels on AVX2 are not exact (TensorRT, the target, is): check
        # the Q/DQ semantics with ORT's reference kernels. The cpu flavour must hold fused as deployed.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": tokens.numpy(), "text_features": text.numpy()})[0]
    np.testing.assert_allclose(got, fake.numpy(), atol=1e-4)  # ORT runs exactly what PyTorch simulated
    cos = (got * want.numpy()).sum(-1)  # both L2-normalised
    assert cos.min() > 0.97, cos  # INT8 vs FP32 on a random tiny model: stated bound


def test_prepare_refusals(tiny):
    model = build_model(tiny("amc"))
    prepare(model, QuantConfig())
    with pytest.raises(TgirUserError, match="already prepared"):
        prepare(model, QuantConfig())
    with pytest.raises(TgirUserError, match="nothing to quantize"):
        prepare(build_model(tiny("amc")), QuantConfig(keep=("*",)))
    with pytest.raises(TgirUserError, match="unknown quantization flavour 'gpu'"):
        QuantConfig(flavour="gpu")
    for bad in (150, 0, -1):  # refused with the config, before any calibration
        with pytest.raises(TgirUserError, match=r"percentile must be in \(0, 100\]"):
            QuantConfig(method="percentile", percentile=bad)
    fresh = build_model(tiny("amc"))
    wrappers = prepare(fresh, QuantConfig())
    set_mode(wrappers, "float")
    with pytest.raises(TgirUserError, match="calibration never reached"):
        calibrate(fresh, wrappers, [], QuantConfig(method="max"), _forward)
