"""fp32 bundle -> FP16 (mixed precision) bundle, for ONNX Runtime CUDA and TensorRT 11.

TensorRT 11 removed the FP16/BF16/INT8 builder flags: a network runs in the precision its ONNX
graph states (strong typing). This pass states it: every float node computes in float16 except
where float16 loses the answer (``Fp16Config``), with a ``Cast`` wherever the two meet, inside the
AMC experts' ``If`` branches too, both branches of every ``If`` ending in one dtype (TensorRT's
``IIfConditional`` requires it) and the graph I/O left float32, so the manifest's contract holds.

Why our own pass (both libraries tried on the AMC composer, November 2026):
- nvidia-modelopt 0.47 ``modelopt.onnx.autocast``: its ``[onnx]`` extra pins onnx~=1.21 and
  onnxruntime-gpu~=1.24 and pulls cupy (it would replace our onnx and onnxruntime). Its sanitizer
  copies shared constants as ``<name>_2``... without looking inside subgraphs, so the copies
  collide with the exporter's branch tensor names ("'val_9_2' has been used as output names
  multiple times"). With the names made unique it keeps every branch node that reads an
  outer-scope activation in fp32 (the experts are not converted) and leaves then/else outputs in
  different dtypes, which ONNX Runtime and our TensorRT lint reject.
- onnxconverter-common 1.16 ``convert_float_to_float16``: blocked nodes inside a branch get fp32
  inputs but fp16 outer-scope weights (LayerNormalization type error); branch nodes read the
  keep_io_types input Casts, which are not defined before the ``If`` (graph not topologically
  sorted); ``Cast(to=FLOAT)`` outputs are retyped to fp16 without changing ``to`` (text encoder).
  Neither the composer nor the text encoder passed onnx.checker.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

import tgir
from tgir.errors import TgirInternalError, TgirUserError
from tgir.manifest import Manifest, sha256, staged_bundle

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)
# Kept in fp32, and why:
# - LayerNormalization: its input is the residual sum, the largest activations of the model, and it
#   squares them; TensorRT itself warns that LayerNorm in fp16 may overflow and advises fp32.
# - Softmax: the normalising sum runs over every key and probabilities below 6e-8 flush to zero in
#   fp16; attention weights are exactly such sums of small terms.
# - ReduceMean/ReduceSum/ReduceL2/ReduceSumSquare/ReduceLogSumExp: sums over many elements
#   (pooling, the output L2 norm) overflow (a sum of squares above 65504) or round off in fp16.
# - Div: the output L2-normalise divides by a norm clipped at 1e-12 (zero in fp16) and attention
#   divides its logits; small divisors overflow fp16 quotients.
# - Pow/Sqrt/Exp/Log: range: squares and exponentials overflow, logs of underflowed values are -inf.
DEFAULT_KEEP_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceL2", "ReduceSumSquare",
                    "ReduceLogSumExp", "Div", "Pow", "Sqrt", "Exp", "Log")
# Data movement and cheap elementwise ops: computed in the precision their inputs arrive in, so a
# Clip between two kept nodes (the L2-normalise's eps) or a gate compare stays fp32 instead of
# bouncing through two Casts and losing digits; with an fp16 input among them they run in fp16.
FOLLOW_OPS = frozenset({
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Gather", "GatherElements",
    "GatherND", "Slice", "Concat", "Split", "Tile", "Pad", "Where", "Clip", "Relu", "LeakyRelu", "Sigmoid", "Tanh",
    "HardSigmoid", "HardSwish", "Neg", "Abs", "Add", "Sub", "Mul", "Max", "Min", "Greater", "GreaterOrEqual", "Less",
    "LessOrEqual", "Equal", "ReduceMax", "ReduceMin", "Sign", "Floor", "Ceil", "Round", "Cast"})
FIXED_INPUTS = {"Resize": (1, 2)}  # roi and scales: float32 whatever the data is
ANY_INPUT = frozenset({"Cast", "Shape", "Size"})  # take any dtype: no Cast in front
SCOPES = "pkg.torch.onnx.name_scopes"  # the torch module paths the dynamo exporter records per node


@dataclass(frozen=True)
class Fp16Config:
    """What stays fp32.

    Attributes:
        keep_ops: Op types computed in fp32 (see ``DEFAULT_KEEP_OPS`` for why each is there).
        keep_modules: fnmatch patterns on node names and on the torch module paths the exporter
            records; matching nodes stay fp32. The router stays fp32 by default: its gates are
            compared with tau and decide which experts run (as in ``QuantConfig.keep``).
        keep_io_types: Graph inputs and outputs stay float32 (the manifest's contract does not
            change); False makes them float16 and the manifest says so.
    """

    keep_ops: tuple[str, ...] = DEFAULT_KEEP_OPS
    keep_modules: tuple[str, ...] = ("*router*",)
    keep_io_types: bool = True


@dataclass(frozen=True)
class _Value:
    dtype: int
    kind: str  # "const", "input", "fp16", "fp32" (made by an fp32 node), "free" (from constants only)


class _Scope:
    """One graph being rewritten: its values, the Casts emitted so far, its new node list."""

    def __init__(self, parent: _Scope | None = None) -> None:
        self.parent, self.values, self.casts, self.nodes = parent, {}, {}, []

    def get(self, name: str) -> _Value | None:
        return self.values.get(name) or (self.parent.get(name) if self.parent else None)

    def cast(self, key: tuple[str, int]) -> str | None:
        return self.casts.get(key) or (self.parent.cast(key) if self.parent else None)


class _Converter:
    """Rewrites one model in place (a fresh instance per model)."""

    def __init__(self, model: onnx.ModelProto, cfg: Fp16Config) -> None:
        self.cfg, self.model = cfg, model
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self.orig = _types(model.graph)  # the fp32 model's element type of every tensor
        self.names = set(self.orig) | {n.name for g in _subgraphs(model.graph) for n in g.node}  # taken
        self.consts: dict[str, tuple[TensorProto, onnx.GraphProto | None]] = {}
        self.copies: dict[str, str] = {}  # fp32 initializer -> its fp16 copy
        self.final: dict[str, int] = {}  # the dtype each emitted float tensor ends in
        self.pending: dict[str, tuple[onnx.NodeProto, _Scope]] = {}  # deferred constant-only nodes
        self.io_outputs = {o.name for o in model.graph.output}
        self.stats = {"fp16_nodes": 0, "fp32_nodes": 0, "casts": 0, "fp32_ops": {}, "clamped_values": 0}

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def graph(self, graph: onnx.GraphProto, parent: _Scope | None) -> _Scope:
        """Rewrite ``graph``'s nodes in order (they are topologically sorted)."""
        scope = _Scope(parent)
        for value in graph.input:
            if value.type.tensor_type.elem_type == FLOAT and not self.cfg.keep_io_types:
                value.type.tensor_type.elem_type = HALF
            scope.values[value.name] = _Value(value.type.tensor_type.elem_type, "input")
        for init in graph.initializer:
            scope.values[init.name] = _Value(init.data_type, "const")
            self.consts[init.name] = (init, graph)
        for node in graph.node:
            if node.op_type in ("Loop", "Scan"):
                raise TgirUserError(f"node {node.name!r}: {node.op_type} bodies are not supported by the fp16 pass")
            if node.op_type == "If":
                self.if_node(node, scope)
            else:
                self.node(node, scope)
        if parent is None:
            self.outputs(graph, scope)
        graph.ClearField("node")
        graph.node.extend(scope.nodes)
        return scope

    def decide(self, node: onnx.NodeProto, scope: _Scope) -> _Value | None:
        """The precision ``node`` computes in, or None when it has no float tensor to care about."""
        fixed = FIXED_INPUTS.get(node.op_type, ())
        floats = [n for i, n in enumerate(node.input) if n and i not in fixed and self.orig.get(n) == FLOAT]
        if node.op_type in ("Shape", "Size") or not (floats or any(self.orig.get(o) == FLOAT for o in node.output)):
            return None
        if self.kept(node):
            return _Value(FLOAT, "fp32")
        if node.op_type in FOLLOW_OPS:
            votes = [v for v in map(scope.get, floats) if v and v.kind not in ("const", "free")]
            if not votes:
                return _Value(HALF, "free")
            if all(v.kind == "fp32" for v in votes):
                return _Value(FLOAT, "fp32")
        return _Value(HALF, "fp16")

    def kept(self, node: onnx.NodeProto) -> bool:
        if node.op_type in self.cfg.keep_ops or not _has_fp16(node, self.opset):
            return True
        scopes = next((p.value for p in node.metadata_props if p.key == SCOPES), "")
        names = [node.name, *(s.strip(" '") for s in scopes.strip("[]").split(",") if s.strip(" '"))]
        return any(fnmatch.fnmatchcase(n, pat) for pat in self.cfg.keep_modules for n in names)

    def node(self, node: onnx.NodeProto, scope: _Scope) -> None:
        if node.op_type == "Constant":
            attr = node.attribute[0]
            if attr.name == "value":  # else (value_float...) a Cast makes the fp16 version
                self.consts[node.output[0]] = (attr.t, None)
            scope.values[node.output[0]] = _Value(self.orig.get(node.output[0], 0), "const")
            scope.nodes.append(node)
            return
        value = self.decide(node, scope)
        if value is not None and value.kind == "free" and all(self.orig.get(o) == FLOAT for o in node.output):
            if not self.io_outputs.intersection(node.output):
                for out in node.output:  # no float input: emitted in the precision its readers want
                    scope.values[out], self.pending[out] = value, (node, scope)
                return
            # a graph output (e.g. ITMA's float text mask, a Cast of a bool): made once, in the
            # declared output dtype; a deferred copy per precision would give the name two producers
            half = not self.cfg.keep_io_types
            value = _Value(HALF, "fp16") if half else _Value(FLOAT, "fp32")
        self.emit(node, value, scope)

    def emit(self, node: onnx.NodeProto, value: _Value | None, scope: _Scope) -> None:
        """Bring ``node``'s float inputs to its precision, append it and record its outputs."""
        fixed = FIXED_INPUTS.get(node.op_type, ())
        for i, name in enumerate(node.input):
            if not name or self.orig.get(name) != FLOAT:
                continue
            if value is None or node.op_type in ANY_INPUT:  # takes any dtype: only a deferred value is made
                known = scope.get(name)
                want = known.dtype if known and known.kind == "free" else None
            else:
                want = FLOAT if i in fixed else value.dtype
            if want:
                node.input[i] = self.convert(name, want, scope)
        if value is not None:
            self.retype_attributes(node, value.dtype)
            self.stats["fp16_nodes" if value.dtype == HALF else "fp32_nodes"] += 1
            if value.dtype == FLOAT:
                self.stats["fp32_ops"][node.op_type] = self.stats["fp32_ops"].get(node.op_type, 0) + 1
        scope.nodes.append(node)
        for out in node.output:
            if self.orig.get(out) == FLOAT:
                scope.values[out] = value
                self.final[out] = value.dtype

    def materialize(self, name: str, dtype: int, scope: _Scope) -> str:
        """Emit the deferred constant-only node behind ``name`` in ``dtype`` (once per scope chain)."""
        if not scope.cast((name, dtype)):
            original, home = self.pending[name]
            node = onnx.NodeProto()
            node.CopyFrom(original)
            first = home is scope and original.output[0] not in self.final  # keeps its names
            for i, out in enumerate(original.output):
                node.output[i] = out if first else self.fresh(out)
                scope.casts[(out, dtype)] = node.output[i]
            node.name = node.name if first else self.fresh(node.name or "constant")
            self.emit(node, _Value(dtype, "free"), scope)
        return scope.cast((name, dtype))

    def retype_attributes(self, node: onnx.NodeProto, dtype: int) -> None:
        """Cast(to=FLOAT) and ConstantOfShape's value produce the node's precision."""
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = dtype
            if node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(self.to_half(attr.t, attr.t.name) if dtype == HALF else attr.t)

    def convert(self, name: str, dtype: int, scope: _Scope) -> str:
        """The name of ``name`` in ``dtype``: itself, an fp16 copy of a constant or a Cast."""
        value = scope.get(name)
        if value is not None and value.kind == "free" and name in self.pending:
            return self.materialize(name, dtype, scope)
        if value is None or value.dtype == dtype:
            return name
        if value.kind == "const" and dtype == HALF and name in self.consts:
            tensor, home = self.consts[name]
            if home is not None:  # an initializer: one fp16 copy beside it, visible where it is
                if name not in self.copies:
                    self.copies[name] = self.fresh(f"{name}_fp16")
                    home.initializer.append(self.to_half(tensor, self.copies[name]))
                return self.copies[name]
            if not scope.cast((name, dtype)):  # a Constant node: an fp16 Constant in this scope
                copy = self.fresh(f"{name}_fp16")
                scope.nodes.append(onnx.helper.make_node("Constant", [], [copy], value=self.to_half(tensor, copy)))
                scope.casts[(name, dtype)], scope.values[copy] = copy, _Value(HALF, "const")
            return scope.cast((name, dtype))
        if not scope.cast((name, dtype)):
            cast = self.fresh(f"{name}_{'fp16' if dtype == HALF else 'fp32'}")
            scope.nodes.append(onnx.helper.make_node("Cast", [name], [cast], to=dtype, name=self.fresh(f"cast_{cast}")))
            scope.casts[(name, dtype)] = cast
            scope.values[cast] = _Value(dtype, "fp16" if dtype == HALF else "fp32")
            self.final[cast] = dtype
            self.stats["casts"] += 1
        return scope.cast((name, dtype))

    def to_half(self, tensor: TensorProto, name: str) -> TensorProto:
        """``tensor`` in float16; finite values beyond fp16's range clamp to +-65504 (inf stays inf)."""
        array = numpy_helper.to_array(tensor)
        big = np.isfinite(array) & (np.abs(array) > FP16_MAX)
        self.stats["clamped_values"] += int(big.sum())
        return numpy_helper.from_array(np.clip(array, -FP16_MAX, FP16_MAX, where=big, out=array.copy())
                                       .astype(np.float16), name)

    def if_node(self, node: onnx.NodeProto, scope: _Scope) -> None:
        """Rewrite both branches, then give their outputs one dtype each (a Cast where they differ)."""
        branches = [a.g for a in sorted(node.attribute, key=lambda a: a.name != "then_branch")]
        scopes = [self.graph(g, scope) for g in branches]
        for k, out in enumerate(node.output):
            values = [s.get(g.output[k].name) for s, g in zip(scopes, branches, strict=True)]
            if self.orig.get(out) != FLOAT or None in values:
                continue
            want = _agree(values)
            for sub, g in zip(scopes, branches, strict=True):
                if sub.get(g.output[k].name).kind == "free" or sub.get(g.output[k].name).dtype != want:
                    g.output[k].name = self.convert(g.output[k].name, want, sub)
                    g.ClearField("node")
                    g.node.extend(sub.nodes)
                g.output[k].type.tensor_type.elem_type = want
            scope.values[out] = _Value(want, "fp16" if want == HALF else "fp32")
            self.final[out] = want
        scope.nodes.append(node)

    def outputs(self, graph: onnx.GraphProto, scope: _Scope) -> None:
        """Graph outputs in their declared dtype (float32, or float16 without keep_io_types)."""
        want = FLOAT if self.cfg.keep_io_types else HALF
        for out in graph.output:
            value = scope.get(out.name)
            if self.orig.get(out.name) != FLOAT or value is None:
                continue
            out.type.tensor_type.elem_type = want
            if value.kind == "free" and (made := self.convert(out.name, want, scope)) != out.name:
                scope.nodes.append(onnx.helper.make_node("Identity", [made], [out.name], name=self.fresh("out")))
            elif value.kind != "free" and value.dtype != want:
                inner = self.fresh(f"{out.name}_{'fp16' if value.dtype == HALF else 'fp32'}")
                _rename(scope.nodes, graph.value_info, out.name, inner)
                scope.nodes.append(onnx.helper.make_node("Cast", [inner], [out.name], to=want,
                                                         name=self.fresh(f"cast_{out.name}")))
                self.final[inner], self.stats["casts"] = value.dtype, self.stats["casts"] + 1
            self.final[out.name] = want


def _agree(values: list[_Value]) -> int:
    """One dtype for an If output: a branch made of constants follows the other; else fp32 on disagreement."""
    computed = {v.dtype for v in values if v.kind not in ("const", "free")}
    return computed.pop() if len(computed) == 1 else FLOAT


def _has_fp16(node: onnx.NodeProto, opset: int) -> bool:
    """Whether the op's schema at ``opset`` allows float16 wherever it allows float."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return False  # a custom or function op: leave it as exported
    return all("tensor(float16)" in c.allowed_type_strs for c in schema.type_constraints
               if "tensor(float)" in c.allowed_type_strs)


def _subgraphs(graph: onnx.GraphProto):
    """``graph`` and every graph nested in it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)


def _types(graph: onnx.GraphProto) -> dict[str, int]:
    """Element type of every tensor named in ``graph`` and its subgraphs (names are model-wide)."""
    types = {}
    for g in _subgraphs(graph):
        types.update({v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]})
        types.update({i.name: i.data_type for i in g.initializer})
        types.update({n.output[0]: a.t.data_type for n in g.node if n.op_type == "Constant"
                      for a in n.attribute if a.name == "value"})
    return types


def _rename(nodes, value_info, old: str, new: str) -> None:
    """Rename tensor ``old`` wherever ``nodes`` (and their subgraphs) produce, read or declare it."""
    for node in nodes:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g.node, [*attr.g.value_info, *attr.g.output], old, new)
    for value in value_info:
        value.name = new if value.name == old else value.name


def _tidy(model: onnx.ModelProto, final: dict[str, int]) -> None:
    """Retype value_info; drop constants nobody reads any more (the fp32 originals of fp16 copies)."""
    graphs = list(_subgraphs(model.graph))
    used = {n for g in graphs for node in g.node for n in node.input} | {o.name for g in graphs for o in g.output}
    for g in graphs:
        for value in g.value_info:
            if value.name in final:
                value.type.tensor_type.elem_type = final[value.name]
    _prune(model.graph, used)


def _prune(graph: onnx.GraphProto, used: set[str]) -> None:
    """Drop unread initializers and Constant nodes, subgraphs first (rebuilding a node list copies
    its nodes, so a parent is rebuilt only after its branches are done)."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _prune(attr.g, used)
    keep = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    graph.ClearField("node")
    graph.node.extend(nodes)


def convert_model(model: onnx.ModelProto, cfg: Fp16Config = Fp16Config()) -> tuple[onnx.ModelProto, dict]:
    """Convert one fp32 ONNX model to mixed precision (see the module docstring).

    Returns:
        The converted model (checked: onnx.checker full, strict shape inference) and its facts:
        nodes computed in fp16 and in fp32 (subgraphs included), Casts inserted, fp32 op counts.

    Raises:
        TgirUserError: A Loop or Scan (not supported).
        TgirInternalError: The result does not pass the checker (a bug of this pass).
    """
    model = onnx.shape_inference.infer_shapes(model)  # the type of every intermediate, in branches too
    conv = _Converter(model, cfg)
    conv.graph(model.graph, None)
    _tidy(model, conv.final)
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise TgirInternalError(f"fp16 pass produced an invalid graph: {str(err).splitlines()[0]}") from err
    return model, conv.stats


def fp16_from_bundle(bundle: str | Path, out_dir: str | Path, cfg: Fp16Config = Fp16Config(), overwrite: bool = False,
                     progress: Callable[[str], None] | None = None) -> Manifest:
    """Write an FP16 (mixed precision) bundle converted from the fp32 ``bundle``.

    The bundle is assembled in a temporary folder beside ``out_dir`` and renamed into place. Model,
    preprocessing, tokenizer and router sections are kept; ``precision`` becomes ``"fp16"`` and
    ``build`` gains ``"fp16"`` (converter, settings, per-graph node counts) and
    ``"source_bundle_sha256"``.

    Raises:
        TgirUserError: ``bundle`` is not an fp32 bundle, or ``out_dir`` is not empty without ``overwrite``.
    """
    source, out = Path(bundle), Path(out_dir)
    manifest = Manifest.load(source)
    if manifest.precision != "fp32":
        raise TgirUserError(f"{source}: bundle is already {manifest.precision}; convert its fp32 export instead")
    if out.resolve() == source.resolve():
        raise TgirUserError(f"{out}: is the source bundle; write the fp16 bundle elsewhere")
    with staged_bundle(out, overwrite) as tmp:
        new = _write_fp16(source, manifest, tmp, cfg, progress)
    return new


def _write_fp16(source: Path, manifest: Manifest, folder: Path, cfg: Fp16Config,
                progress: Callable[[str], None] | None) -> Manifest:
    """Convert every graph into ``folder``, copy the other files and write the manifest."""
    graphs, facts = {}, {}
    for name, spec in manifest.graphs.items():
        if progress:
            progress(name)
        model, facts[name] = convert_model(onnx.load(str(source / spec["file"])), cfg)
        onnx.save(model, str(folder / spec["file"]))
        graphs[name] = {k: v for k, v in spec.items() if k != "engine"}  # engines belong to the fp32 graphs
        graphs[name].update({} if cfg.keep_io_types else _half_io(spec))
    copied = [n for n in manifest.files if n not in _derived(manifest)]  # vocab.json and any other data
    for name in copied:
        shutil.copyfile(source / name, folder / name)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}  # as JSON reads back
    build = {k: v for k, v in manifest.build.items() if k not in ("tensorrt", "onnxruntime_optimized", "fused")}
    build.update({"fp16": {"converter": "tgir.calib.fp16", "version": tgir.__version__, "onnx": onnx.__version__,
                           **settings, "graphs": facts},
                  "source_bundle_sha256": sha256(source / "manifest.json")})
    files = dict.fromkeys([*(g["file"] for g in graphs.values()), *copied], "")
    new = Manifest(**{**asdict(manifest), "graphs": graphs, "precision": "fp16", "backend": "onnxruntime",
                      "build": build, "files": files, "aoti": {}})
    new.save(folder)
    return new


def _derived(manifest: Manifest) -> set[str]:
    """The graph files and what was built from them (TensorRT engines and log, ONNX Runtime's saved
    optimised graphs, fused graphs, AOTInductor objects): none of it is copied, what was built
    belongs to the fp32 graphs."""
    made = {spec["file"] for spec in manifest.graphs.values()}
    made |= {name for name in manifest.files if name.startswith("aoti/")}
    made |= {spec["engine"] for spec in manifest.graphs.values() if "engine" in spec}
    made |= set(manifest.build.get("onnxruntime_optimized", {}).get("files", {}).values())
    made |= {entry["file"] for entry in manifest.build.get("fused", {}).values()}
    return made | ({manifest.build["tensorrt"]["log"]} if "log" in manifest.build.get("tensorrt", {}) else set())


def _half_io(spec: dict) -> dict:
    """The graph entry's tensors with float32 I/O made float16 (``keep_io_types=False``)."""
    def half(tensors: list[dict]) -> list[dict]:
        return [{**t, "dtype": "float16" if t["dtype"] == "float32" else t["dtype"]} for t in tensors]

    return {"inputs": half(spec["inputs"]), "outputs": half(spec["outputs"])}
