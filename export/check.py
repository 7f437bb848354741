"""Checks of an exported bundle: ONNX validity, strict shape inference, the manifest's contract, graph
hygiene (dead nodes, unfolded constants, training-only ops) and the TensorRT operator lint.

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
    """What ``check_graphs`` found: per-graph facts and any problems (empty = all passed)."""

    graphs: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    parity: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        out = {"ok": self.ok, "graphs": self.graphs, "problems": self.problems}
        return {**out, "parity": self.parity} if self.parity else out


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
    """``onnx.checker`` (full), strict shape inference, I/O names against the manifest, hygiene and
    (unless ``tensorrt`` is None) the TensorRT operator lint for that version."""
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
    return report


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


def require_ok(report: CheckReport, folder: str | Path) -> None:
    """Raise a user error listing every problem of ``report``."""
    if not report.ok:
        raise TgirUserError(f"{folder}: bundle check failed: " + "; ".join(report.problems))
