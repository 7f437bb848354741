"""What the INT8 Q/DQ image encoder looks like to ONNX Runtime: every conv of the trunk runs as a
QLinearConv and every residual add as a QLinearAdd (TF-"same" Pads folded into the quantized convs,
the residual stream's duplicate quantizers merged), and the rewritten graph computes exactly what
PyTorch simulated."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tgir.calib.fold import fold_batchnorms
from tgir.calib.qdq import QuantAdd, QuantConfig, calibrate, prepare
from tgir.export.onnx import OnnxConfig, onnx_from_model

from tgir.models.base import build_model
from tgir.models.config import BackboneConfig
from tgir.vocab import Vocabulary


def _ort_ops(path, tmp_path) -> collections.Counter:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


@pytest.mark.parametrize(("backbone", "level"), [("efficientnet_lite0", 16), ("resnet18", 32)])
def test_int8_image_encoder_is_quantized_end_to_end_on_ort(tiny, tmp_path, backbone, level):
    vocab = Vocabulary.build(["make it red", "add a blue circle"])
    cfg = tiny("amc", backbone=BackboneConfig(backbone, levels=(level,), weights="none"))
    cfg = cfg.replace(text=cfg.text.__class__(**{**cfg.text.__dict__, "vocab_size": len(vocab)}))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(4, 3, 64, 64, generator=g) for _ in range(3)]
    fold_batchnorms(model, lambda: model.encode_image(images[0]))
    qcfg = QuantConfig(flavour="cpu", method="max", keep=("*router*", "text*", "layers*"))
    wrappers = prepare(model, qcfg)
    adds = sum(isinstance(w, QuantAdd) for w in wrappers)
    assert adds == (6 if backbone == "efficientnet_lite0" else 8)  # residual blocks up to the level
    calibrate(model, wrappers, images, qcfg, lambda m, x: m.encode_image(x))
    manifest = onnx_from_model(model, vocab, tmp_path / "b", OnnxConfig(tau=0.4, max_batch=4, text_length=8),
                               precision="int8")
    path = tmp_path / "b" / manifest.graphs["image_encoder"]["file"]
    graph = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    assert ops["Pad"] == 0, ops  # folded into the quantized convs
    # one quantizer per tensor: the skip input shares its block's first-conv quantizer
    quantized = [n.input[0] for n in graph.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) == len(set(quantized)), collections.Counter(quantized).most_common(3)
    fused = _ort_ops(path, tmp_path)
    convs = ops["Conv"]
    # Everything but the projection to the embedding (a float output) runs in int8.
    assert fused["QLinearConv"] == convs - 1 and fused["Conv"] + fused["FusedConv"] == 1, fused
    assert fused["QLinearAdd"] == adds, fused
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        want = [t.numpy() for t in model.encode_image(x)]
    exact = ort.SessionOptions()
    exact.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the Q/DQ semantics
    got = ort.InferenceSession(str(path), exact, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    # PyTorch's decomposed quantize multiplies by 1/scale where QuantizeLinear divides, and sums in
    # another order: a value on a rounding boundary at one of the ~30 quantizers can land one step
    # away, and the step propagates (measured 1-2% on ResNet-18, 0 on Lite0). A wrong pad or a merged
    # quantizer with other parameters gives tens of percent. The passes' exactness is tested on their
    # own in tests/export/test_qdq_passes.py.
    for a, b in zip(got, want, strict=True):
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert rel < 0.05, rel
