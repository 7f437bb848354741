"""Graph passes on Q/DQ graphs (tgir.export.cleanup): folding a zero Pad into the quantized Conv
after it and merging equal quantizers of one tensor are exact, reach into If branches, and leave
everything else alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tgir.export.cleanup import fold_pads_into_quantized_convs, merge_duplicate_quantizers

_RNG = np.random.default_rng(0)


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _qdq_conv_nodes(src, tag, stride=2, pads=(0, 0, 0, 0)):
    """``src -> Q -> DQ -> Conv(per-channel int8 weights)``, uint8 activations."""
    return [
        helper.make_node("QuantizeLinear", [src, "xs", "xz"], [f"q{tag}"]),
        helper.make_node("DequantizeLinear", [f"q{tag}", "xs", "xz"], [f"dq{tag}"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], [f"wdq{tag}"], axis=0),
        helper.make_node("Conv", [f"dq{tag}", f"wdq{tag}"], [f"y{tag}"], kernel_shape=[3, 3], strides=[stride] * 2,
                         pads=list(pads)),
    ]


def _inits(fill=0.0):
    return [_init("xs", np.float32(0.02)), _init("xz", np.uint8(128)),
            _init("w", _RNG.integers(-63, 64, (4, 3, 3, 3)).astype(np.int8)),
            _init("ws", np.full(4, 0.01, np.float32)), _init("wz", np.zeros(4, np.int8)),
            _init("pads", np.array([0, 0, 0, 1, 0, 0, 1, 2], np.int64)), _init("fill", np.float32(fill))]


def _model(nodes, inits, outputs=("y0",)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, seed=1):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).normal(size=(1, 3, 8, 8)).astype(np.float32)
    return session.run(None, {"x": x})


def test_zero_pad_folds_into_the_quantized_conv_exactly():
    pad = helper.make_node("Pad", ["x", "pads", "fill"], ["p"], mode="constant")
    model = _model([pad, *_qdq_conv_nodes("p", 0, pads=(1, 0, 0, 0))], _inits())
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert fold_pads_into_quantized_convs(model) == 1
    assert "Pad" not in [n.op_type for n in model.graph.node]
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1 + 0, 0 + 1, 0 + 1, 0 + 2]
    np.testing.assert_array_equal(_run(model)[0], _run(before)[0])


@pytest.mark.parametrize("case", ["nonzero fill", "reflect", "two readers", "no quantizer"])
def test_other_pads_are_left_alone(case):
    pad = helper.make_node("Pad", ["x", "pads", "fill"], ["p"], mode="reflect" if case == "reflect" else "constant")
    nodes = [pad, *_qdq_conv_nodes("p", 0)]
    outputs = ["y0"]
    if case == "two readers":
        nodes.append(helper.make_node("Relu", ["p"], ["r"]))
        outputs.append("r")
    if case == "no quantizer":
        nodes = [pad, helper.make_node("Relu", ["p"], ["y0"])]
    model = _model(nodes, _inits(fill=1.0 if case == "nonzero fill" else 0.0), outputs)
    assert fold_pads_into_quantized_convs(model) == 0
    assert "Pad" in [n.op_type for n in model.graph.node]


def test_equal_quantizers_of_one_tensor_merge_and_others_do_not():
    nodes = [*_qdq_conv_nodes("x", 0, stride=1, pads=(1, 1, 1, 1)),
             helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q_skip"]),  # same parameters
             helper.make_node("DequantizeLinear", ["q_skip", "xs", "xz"], ["dq_skip"]),
             helper.make_node("QuantizeLinear", ["x", "xs2", "xz"], ["q_other"]),  # another scale
             helper.make_node("DequantizeLinear", ["q_other", "xs2", "xz"], ["dq_other"]),
             helper.make_node("Add", ["dq_skip", "dq_other"], ["s"]),
             helper.make_node("ReduceSum", ["y0"], ["t"], keepdims=0)]
    inits = [*_inits(), _init("xs2", np.float32(0.03))]
    model = _model(nodes, inits, ("t", "s"))
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert merge_duplicate_quantizers(model) == 2  # one Q and then its now-equal DQ
    readers = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert readers.count("x") == 2  # the other scale keeps its own
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert add.input[0] == "dq0"
    for a, b in zip(_run(model), _run(before), strict=True):
        np.testing.assert_array_equal(a, b)


def test_passes_reach_into_if_branches():
    pad = helper.make_node("Pad", ["x", "pads", "fill"], ["p"], mode="constant")
    dup = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["qa"]),
           helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["qb"]),
           helper.make_node("DequantizeLinear", ["qa", "xs", "xz"], ["da"]),
           helper.make_node("DequantizeLinear", ["qb", "xs", "xz"], ["db"]),
           helper.make_node("Add", ["da", "db"], ["s"]), helper.make_node("ReduceSum", ["s"], ["y1"], keepdims=0)]
    body = helper.make_graph([pad, *_qdq_conv_nodes("p", 0), helper.make_node("ReduceSum", ["y0"], ["o"], keepdims=0),
                              *dup, helper.make_node("Add", ["o", "y1"], ["out"])], "then", [],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Constant", [], ["out"], value=_init("z", np.float32(0)))], "else",
                              [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Constant", [], ["c"], value=_init("c", np.array(True))),
             helper.make_node("If", ["c"], ["y0"], then_branch=body, else_branch=other)]
    model = _model(nodes, _inits())
    assert fold_pads_into_quantized_convs(model) == 1
    # the unpadded conv input now has the same quantizer as the pair: three Qs and DQs of x become one
    assert merge_duplicate_quantizers(model) == 4
    branch = [n.op_type for a in model.graph.node[1].attribute if a.name == "then_branch" for n in a.g.node]
    assert "Pad" not in branch and branch.count("QuantizeLinear") == 1
    _run(model)  # still a valid graph
