"""Automatic sensitivity sweep: which quantized layers cost the most, to keep them in float.

Each wrapper (a Linear/Conv input and weight, or a residual add's inputs) is fake-quantized alone,
everything else in float, and scored by how far the model's embeddings move: ``1 - mean cosine``
between its query and target embeddings and the all-float model's, on a few calibration batches.
The ``keep_sensitive`` worst are then left in float (no Q/DQ is exported for them). One layer at a
time misses interactions, but it is cheap (one forward pass per layer and batch) and ranks the
layers that matter; ``tgir.benchmarks.precision`` measures what keeping them buys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def embeddings(model: nn.Module, batch) -> torch.Tensor:
    """``[2B, D]`` L2-normalised query embeddings (references + texts) then target embeddings of a
    ``tgir.calib.data.CalibBatch``."""
    with torch.no_grad():
        _, tokens = model.encode_image(torch.from_numpy(batch.references))
        target, _ = model.encode_image(torch.from_numpy(batch.targets))
        text = model.encode_text(torch.from_numpy(batch.ids), torch.from_numpy(batch.lengths))
        return torch.cat([model.compose(tokens, *text), target])


def sweep(model: nn.Module, wrappers: Sequence, batches: Sequence,
          progress: Callable[[int, int], None] | None = None) -> list[tuple[str, float]]:
    """``(wrapper name, 1 - mean cosine)`` for each calibrated wrapper quantized alone, worst first.

    The wrappers must be calibrated (``tgir.calib.qdq.calibrate``); they are left in ``quant`` mode.
    """
    for w in wrappers:
        w.mode = "float"
    reference = [embeddings(model, b) for b in batches]
    scores = []
    for n, wrapper in enumerate(wrappers, 1):
        wrapper.mode = "quant"
        moved = [embeddings(model, b) for b in batches]
        wrapper.mode = "float"
        cos = torch.cat([(a * b).sum(-1) for a, b in zip(reference, moved, strict=True)])  # [2B * batches]
        scores.append((wrapper.name, float(1.0 - cos.mean())))
        if progress:
            progress(n, len(wrappers))
    for w in wrappers:
        w.mode = "quant"
    return sorted(scores, key=lambda s: -s[1])
