"""AMC's composer as separate graphs routed by the host: one router graph and one graph per expert
for each routed layer. The host runs a layer's router, zeroes sub-threshold gates, runs only the
experts some sample needs and mixes their outputs; no control flow inside any graph.

This is the third router design the export benchmark compares with ``If`` per expert and the dense
form (``benchmarks/router_designs.py``); ``HostRoutedComposer`` is its reference runner.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tgir.export.onnx import quiet_exporter_log
from torch import nn

from tgir.errors import TgirUserError
from tgir.models.base import RetrievalModel


class _RouterGraph(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.router = layer.router

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.router(x, s)  # [B, E] raw sigmoid gates


class _ExpertGraph(nn.Module):
    def __init__(self, expert: nn.Module) -> None:
        super().__init__()
        self.expert = expert

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.expert(x, s)  # [B, N, D]


def host_routed_from_model(model: RetrievalModel, folder: str | Path, opset: int = 18, max_batch: int = 64) -> dict:
    """Export ``router_l{k}.onnx`` and ``expert_l{k}_{kind}.onnx`` for every routed layer of an AMC model.

    Returns:
        ``{"tau", "experts", "residual", "layers": [{"router": file, "experts": {kind: file}}]}``.
    """
    if model.config.family != "amc":
        raise TgirUserError(f"host routing applies to AMC only; this model is {model.config.family!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, d = model.config.image_size // 16, model.config.embed_dim  # any token count works: N is dynamic
    x, s = torch.randn(2, max(n * n, 4), d), torch.randn(2, d)
    batch, tokens = torch.export.Dim("batch", min=1, max=max_batch), torch.export.Dim("tokens", min=1, max=1024)
    shapes = ({0: batch, 1: tokens}, {0: batch})
    layers = []
    for k, layer in enumerate(model.layers):
        entry = {"router": f"router_l{k}.onnx", "experts": {}}
        _export(_RouterGraph(layer), (x, s), ["tokens", "text_features"], ["gates"], folder / entry["router"],
                shapes, opset)
        for kind, expert in zip(model.config.router.experts, layer.experts, strict=True):
            entry["experts"][kind] = f"expert_l{k}_{kind}.onnx"
            _export(_ExpertGraph(expert), (x, s), ["tokens", "text_features"], ["out"],
                    folder / entry["experts"][kind], shapes, opset)
        layers.append(entry)
    router = model.config.router
    return {"tau": router.tau, "experts": list(router.experts), "residual": router.residual, "layers": layers}


def _export(module, args, inputs, outputs, path: Path, shapes, opset: int) -> None:
    with warnings.catch_warnings(), quiet_exporter_log():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), args, dynamo=True, input_names=inputs, output_names=outputs,
                                    opset_version=opset, dynamic_shapes=shapes, verbose=False)
    program.save(str(path))


class HostRoutedComposer:
    """Runs the host-routed graphs: per layer, the router, then only the needed experts."""

    def __init__(self, folder: str | Path, spec: dict, options: ort.SessionOptions | None = None) -> None:
        folder = Path(folder)

        def session(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])

        self.tau = spec["tau"]
        self.residual = bool(spec.get("residual", False))  # specs written before the option: the paper form
        self.layers = [(session(layer["router"]), [session(f) for f in layer["experts"].values()])
                       for layer in spec["layers"]]
        self.executed = np.zeros((len(self.layers), len(spec["experts"])), np.int64)
        self.calls = 0

    def __call__(self, tokens: np.ndarray, text: np.ndarray) -> np.ndarray:
        """tokens ``[B, N, D]``, text ``[B, D]`` -> normalised query ``[B, D]``."""
        x, feeds = tokens, None
        for k, (router, experts) in enumerate(self.layers):
            feeds = {"tokens": x, "text_features": text}
            (gates,) = router.run(None, feeds)  # [B, E]
            if self.tau > 0:
                gates = np.where(gates >= self.tau, gates, 0.0).astype(np.float32)
            out = x.copy() if self.residual else np.zeros_like(x)  # X + sum_i g_i E_i(X), as RoutedLayer
            for i, expert in enumerate(experts):
                if gates[:, i].max() > 0:
                    out += gates[:, i, None, None] * expert.run(None, feeds)[0]
                    self.executed[k, i] += 1
            x = out
        self.calls += 1
        query = x.mean(axis=1)  # [B, D]
        return query / np.maximum(np.linalg.norm(query, axis=-1, keepdims=True), 1e-12)
