"""AMC's experts as data: a registry of expert kinds, each one small module.

Every expert maps region tokens ``X [B, N, D]`` and the sentence vector ``s [B, D]`` to
``[B, N, D]``. Ordered from least to most image-text interaction (the paper's NIN, GTN, CRN).
Adding an expert kind is one class and one registry line.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tgir.models.config import RouterConfig


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dimension without affine parameters."""
    return F.layer_norm(x, x.shape[-1:])


class NIN(nn.Module):
    """Identity path: normalised tokens, text ignored."""

    def __init__(self, dim: int, cfg: RouterConfig) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return layer_norm(x)


class GTN(nn.Module):
    """Global text-conditioned modulation (FiLM-like): ``LN(X * gamma(s) + beta(s))``."""

    def __init__(self, dim: int, cfg: RouterConfig) -> None:
        super().__init__()
        self.gamma = nn.Linear(dim, dim)
        self.beta = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return layer_norm(x * self.gamma(s)[:, None] + self.beta(s)[:, None])  # [B, N, D]


class CRN(nn.Module):
    """Token-level reasoning: self-attention over text-fused tokens, then a feed-forward block.

    ``Z = W[X; s]``, ``A = MHSA(LN Z)`` (no output projection, no residual from Z),
    ``O = A + FFN(LN A)``, output ``LN(O)``. The costliest expert by far.

    ``W[X; s] + b`` is computed as ``W_x X + (W_s s + b)``: the sentence half is the same for every
    token, so it is one matrix-vector product per sample instead of one per token (the fuse step
    costs half as much: 16 tokens x 512 -> 512 instead of x 1024 -> 512). Checkpoints that hold the
    joint ``fuse.weight [D, 2D]`` load into the two halves.
    """

    def __init__(self, dim: int, cfg: RouterConfig) -> None:
        super().__init__()
        if dim % cfg.heads:
            raise ValueError(f"embed_dim {dim} is not divisible by {cfg.heads} heads")
        self.heads = cfg.heads
        self.fuse_x = nn.Linear(dim, dim, bias=False)
        self.fuse_s = nn.Linear(dim, dim)
        bound = 1 / math.sqrt(2 * dim)  # the joint layer's initial distribution (fan-in 2D), not each half's
        for t in (self.fuse_x.weight, self.fuse_s.weight, self.fuse_s.bias):
            nn.init.uniform_(t, -bound, bound)
        self.register_load_state_dict_pre_hook(_split_joint_fuse)
        self.norm_z = nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_a = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn), nn.ReLU(), nn.Linear(cfg.ffn, dim))

    def _attention(self, z: torch.Tensor) -> torch.Tensor:
        b, n, d = z.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, h, d // h).transpose(1, 2)  # [B, h, N, d/h]

        q, k, v = split(self.q(z)), split(self.k(z)), split(self.v(z))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)  # [B, h, N, N]
        return (att @ v).transpose(1, 2).reshape(b, n, d)  # [B, N, D]

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        z = self.fuse_x(x) + self.fuse_s(s)[:, None]  # [B, N, D] = W [X; s] + b
        a = self._attention(self.norm_z(z))
        return layer_norm(a + self.ffn(self.norm_a(a)))


def _split_joint_fuse(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """Load hook: a joint ``fuse.weight [D, 2D]`` / ``fuse.bias`` (checkpoints before the split)
    becomes ``fuse_x.weight`` (the token half) and ``fuse_s`` (the sentence half and the bias)."""
    weight = state_dict.pop(prefix + "fuse.weight", None)
    if weight is None:
        return
    dim = weight.shape[0]
    state_dict[prefix + "fuse_x.weight"] = weight[:, :dim].clone()
    state_dict[prefix + "fuse_s.weight"] = weight[:, dim:].clone()
    if prefix + "fuse.bias" in state_dict:
        state_dict[prefix + "fuse_s.bias"] = state_dict.pop(prefix + "fuse.bias")


EXPERT_KINDS: dict[str, type[nn.Module]] = {"nin": NIN, "gtn": GTN, "crn": CRN}
