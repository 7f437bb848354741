"""The interface every model family implements, and the family registry.

All families split the same way, which is what the exporter turns into three graphs:
    encode_image(images) -> (gallery_emb [B, D] L2-normalised, tokens [B, N, D])
    encode_text(ids, lengths) -> text features (a tuple of tensors; family-specific)
    compose(tokens, *text) -> query_emb [B, D] L2-normalised
Gallery embeddings never depend on a query, so a catalogue is embedded once.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from tgir.errors import unknown_choice
from tgir.models.config import ModelConfig

# family -> "module:class"; a new family is one class and one line here.
FAMILIES: dict[str, str] = {
    "amc": "tgir.models.amc:AMC",
    "itma": "tgir.models.itma:ITMA",
    "tirg": "tgir.models.tirg:TIRG",
}


class RetrievalModel(nn.Module):
    """Base class: composed-query retrieval split into image, text and composition stages.

    Subclasses implement ``encode_image``, ``encode_text``, ``compose`` and ``loss``.

    Attributes:
        config: The frozen config the model was built from.
        text_outputs: Names of the tensors ``encode_text`` returns, in order (the I/O contract).
    """

    text_outputs: tuple[str, ...] = ("text_features",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def encode_image(self, images: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, H, W]`` normalised images -> (gallery embedding ``[B, D]``, tokens ``[B, N, D]``).

        Also accepts the backbone's feature maps instead of images (a list, one map per level),
        which is how training with a frozen backbone runs from a feature cache.
        """
        raise NotImplementedError

    def image_features(self, images: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone feature maps of ``images``, or ``images`` itself when it already is that list."""
        if isinstance(images, (list, tuple)):
            return list(images)
        return self.backbone(images)

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, L]`` int64 token ids and ``[B]`` int64 lengths -> text features."""
        raise NotImplementedError

    def compose(self, tokens: torch.Tensor, *text: torch.Tensor) -> torch.Tensor:
        """Reference tokens + text features -> query embedding ``[B, D]``, L2-normalised."""
        raise NotImplementedError

    def loss(self, ref_images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor,
             target_images: torch.Tensor, target_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training losses on a batch of triplets; ``"loss"`` is the total to minimise.

        ``target_labels`` (``[B]``) lets the loss ignore in-batch duplicates of a query's target."""
        raise NotImplementedError

    def forward(self, ref_images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Query embedding ``[B, D]`` from reference images and texts."""
        _, tokens = self.encode_image(ref_images)
        return self.compose(tokens, *self.encode_text(ids, lengths))


def build_model(config: ModelConfig) -> RetrievalModel:
    """Instantiate the family named by ``config.family``."""
    if config.family not in FAMILIES:
        raise unknown_choice("model", config.family, FAMILIES)
    module, cls = FAMILIES[config.family].split(":")
    return getattr(importlib.import_module(module), cls)(config)


def l2norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """L2-normalise along ``dim`` (eps-guarded so zero vectors stay finite)."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)


def batch_classification_loss(query: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | float,
                              target_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Batch-based classification (AMC's BBC, MAAF's loss): cross-entropy over the ``[B, B]``
    scaled cosine matrix with the matching target on the diagonal. Inputs are L2-normalised.

    Args:
        target_labels: ``[B]`` labels of the targets. When given, another target with the same
            label as a query's own (an identical scene) is not used as a negative for that query:
            batches grouped by reference image often hold such duplicates.
    """
    logits = scale * query @ target.t()  # [B, B]
    if target_labels is not None:
        same = target_labels[:, None] == target_labels[None, :]  # [B, B]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(len(query), device=query.device))
