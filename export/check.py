"""Checks of an exported bundle: ONNX validity, strict shape inference and the manifest's contract.

ONNX Runtime vs PyTorch parity is tested in tests/export (max abs <= 1e-4 on fp32 embeddings);
the TensorRT operator lint and parity on CSS-2D samples are still to come (export issue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from tgir.errors import TgirUserError
from tgir.manifest import Manifest


@dataclass
class CheckReport:
    """What ``check_bundle`` found: per-graph facts and any problems (empty = all passed)."""

    graphs: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _names(values) -> list[str]:
    return [v.name for v in values]


def check_graphs(folder: str | Path) -> CheckReport:
    """``onnx.checker`` (full), strict shape inference, and I/O names against the manifest."""
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
        report.graphs[name] = {"nodes": len(model.graph.node), "if_nodes": sum(n.op_type == "If" for n in
                                                                              model.graph.node),
                               "bytes": path.stat().st_size}
    return report


def require_ok(report: CheckReport, folder: str | Path) -> None:
    if not report.ok:
        raise TgirUserError(f"{folder}: bundle check failed: " + "; ".join(report.problems))
