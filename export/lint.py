"""TensorRT operator lint: will the ONNX-TensorRT parser take this graph?

Walks every node, including those inside ``If``/``Loop``/``Scan`` bodies, against the parser's
operator table for a stated TensorRT version (``trt_operators_<version>.json``, data transcribed from
onnx-tensorrt's ``docs/operators.md``; its ``source`` field says where from). Besides "is the
operator supported", it checks what TensorRT's ``IIfConditional`` needs from our router: a 0-D
boolean condition, branches whose outputs agree in count, dtype, rank and static shape and carry
distinct names; plus the tensor dtypes TensorRT rejects and the constant inputs some operators
require. Every finding names the node, where it sits and why.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import onnx
from onnx import TensorProto

from tgir.errors import TgirUserError

DEFAULT_TENSORRT = "10.15"
DEFAULT_DOMAINS = ("", "ai.onnx")
# ONNX element type -> the short names the operator table uses.
_SHORT = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
          TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.INT8: "INT8",
          TensorProto.UINT8: "UINT8", TensorProto.BOOL: "BOOL", TensorProto.DOUBLE: "DOUBLE",
          TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.INT4: "INT4", TensorProto.FLOAT4E2M1: "FP4"}
_REJECTED = {TensorProto.STRING, TensorProto.INT16, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
             TensorProto.COMPLEX64, TensorProto.COMPLEX128, TensorProto.UINT4}
# Operators whose listed input must be a build-time constant (restrictions column of the table).
_CONSTANT_INPUTS = {**{op: (1, "axes") for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                                                   "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
                                                   "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze")},
                    "TopK": (1, "K"), "CumSum": (1, "axis"), "OneHot": (1, "depth")}


@dataclass(frozen=True)
class LintIssue:
    """One finding: ``where`` is the node's path (``If 'n1' then_branch > ...``)."""

    where: str
    node: str
    op: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}{' > ' if self.where else ''}{self.op} {self.node!r}: {self.why}"


@cache
def operator_table(version: str = DEFAULT_TENSORRT) -> dict:
    """The ONNX-TensorRT parser's operator table for ``version`` (fields: tensorrt, opset_min,
    opset_max, source, operators)."""
    path = Path(__file__).with_name(f"trt_operators_{version.replace('.', '_')}.json")
    if not path.is_file():
        known = sorted(p.stem.removeprefix("trt_operators_").replace("_", ".")
                       for p in Path(__file__).parent.glob("trt_operators_*.json"))
        raise TgirUserError(f"no TensorRT operator table for {version!r}; valid choices: {', '.join(known)}")
    return json.loads(path.read_text())


@dataclass
class _Tensor:
    elem_type: int
    dims: list | None  # ints (static), strings (symbolic) or None (unknown); None = rank unknown


def _tensor_of(value: onnx.ValueInfoProto) -> _Tensor:
    t = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim] \
        if t.HasField("shape") else None
    return _Tensor(t.elem_type, dims)


class _Scope:
    """Names visible in one graph (and its parents): tensor types and which tensors are constants."""

    def __init__(self, graph: onnx.GraphProto, parent: _Scope | None = None) -> None:
        self.parent = parent
        self.tensors: dict[str, _Tensor] = {}
        self.constants: set[str] = set()
        for v in [*graph.input, *graph.output, *graph.value_info]:
            self.tensors[v.name] = _tensor_of(v)
        for init in graph.initializer:
            self.tensors[init.name] = _Tensor(init.data_type, list(init.dims))
            self.constants.add(init.name)
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants.update(node.output)

    def tensor(self, name: str) -> _Tensor | None:
        return self.tensors.get(name) or (self.parent.tensor(name) if self.parent else None)

    def is_constant(self, name: str) -> bool:
        return name in self.constants or bool(self.parent and self.parent.is_constant(name))


def lint_model(model: onnx.ModelProto, tensorrt: str = DEFAULT_TENSORRT) -> list[LintIssue]:
    """Every reason the ONNX-TensorRT parser of ``tensorrt`` would reject ``model`` (empty = none)."""
    table = operator_table(tensorrt)
    issues = []
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    if opset is None or not table["opset_min"] <= opset <= table["opset_max"]:
        issues.append(LintIssue("", "", "model", f"opset {opset} outside TensorRT {table['tensorrt']}'s "
                                f"{table['opset_min']}..{table['opset_max']}"))
    with contextlib.suppress(onnx.shape_inference.InferenceError):  # the checker reports it; lint what we have
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    functions = {(f.domain, f.name) for f in model.functions}
    io = {v.name for v in [*model.graph.input, *model.graph.output]}
    _lint_graph(model.graph, _Scope(model.graph), "", table, functions, io, issues)
    return issues


def _lint_graph(graph: onnx.GraphProto, scope: _Scope, where: str, table: dict, functions: set, io: set,
                issues: list[LintIssue]) -> None:
    for name, t in scope.tensors.items():
        if t.elem_type in _REJECTED or (t.elem_type == TensorProto.UINT8 and name not in io):
            why = "UINT8 only as a network input or output" if t.elem_type == TensorProto.UINT8 else \
                "dtype TensorRT does not support"
            issues.append(LintIssue(where, name, "tensor", f"{TensorProto.DataType.Name(t.elem_type)}: {why}"))
    for node in graph.node:
        issues.extend(_lint_node(node, scope, where, table, functions))
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                sub = f"{where}{' > ' if where else ''}{node.op_type} {node.name!r} {attr.name}"
                _lint_graph(attr.g, _Scope(attr.g, scope), sub, table, functions, io, issues)
        if node.op_type == "If":
            issues.extend(_lint_if(node, scope, where))


def _lint_node(node: onnx.NodeProto, scope: _Scope, where: str, table: dict, functions: set) -> list[LintIssue]:
    def issue(why: str) -> LintIssue:
        return LintIssue(where, node.name, node.op_type, why)

    if node.domain not in DEFAULT_DOMAINS:
        if (node.domain, node.op_type) in functions:
            return []  # a model-local function: the parser inlines it (its body is checked by the checker)
        return [issue(f"custom operator of domain {node.domain!r}: TensorRT needs a plugin for it")]
    entry = table["operators"].get(node.op_type)
    if entry is None or not entry["supported"]:
        return [issue(f"not supported by the ONNX-TensorRT parser of TensorRT {table['tensorrt']}")]
    found = []
    first = next((n for n in node.input if n), None) or (node.output[0] if node.output else None)
    t = scope.tensor(first) if first else None
    if t is not None and t.elem_type in _SHORT and _SHORT[t.elem_type] not in entry.get("types", []):
        found.append(issue(f"{_SHORT[t.elem_type]} input not supported (supported: {', '.join(entry['types'])})"))
    if node.op_type in _CONSTANT_INPUTS:
        index, what = _CONSTANT_INPUTS[node.op_type]
        if len(node.input) > index and node.input[index] and not scope.is_constant(node.input[index]):
            found.append(issue(f"input {what!r} must be a build-time constant"))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "LSTM" and (attrs.get("layout", 0) or attrs.get("input_forget", 0)):
        found.append(issue("LSTM needs layout=0 and input_forget=0"))
    if node.op_type == "TopK" and attrs.get("sorted", 1) != 1:
        found.append(issue("TopK needs sorted=1"))
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2] and not scope.is_constant(node.input[2]):
        found.append(issue("Dropout's training_mode must be a constant False"))
    if node.op_type == "LayerNormalization" and any(node.output[1:]):
        found.append(issue("only LayerNormalization's first output is supported"))
    return found


def _lint_if(node: onnx.NodeProto, scope: _Scope, where: str) -> list[LintIssue]:
    """What TensorRT's IIfConditional needs: a 0-D bool condition and branches that agree."""
    def issue(why: str) -> LintIssue:
        return LintIssue(where, node.name, "If", why)

    found = []
    cond = scope.tensor(node.input[0])
    if cond is None or cond.dims is None:
        found.append(issue(f"condition {node.input[0]!r} has unknown type or shape; TensorRT needs a 0-D bool"))
    elif cond.elem_type != TensorProto.BOOL or cond.dims:
        found.append(issue(f"condition {node.input[0]!r} is {_SHORT.get(cond.elem_type, cond.elem_type)}"
                           f"{cond.dims}; TensorRT needs a 0-D bool"))
    branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    then, other = branches["then_branch"], branches["else_branch"]
    if len(then.output) != len(other.output):
        return [*found, issue(f"branches yield {len(then.output)} vs {len(other.output)} outputs")]
    for i, (a, b) in enumerate(zip(then.output, other.output, strict=True)):
        ta, tb = _Scope(then, scope).tensor(a.name), _Scope(other, scope).tensor(b.name)
        if a.name == b.name:
            found.append(issue(f"output {i}: both branches name it {a.name!r}; TensorRT needs distinct names"))
        if ta is None or tb is None:
            continue
        if ta.elem_type != tb.elem_type:
            found.append(issue(f"output {i}: dtypes differ ({TensorProto.DataType.Name(ta.elem_type)} vs "
                               f"{TensorProto.DataType.Name(tb.elem_type)})"))
        if ta.dims is not None and tb.dims is not None and (
                len(ta.dims) != len(tb.dims) or any(isinstance(x, int) and isinstance(y, int) and x != y
                                                    for x, y in zip(ta.dims, tb.dims, strict=True))):
            found.append(issue(f"output {i}: shapes differ ({ta.dims} vs {tb.dims})"))
    seen = [o.name for o in then.output]
    if len(set(seen)) != len(seen):
        found.append(issue("a branch yields the same tensor twice; TensorRT needs distinct outputs"))
    return found
