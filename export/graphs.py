"""The three exported graphs as small modules around a trained model (names from the contract)."""

from __future__ import annotations

import torch
from torch import nn

from tgir.models.base import RetrievalModel


class ImageEncoderGraph(nn.Module):
    """images [B, 3, S, S] -> (gallery [B, D], tokens [B, N, D])."""

    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_image(images)


class TextEncoderGraph(nn.Module):
    """ids [B, L] int64, lengths [B] int64 -> the family's text features."""

    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.encode_text(ids, lengths))


class ComposerGraph(nn.Module):
    """tokens [B, N, D] + one text tensor (AMC, TIRG: sentence features [B, D]) -> query [B, D]."""

    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.model.compose(tokens, text)


class TokenComposerGraph(ComposerGraph):
    """tokens [B, N, D] + text tokens [B, L, D] + text mask [B, L] (ITMA) -> query [B, D]."""

    def forward(self, tokens: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model.compose(tokens, text, mask)


def graph_modules(model: RetrievalModel) -> dict[str, nn.Module]:
    """The three graphs of ``model``, keyed by their contract names."""
    composer = TokenComposerGraph if len(model.text_outputs) == 2 else ComposerGraph
    return {"image_encoder": ImageEncoderGraph(model), "text_encoder": TextEncoderGraph(model),
            "composer": composer(model)}
