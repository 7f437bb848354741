"""TensorRT operator lint: hand-built graphs it must reject (and name why), and clean ones it passes."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper
from tgir.export.lint import lint_model, operator_table

from tgir.errors import TgirUserError

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _vi(name, dtype=F, shape=(2, 3)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _branch(name, out_shape, op="Relu", dtype=F):
    node = helper.make_node(op, ["x"], [f"{name}_out"], name=f"{name}_node")
    return helper.make_graph([node], name, [], [_vi(f"{name}_out", dtype, out_shape)])


def _if_model(then, other, cond_shape=()):
    nodes = [helper.make_node("If", ["cond"], ["y"], name="router_if", then_branch=then, else_branch=other)]
    return _model(nodes, [_vi("cond", TensorProto.BOOL, cond_shape), _vi("x")], [_vi("y")])


def _whys(model):
    return [str(i) for i in lint_model(model)]


def test_table_is_data_with_a_source():
    table = operator_table()
    assert table["tensorrt"] == "10.15" and "onnx-tensorrt" in table["source"]
    assert table["operators"]["If"]["supported"] and not table["operators"]["Unique"]["supported"]
    with pytest.raises(TgirUserError, match=r"valid choices: 10\.15"):
        operator_table("7.0")


def test_clean_graph_passes():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r", "axes"], ["y"], name="mean", keepdims=0)]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    assert _whys(_model(nodes, [_vi("x")], [_vi("y", shape=(2,))], [axes])) == []
    assert _whys(_if_model(_branch("then", (2, 3)), _branch("else", (2, 3), op="Sigmoid"))) == []


def test_unsupported_op_is_named():
    nodes = [helper.make_node("BitShift", ["x", "x"], ["y"], name="shifty", direction="LEFT")]
    whys = _whys(_model(nodes, [_vi("x", TensorProto.UINT8)], [_vi("y", TensorProto.UINT8)]))
    assert len(whys) == 1 and "BitShift 'shifty'" in whys[0] and "not supported" in whys[0]


def test_unsupported_op_inside_a_branch_is_found():
    then = helper.make_graph([helper.make_node("Det", ["x"], ["d"], name="det_node")], "then", [],
                             [_vi("d", shape=(2, 3))])
    whys = _whys(_if_model(then, _branch("else", (2, 3))))
    assert len(whys) == 1 and "If 'router_if' then_branch > Det 'det_node'" in whys[0]


def test_mismatched_branch_shapes_and_dtypes():
    whys = _whys(_if_model(_branch("then", (2, 3)), _branch("else", (2, 4))))
    assert any("shapes differ ([2, 3] vs [2, 4])" in w for w in whys), whys
    whys = _whys(_if_model(_branch("then", (2, 3)), _branch("else", (2, 3, 1))))
    assert any("shapes differ" in w for w in whys), whys
    cast = helper.make_graph([helper.make_node("Cast", ["x"], ["c"], name="cast", to=TensorProto.FLOAT16)],
                             "else", [], [_vi("c", TensorProto.FLOAT16)])
    whys = _whys(_if_model(_branch("then", (2, 3)), cast))
    assert any("dtypes differ (FLOAT vs FLOAT16)" in w for w in whys), whys


def test_if_condition_must_be_a_0d_bool():
    whys = _whys(_if_model(_branch("then", (2, 3)), _branch("else", (2, 3)), cond_shape=(1,)))
    assert any("condition 'cond'" in w and "0-D bool" in w for w in whys), whys


def test_branch_outputs_need_distinct_names():
    whys = _whys(_if_model(_branch("same", (2, 3)), _branch("same", (2, 3))))
    assert any("distinct names" in w for w in whys), whys


def test_custom_ops_dtypes_constants_and_opset():
    custom = helper.make_node("Fancy", ["x"], ["y"], name="fancy", domain="com.example")
    assert "plugin" in _whys(_model([custom], [_vi("x")], [_vi("y")]))[0]
    assert any("STRING" in w for w in _whys(_model([helper.make_node("Identity", ["x"], ["y"], name="id")],
                                                   [_vi("x", TensorProto.STRING)], [_vi("y", TensorProto.STRING)])))
    reduce = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=0)
    whys = _whys(_model([reduce], [_vi("x"), _vi("axes", TensorProto.INT64, (1,))], [_vi("y", shape=(2,))]))
    assert any("'axes' must be a build-time constant" in w for w in whys), whys
    whys = _whys(_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x")], [_vi("y")], opset=8))
    assert any("opset 8 outside" in w for w in whys), whys


def test_type_support_is_checked():
    node = helper.make_node("Sqrt", ["x"], ["y"], name="root")
    whys = _whys(_model([node], [_vi("x", TensorProto.INT32)], [_vi("y", TensorProto.INT32)]))
    assert any("INT32 input not supported" in w for w in whys), whys


def test_hygiene_finds_dead_unfolded_and_training_nodes():
    from tgir.export.check import hygiene

    c = helper.make_tensor("c", F, [2, 3], [1.0] * 6)
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="live"),
             helper.make_node("Sigmoid", ["x"], ["unused"], name="dead"),
             helper.make_node("Neg", ["c"], ["folded"], name="foldable"),
             helper.make_node("Add", ["y", "folded"], ["z"], name="add"),
             helper.make_node("Dropout", ["z"], ["out"], name="drop")]
    facts = hygiene(_model(nodes, [_vi("x")], [_vi("out")], [c]))
    assert facts == {"dead_nodes": ["dead"], "unfolded_constants": ["foldable"], "training_ops": ["drop"]}
