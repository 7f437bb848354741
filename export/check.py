"""Checks of an exported bundle: ONNX validity, strict shape inference, the manifest's contract, graph
hygiene (dead nodes, unfolded constants, training-only ops) and the TensorRT operator lint.

ONNX Runtime bundles also ship ONNX Runtime's saved optimised graphs (``*.ort.onnx``) and a fused
query graph: each must parse and open in an ONNX Runtime session with the manifest's I/O.

Numerical parity with PyTorch on CSS-2D samples lives in ``tgir.export.parity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx
from tgir.export.lint import DEFAULT_TENSORRT, lint_model

from tgir.errors import TgirUserError
from tgir.manifest import Manifest

TRAINING_OPS = {"Dropout", "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss", "Gradient",
                "Momentum", "Adagrad", "Adam"}


@dataclass
class CheckReport:
    """What ``check_graphs`` found: per-graph facts and any problems (empty = all passed).

    Attributes:
        graphs: Per graph: node counts, parameters, file size.
        problems: One line per problem found.
        parity: The parity check's result (empty: not run).
        saved: Per ONNX Runtime saved or fused graph file: True (opened in a session) or why it
            was only parsed.
    """

    graphs: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    parity: dict = field(default_factory=dict)
    saved: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        out = {"ok": self.ok, "graphs": self.graphs, "problems": self.problems}
        out.update({k: v for k, v in (("saved", self.saved), ("parity", self.parity)) if v})
        return out


def _names(values) -> list[str]:
    return [v.name for v in values]


def _walk(graph: onnx.GraphProto):
    """Every node of ``graph`` and of its subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)


def hygiene(model: onnx.ModelProto) -> dict:
    """Counts of what a clean inference graph should not hold: nodes whose outputs nobody reads,
    non-Constant nodes computed only from constants (left unfolded), training-only operators."""
    graph = model.graph
    used = {name for node in _walk(graph) for name in node.input} | set(_names(graph.output))
    for node in _walk(graph):  # subgraph outputs are read by their If/Loop
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                used.update(_names(attr.g.output))
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                       for o in n.output}
    dead = [n.name for n in _walk(graph) if n.output and not any(o in used for o in n.output if o)]
    # QuantizeLinear on a float weight is the Q/DQ weight form TensorRT and ONNX Runtime expect.
    foldable = [n.name for n in graph.node if n.op_type not in ("Constant", "QuantizeLinear") and n.input and not any(
        a.type == onnx.AttributeProto.GRAPH for a in n.attribute) and all(i in constants for i in n.input if i)]
    training = [n.name for n in _walk(graph) if n.op_type in TRAINING_OPS or "training" in n.domain]
    return {"dead_nodes": dead, "unfolded_constants": foldable, "training_ops": training}


def check_graphs(folder: str | Path, tensorrt: str | None = DEFAULT_TENSORRT) -> CheckReport:
    """``onnx.checker`` (full), strict shape inference, I/O names against the manifest, hygiene,
    (unless ``tensorrt`` is None) the TensorRT operator lint for that version, and the bundle's ONNX
    Runtime saved and fused graphs (``check_saved_graphs``)."""
    folder = Path(folder)
    manifest = Manifest.load(folder)
    report = CheckReport()
    for name, spec in manifest.graphs.items():
        path = folder / spec["file"]
        model = onnx.load(str(path))
        try:
            onnx.checker.check_model(str(path), full_check=True)
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            report.problems.append(f"{name}: {str(err).splitlines()[0]}")
        want_in, want_out = [t["name"] for t in spec["inputs"]], [t["name"] for t in spec["outputs"]]
        got_in, got_out = _names(model.graph.input), _names(model.graph.output)
        if (got_in, got_out) != (want_in, want_out):
            report.problems.append(f"{name}: I/O {got_in} -> {got_out} differs from the manifest's "
                                   f"{want_in} -> {want_out}")
        clean = hygiene(model)
        for what, nodes in clean.items():
            if nodes:
                report.problems.append(f"{name}: {len(nodes)} {what.replace('_', ' ')}: {', '.join(nodes[:5])}")
        if tensorrt:
            report.problems.extend(f"{name}: TensorRT {tensorrt} lint: {issue}"
                                   for issue in lint_model(model, tensorrt))
        nodes = list(_walk(model.graph))
        report.graphs[name] = {"nodes": len(model.graph.node), "nodes_with_subgraphs": len(nodes),
                               "if_nodes": sum(n.op_type == "If" for n in nodes),
                               "params": sum(_numel(i) for i in model.graph.initializer),
                               "bytes": path.stat().st_size}
    check_saved_graphs(folder, manifest, report)
    return report


def check_saved_graphs(folder: Path, manifest: Manifest, report: CheckReport) -> None:
    """The graphs an ONNX Runtime bundle adds: saved optimised graphs (``*.ort.onnx``) and fused
    graphs. Each must parse as ONNX and have the manifest's I/O names; each opens in an ONNX Runtime
    session where this onnxruntime would run it (a saved graph: the version and providers it was
    saved by). Problems and facts go into ``report``."""
    import onnxruntime as ort

    saved = manifest.build.get("onnxruntime_optimized", {})
    fused = manifest.build.get("fused", {})
    specs = {**manifest.graphs, **fused}
    targets = {entry["file"]: (name, ["CPUExecutionProvider"]) for name, entry in fused.items()}
    opens = (saved.get("version") == ort.__version__
             and set(saved.get("providers", ["?"])) <= set(ort.get_available_providers()))
    providers = saved.get("providers") if opens else None
    targets.update({file: (name, providers) for name, file in saved.get("files", {}).items()})
    targets.update({f: (None, providers) for f in manifest.files if f.endswith(".ort.onnx") and f not in targets})
    for file, (name, session) in targets.items():
        problem = _saved_graph_problem(folder / file, specs.get(name), session)
        if problem:
            report.problems.append(f"{file}: {problem}")
        else:
            report.saved[file] = True if session else (
                f"parsed, not opened: saved by onnxruntime {saved.get('version')} for {saved.get('providers')}, "
                f"this is {ort.__version__}")


def _saved_graph_problem(path: Path, spec: dict | None, providers: list[str] | None) -> str | None:
    """Why the graph at ``path`` is unusable, or None: parse it, compare its I/O names with ``spec``
    and, unless ``providers`` is None, open it in a session with those providers."""
    import onnxruntime as ort

    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError, OSError, ...
        return f"not a readable ONNX graph ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    constants = {i.name for i in model.graph.initializer}
    got = ([i.name for i in model.graph.input if i.name not in constants], _names(model.graph.output))
    if spec is not None and got != ([t["name"] for t in spec["inputs"]], [t["name"] for t in spec["outputs"]]):
        return f"I/O {got[0]} -> {got[1]} differs from the manifest's graph (not the graph it was made from)"
    if not providers:
        return None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # ORT raises its own Fail/InvalidGraph types for a corrupt graph
        return f"onnxruntime cannot load this graph ({str(err).splitlines()[0]})"
    return None


def check_bundle(folder: str | Path, checkpoint: str | Path | None = None, data: str | Path | None = None,
                 dataset: str = "css2d", tensorrt: str | None = DEFAULT_TENSORRT, parity: bool = True,
                 progress=None) -> CheckReport:
    """``check_graphs`` plus, when ``parity``, ONNX Runtime vs PyTorch on CSS-2D samples.

    Args:
        checkpoint: The PyTorch reference; None: the checkpoint recorded in the manifest, if it is
            still there unchanged (else parity is reported as skipped, with the reason).
        data: Dataset root for the parity samples (None: a small generated CSS-2D test split).
    """
    report = check_graphs(folder, tensorrt)
    if not parity:
        return report
    if checkpoint is None:
        checkpoint, why = Manifest.load(folder, verify=False).source_checkpoint()
        if checkpoint is None:
            report.parity = {"skipped": why}
            return report
    from tgir.export.parity import parity as run_parity

    report.parity = run_parity(folder, checkpoint, data, dataset, progress=progress)
    report.problems.extend(f"parity: {p}" for p in report.parity["problems"])
    return report


def _numel(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def require_ok(report: CheckReport, folder: str | Path, note: str = "") -> None:
    """Raise a user error listing every problem of ``report`` (then ``note``, e.g. what was kept)."""
    if not report.ok:
        raise TgirUserError(f"{folder}: bundle check failed: " + "; ".join(report.problems) + note)
