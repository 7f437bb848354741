"""PyTorch reference runner: the bundle's source checkpoint run eagerly, behind the same protocol.

It answers "what should the graphs output?" for parity checks and benchmarks. torch and the core's
model code are imported when a runner is made, never when ``tgir.runtime`` is imported.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tgir.runtime.base import Runner

from tgir.errors import TgirUserError
from tgir.manifest import Manifest

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def torch_device(device: object) -> str:
    """``device`` checked before any work: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` of a GPU this machine has.

    Raises:
        TgirUserError: Another string or type, CUDA without a CUDA build of torch and a visible GPU,
            or a GPU index past the last one.
    """
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise TgirUserError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return device
    import torch

    if not torch.cuda.is_available():
        raise TgirUserError(f"device {device!r}: torch.cuda.is_available() is False (a CPU build of torch, or no "
                            "GPU visible); use device 'cpu'")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise TgirUserError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


class TorchDeviceRunner(Runner):
    """A runner whose graphs take and return torch tensors on ``self.device`` (PyTorch eager, the
    AOTInductor packages): subclasses set ``device`` and implement ``_forward``; this moves numpy
    feeds there and float32 outputs back."""

    device = "cpu"

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for v in feeds.values()]
        return [o.float().cpu().numpy() for o in self._forward(graph, args)]

    def _forward(self, graph: str, args: list) -> tuple:
        """One graph on device tensors in contract order; outputs on device."""
        raise NotImplementedError


class TorchRunner(TorchDeviceRunner):
    """Runs the checkpoint a bundle was exported from, in PyTorch (CPU or CUDA).

    Args:
        folder: Bundle directory.
        checkpoint: The source checkpoint (default: the one the manifest names, if unchanged).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (``torch_device``).
    """

    backend = "torch"

    def __init__(self, folder: str | Path, checkpoint: str | Path | None = None, device: str = "cpu",
                 manifest: Manifest | None = None) -> None:
        device = torch_device(device)
        super().__init__(folder, manifest)
        import torch

        from tgir.training.checkpoint import model_for_bundle

        self._torch = torch
        model = model_for_bundle(self.manifest, self.folder, checkpoint or self._recorded_checkpoint(), reference=True)
        self.device = device
        self.model = model.to(device)

    def _recorded_checkpoint(self) -> str:
        path, why = self.manifest.source_checkpoint()
        if path is None:
            raise TgirUserError(f"{self.folder}: {why.replace('--checkpoint', 'checkpoint=')}")
        return path

    def _forward(self, graph: str, args: list) -> tuple:
        """The model call behind one graph, on device tensors in contract order; outputs on device."""
        with self._torch.no_grad():
            if graph == "image_encoder":
                return tuple(self.model.encode_image(*args))
            if graph == "text_encoder":
                return tuple(self.model.encode_text(*args))
            return (self.model.compose(args[0], *args[1:]),)
