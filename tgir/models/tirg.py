"""TIRG: text-image residual gating (Vo et al., CVPR 2019), the baseline of specs/itma-maaf.md.

Follows google/tirg (``img_text_composition_models.py``, class ``TIRG``; ``text_model.py``,
``TextLSTMModel``; ``torch_functions.py``, ``NormalizationLayer``):

- image: trunk → global average pool → ``Linear(C → D)`` (there: ResNet-18 ``fc`` 512 → 512); here
  the trunk's last selected level is pooled.
- text: LSTM output at the last valid step (``lstm_output[length - 1]``, not a max or mean) →
  ``Dropout`` → ``Linear``; there Dropout(0.1) and Linear(512 → 512), here the dropout is the
  TextEncoder's (``config.text.dropout``, on every step, which is the same on the step taken) and
  the Linear maps ``text.hidden → D``.
- composition: with ``c = [x; t]`` (``2D``),
  ``gate = Linear(2D→D)(ReLU(BN(c)))``, ``res = Linear(2D→D)(ReLU(Linear(2D→2D)(ReLU(BN(c)))))``,
  ``f = a[0] · sigmoid(gate) ⊙ x + a[1] · res`` with learnable ``a = [1, 10, 1, 1]`` (only the first
  two entries are used, as there).
- loss: both sides L2-normalised and multiplied by one learnable scale (there init 4.0; here
  ``config.loss_scale``, which the presets set to 4.0), so the logits are ``scale² · q·t``;
  batch-based classification (google/tirg's non-default loss; its soft-triplet default is not
  implemented).

Deviations: the query embedding returned by ``compose`` is L2-normalised (the interface's rule;
retrieval by cosine is what google/tirg evaluates anyway), and the trunk comes from
``build_backbone`` instead of torchvision.
"""

from __future__ import annotations

import torch
from torch import nn

from tgir.models.backbones import build_backbone
from tgir.models.base import RetrievalModel, batch_classification_loss, l2norm
from tgir.models.config import ModelConfig
from tgir.models.text import TextEncoder, last_valid


class TIRG(RetrievalModel):
    """TIRG composed-query model (``family="tirg"``).

    I/O contract: ``encode_image`` -> (gallery embedding ``[B, D]``, pooled feature as tokens
    ``[B, 1, D]``); ``encode_text`` -> (``text_features`` ``[B, D]``,); ``compose(tokens,
    text_features)`` -> ``[B, D]``. ``config.loss_scale`` is the initial value of the learnable
    scale that multiplies both sides (google/tirg: 4.0), not a fixed logit scale as for AMC.
    """

    text_outputs = ("text_features",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        dim = config.embed_dim
        self.backbone = build_backbone(config.backbone)
        self.image_fc = nn.Linear(self.backbone.channels[-1], dim)
        self.text = TextEncoder(config.text)
        # TextEncoder already applies Dropout(config.text.dropout) to every step: LSTM → Dropout → Linear.
        self.text_fc = nn.Linear(config.text.hidden, dim)
        self.a = nn.Parameter(torch.tensor([1.0, 10.0, 1.0, 1.0]))
        self.gated_feature_composer = nn.Sequential(
            nn.BatchNorm1d(2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.res_info_composer = nn.Sequential(
            nn.BatchNorm1d(2 * dim), nn.ReLU(), nn.Linear(2 * dim, 2 * dim), nn.ReLU(),
            nn.Linear(2 * dim, dim))
        self.scale = nn.Parameter(torch.tensor(float(config.loss_scale)))

    def image_feature(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> pooled, projected image feature ``[B, D]`` (not normalised)."""
        fmap = self.image_features(images)[-1]  # [B, C, h, w]
        return self.image_fc(fmap.mean(dim=(2, 3)))  # [B, D]

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (gallery embedding ``[B, D]``, pooled feature as tokens ``[B, 1, D]``)."""
        x = self.image_feature(images)  # [B, D]
        return l2norm(x), x[:, None, :]  # [B, D], [B, 1, D]

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor]:
        """Ids ``[B, L]``, lengths ``[B]`` -> (text feature ``[B, D]``,): the last word's LSTM state."""
        tokens, _ = self.text(ids, lengths)  # [B, L, H]
        return (self.text_fc(last_valid(tokens, lengths)),)  # [B, D]

    def compose(self, tokens: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Gated residual of ``tokens`` ``[B, 1, D]`` and text ``[B, D]`` -> ``[B, D]``, L2-normalised."""
        x = tokens[:, 0]  # [B, D]
        c = torch.cat([x, text_features], dim=1)  # [B, 2D]
        gate = torch.sigmoid(self.gated_feature_composer(c))  # [B, D]
        f = self.a[0] * gate * x + self.a[1] * self.res_info_composer(c)  # [B, D]
        return l2norm(f)

    def loss(self, ref_images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor,
             target_images: torch.Tensor, target_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Batch-based classification: cross-entropy of ``scale² · q·t`` over the batch."""
        query = self.compose(self.image_feature(ref_images)[:, None, :], *self.encode_text(ids, lengths))
        target = l2norm(self.image_feature(target_images))  # [B, D]
        bbc = batch_classification_loss(query, target, self.scale ** 2, target_labels)
        return {"loss": bbc, "bbc": bbc.detach()}
