"""AMC: adaptive multi-expert composition with a sigmoid router, plus conditional experts.

Paper model (specs/amc.md): region tokens from the last backbone level projected to D, an LSTM
sentence vector, two routed layers of NIN/GTN/CRN experts mixed by independent sigmoid gates,
query = mean of the last layer's tokens. What tgir adds: a gate threshold tau at inference that
zeroes sub-threshold gates and skips an expert when no sample of the batch needs it, written
with ``torch.cond`` so that the exported graph keeps the skip as ONNX ``If`` nodes.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from tgir.errors import TgirUserError
from tgir.models.backbones import build_backbone
from tgir.models.base import RetrievalModel, batch_classification_loss, l2norm
from tgir.models.config import ModelConfig, RouterConfig
from tgir.models.experts import EXPERT_KINDS
from tgir.models.text import TextEncoder, last_valid, masked_max


class Router(nn.Module):
    """Per-layer gate network: ``[mean_tokens(X); s]`` -> one sigmoid gate per expert."""

    def __init__(self, dim: int, cfg: RouterConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, cfg.hidden, bias=False), nn.LayerNorm(cfg.hidden),
                                 nn.ReLU(), nn.Linear(cfg.hidden, len(cfg.experts), bias=False))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([x.mean(dim=1), s], dim=-1)))  # [B, E]


class RoutedLayer(nn.Module):
    """One routed layer: ``sum_i gate_i * expert_i(X, s)``, experts built from the registry."""

    def __init__(self, dim: int, cfg: RouterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Set by the exporter's dense router form: every expert runs, sub-threshold gates are still
        # zeroed, so the numbers equal the If form without any control flow in the graph.
        self.always_run = False
        self.router = Router(dim, cfg)
        self.experts = nn.ModuleList(EXPERT_KINDS[kind](dim, cfg) for kind in cfg.experts)

    def effective_gates(self, gates: torch.Tensor) -> torch.Tensor:
        """Gates as used: sub-threshold gates are zeroed at inference when tau > 0."""
        if self.training or self.cfg.tau <= 0:
            return gates
        return torch.where(gates >= self.cfg.tau, gates, torch.zeros_like(gates))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates = self.effective_gates(self.router(x, s))  # [B, E]
        dense = self.training or self.cfg.tau <= 0 or self.always_run
        out = x if self.cfg.residual else torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            g = gates[:, i, None, None]  # [B, 1, 1]
            if dense:
                out = out + g * expert(x, s)
            elif self.cfg.conditional:
                # A 0-d boolean computed in the graph: what ONNX If and TensorRT's IIfConditional want.
                out = out + torch.cond(gates[:, i].max() > 0, _run_expert(expert), _skip_expert, (x, s, g))
            elif bool(gates[:, i].max() > 0):  # eager skip (calibration, host-side routing)
                out = out + g * expert(x, s)
        return out, gates


def _run_expert(expert: nn.Module):
    def run(x: torch.Tensor, s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (g * expert(x, s)).contiguous()

    return run


def _skip_expert(x: torch.Tensor, s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x, memory_format=torch.contiguous_format)


def bsc_loss(query_parts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch similarity consistency: MSE between the ``[B, B]`` intra-batch similarity matrices of
    the (normalised, multi-layer) query features and of the target embeddings."""
    return F.mse_loss(query_parts @ query_parts.t(), target @ target.t())


class AMC(RetrievalModel):
    """Adaptive multi-expert collaborative network (``family="amc"``)."""

    text_outputs = ("text_features",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        dim = config.embed_dim
        self.backbone = build_backbone(config.backbone)
        # AMC uses the last level only.
        self.project = nn.Conv2d(self.backbone.channels[-1], dim, kernel_size=1, bias=False)
        self.text = TextEncoder(config.text)
        self.text_project = nn.Identity() if config.text.hidden == dim else nn.Linear(config.text.hidden, dim)
        self.layers = nn.ModuleList(RoutedLayer(dim, config.router) for _ in range(config.router.layers))
        if config.router.position:
            # Self-attention and the mean are blind to token order, and "make middle-left circle green"
            # needs to know where a token is. Only present when on, so paper checkpoints keep their keys.
            # Unit scale, not ViT's 0.02: the projected tokens are not normalised (std ~3.5 with the
            # ImageNet trunk, already at initialisation), and a 0.02 table stayed at 0.6% of their norm
            # after two epochs at lr 2e-4 (Adam moves each entry by at most lr per step).
            grid = config.image_size // config.backbone.levels[-1]
            self.position = nn.Parameter(torch.randn(grid * grid, dim))  # [N, D]
        if config.learn_scale:
            # Log-parameterised so it stays positive; only present when learnt, so checkpoints of the
            # paper's fixed-scale setting keep their state dict.
            self.log_scale = nn.Parameter(torch.tensor(math.log(config.loss_scale)))

    def logit_scale(self) -> torch.Tensor | float:
        """Scale of the BBC logits: the paper's fixed value, or the learnt one (capped at 100)."""
        if self.config.learn_scale:
            return self.log_scale.exp().clamp(max=100.0)
        return self.config.loss_scale

    def encode_image(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.project(self.image_features(images)[-1])  # [B, D, h, w]
        tokens = fmap.flatten(2).transpose(1, 2).contiguous()  # [B, N, D]
        gallery = l2norm(tokens.mean(dim=1))  # [B, D]
        if self.config.router.position:
            if tokens.shape[1] != self.position.shape[0]:
                raise TgirUserError(f"AMC with position embeddings was built for {self.position.shape[0]} "
                                    f"tokens ({self.config.image_size} px); got {tokens.shape[1]}: feed "
                                    f"{self.config.image_size}x{self.config.image_size} images")
            tokens = tokens + self.position  # [B, N, D]: the composer sees where each token is
        return gallery, tokens

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor]:
        tokens, mask = self.text(ids, lengths)  # [B, L, H], [B, L]
        if self.config.text.pooling == "last":
            return (self.text_project(last_valid(tokens, lengths)),)  # [B, D]
        # AMC max-pools after filling padded steps with 0, so a padded text's vector is floored at 0
        # but the batch's longest text is not: results would depend on the batch. Flooring every
        # text at 0 keeps AMC's behaviour for padded texts and makes queries batch-independent.
        pooled = masked_max(tokens, mask, fill=float("-inf")).clamp_min(0.0)  # [B, H]
        return (self.text_project(pooled),)  # [B, D]

    def set_router(self, always_run: bool | None = None, **changes) -> RouterConfig:
        """Change the router settings of a built model (e.g. ``tau``, ``conditional``) in its config
        and in every routed layer; ``always_run`` selects the exporter's dense form. Returns the new
        router config."""
        router = dataclasses.replace(self.config.router, **changes)
        self.config = self.config.replace(router=router)
        for layer in self.layers:
            layer.cfg = router
            if always_run is not None:
                layer.always_run = always_run
        return router

    def compose_with_gates(self, tokens: torch.Tensor, s: torch.Tensor
                           ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Query embedding plus, per routed layer, its output tokens and effective gates ``[B, E]``."""
        outputs, gates = [], []
        x = tokens.contiguous()  # torch.cond needs both branches to agree on strides
        for layer in self.layers:
            x, g = layer(x, s)
            outputs.append(x)
            gates.append(g)
        return l2norm(x.mean(dim=1)), outputs, gates

    def compose(self, tokens: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.compose_with_gates(tokens, s)[0]

    def loss(self, ref_images, ids, lengths, target_images, target_labels=None) -> dict[str, torch.Tensor]:
        """BBC + BSC (paper) + optional L1 gate sparsity (tgir)."""
        _, tokens = self.encode_image(ref_images)
        (s,) = self.encode_text(ids, lengths)
        query, outputs, gates = self.compose_with_gates(tokens, s)
        target, _ = self.encode_image(target_images)
        bbc = batch_classification_loss(query, target, self.logit_scale(), target_labels)
        g_q = l2norm(torch.cat([o.mean(dim=1) for o in outputs], dim=-1))  # [B, layers * D]
        bsc = bsc_loss(g_q, target)
        sparsity = torch.stack([g.mean() for g in gates]).mean()
        total = bbc + self.config.bsc_weight * bsc + self.config.router.sparsity_weight * sparsity
        return {"loss": total, "bbc": bbc.detach(), "bsc": bsc.detach(), "gate_mean": sparsity.detach(),
                "scale": torch.as_tensor(self.logit_scale()).detach()}
