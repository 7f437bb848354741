"""ITMA: the MAAF sequence-concat attention model, plus a two-stream cross-attention variant.

ITMA's public code is MAAF's (specs/itma-maaf.md). Image: each selected backbone level is
projected to D by 1×1 conv → BatchNorm(eps 1e-3) → ReLU and flattened to tokens; the levels are
concatenated. Text: LSTM tokens → Dropout (the TextEncoder's) → Linear to D, plus a padding mask.
Combiner (``variant="concat"``): ``[image tokens; text tokens]`` through pre-LN transformer blocks with
padded text keys masked, no positional encodings, then a final LayerNorm. Query = mean of the
resolution-wise pooled image part and the masked-mean text part; a target image's tokens go
through the SAME combiner alone. Loss: batch classification with a learnable scale applied to
both sides (MAAF's ``NormalizationLayer``: stored as a log; initialised to ``config.loss_scale``,
which the presets set to MAAF's 4.0).

``variant="two_stream"``: image tokens are the queries of cross-attention blocks over the text
tokens (keys/values; the text stream is not updated), query = resolution-wise pooled image tokens.
A gallery image has no text: its tokens go through the same blocks with the cross-attention
term left out (attention over an empty key set contributes nothing), i.e. only the FFN sublayers
and the final LayerNorm. Either way, gallery embeddings never depend on a query.

Attention is written out (not ``nn.MultiheadAttention``) so that MAAF's identity "softmax" is a
one-line switch and the dynamo ONNX export is plain MatMul/Softmax/Where with no control flow.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tgir.errors import TgirUserError
from tgir.models.backbones import build_backbone
from tgir.models.base import RetrievalModel, batch_classification_loss, l2norm
from tgir.models.config import CombinerConfig, ModelConfig
from tgir.models.text import TextEncoder

LN_EPS = 1e-6  # MAAF's transformer LayerNorm epsilon


class Attention(nn.Module):
    """Multi-head scaled dot-product attention with a key padding mask.

    Args:
        dim: Model width D (divisible by ``heads``).
        heads: Number of heads.
        dropout: Dropout on the attention weights.
        identity_softmax: Use the raw scaled scores as weights (masked keys weigh 0) instead of
            their softmax (MAAF's CSS setting).
    """

    def __init__(self, dim: int, heads: int, dropout: float, identity_softmax: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise TgirUserError(f"combiner: embed_dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.identity_softmax = identity_softmax
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def weights(self, q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Attention weights ``[B, h, Nq, Nk]`` from per-head ``q`` ``[B, h, Nq, dh]``, ``k``
        ``[B, h, Nk, dh]`` and a float key mask ``[B, Nk]`` (1 = attend, 0 = padding) or None."""
        scores = q @ k.transpose(-2, -1) * self.scale  # [B, h, Nq, Nk]
        if key_mask is None:
            return scores if self.identity_softmax else scores.softmax(dim=-1)
        keep = key_mask[:, None, None, :]  # [B, 1, 1, Nk]
        if self.identity_softmax:
            return scores * keep  # masked entries are exactly 0
        # where(), not an additive -1e9: padded keys get exactly zero weight, and no control flow.
        scores = torch.where(keep > 0, scores, torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Queries from ``x`` ``[B, Nq, D]``, keys/values from ``context`` ``[B, Nk, D]``
        -> ``[B, Nq, D]``."""
        q = self.q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, h, Nq, dh]
        k = self.k(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, h, Nk, dh]
        v = self.v(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, h, Nk, dh]
        attn = self.drop(self.weights(q, k, key_mask))  # [B, h, Nq, Nk]
        return self.out((attn @ v).transpose(1, 2).flatten(2))  # [B, Nq, D]


def _ffn(dim: int, cfg: CombinerConfig) -> nn.Sequential:
    """MAAF's position-wise feed-forward: Linear → ReLU → Dropout → Linear."""
    return nn.Sequential(nn.Linear(dim, cfg.ffn), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ffn, dim))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + Drop(Attn(LN x))``; ``x + Drop(FFN(LN x))``.

    Self-attention (``cross=False``) attends over the normalised sequence itself; cross-attention
    (``cross=True``, two-stream) attends over a separately normalised context, and is left out
    when no context is given (gallery images).
    """

    def __init__(self, dim: int, cfg: CombinerConfig, cross: bool = False) -> None:
        super().__init__()
        self.cross = cross
        self.norm_attn = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm_context = nn.LayerNorm(dim, eps=LN_EPS) if cross else None
        self.attn = Attention(dim, cfg.heads, cfg.dropout, cfg.identity_softmax)
        self.norm_ffn = nn.LayerNorm(dim, eps=LN_EPS)
        self.ffn = _ffn(dim, cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, N, D]`` (+ mask ``[B, Nk]`` over the keys) -> ``[B, N, D]``."""
        h = self.norm_attn(x)
        if not self.cross:
            x = x + self.drop(self.attn(h, h, key_mask))
        elif context is not None:  # a static choice (gallery vs query graph), not data-dependent
            x = x + self.drop(self.attn(h, self.norm_context(context), key_mask))
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class Combiner(nn.Module):
    """MAAF's transformer: ``cfg.blocks`` pre-LN blocks and a final LayerNorm."""

    def __init__(self, dim: int, cfg: CombinerConfig) -> None:
        super().__init__()
        self.two_stream = cfg.variant == "two_stream"
        self.blocks = nn.ModuleList(Block(dim, cfg, cross=self.two_stream) for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        # Glorot init of every matrix, as MAAF does for its transformer layers.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image tokens ``[B, N, D]`` and optional text ``[B, L, D]`` + float mask ``[B, L]`` ->
        (image part ``[B, N, D]``, text part ``[B, L, D]`` or None)."""
        if self.two_stream:
            x = image
            for block in self.blocks:
                x = block(x, text_mask, context=text)
            return self.norm(x), None
        if text is None:  # a gallery image alone: every key is valid, so no mask at all
            x, mask = image, None
        else:
            x = torch.cat([image, text], dim=1)  # [B, N + L, D]
            mask = torch.cat([torch.ones_like(image[..., 0]), text_mask], dim=1)  # [B, N + L]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        n = image.shape[1]
        return x[:, :n], (None if text is None else x[:, n:])


class ITMA(RetrievalModel):
    """ITMA / MAAF composed-query model (``family="itma"``).

    I/O contract: ``encode_image`` -> (gallery embedding ``[B, D]``, projected image tokens
    ``[B, N, D]`` *before* the combiner, N = sum over levels of (image_size / stride)²);
    ``encode_text`` -> (``text_tokens`` ``[B, L, D]``, ``text_mask`` ``[B, L]`` float32, 1.0 for a
    word and 0.0 for padding; float so every runtime can feed it straight back into ``compose``,
    which also accepts a bool mask). Padded positions of ``text_tokens`` are zeroed.

    The loss scale is learnable and multiplies both the query and the target (MAAF), so the
    logits are ``scale² · cosine``; ``config.loss_scale`` is its initial value (MAAF: 4.0, i.e.
    logits start at 16·cosine), not a fixed logit scale as for AMC.
    """

    text_outputs = ("text_tokens", "text_mask")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        dim = config.embed_dim
        self.backbone = build_backbone(config.backbone)
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, kernel_size=1, bias=False), nn.BatchNorm2d(dim, eps=1e-3),
                          nn.ReLU())
            for c in self.backbone.channels)
        self.text = TextEncoder(config.text)
        # TextEncoder already applies Dropout(config.text.dropout): LSTM → Dropout → Linear, as MAAF.
        self.text_project = nn.Linear(config.text.hidden, dim)
        self.combiner = Combiner(dim, config.combiner)
        # MAAF stores log(scale) so the learnt scale stays positive.
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.loss_scale)))
        counts = [(config.image_size // s) ** 2 for s in self.backbone.strides]
        self.num_tokens = sum(counts)
        # Resolution-wise pooling as one weighted sum: each level's mean, averaged over the levels.
        weights = torch.cat([torch.full((n,), 1.0 / (n * len(counts))) for n in counts])  # [N]
        self.register_buffer("pool_weights", weights, persistent=False)

    @property
    def scale(self) -> torch.Tensor:
        """The learnt embedding scale (applied to query and target; logits use its square)."""
        return self.log_scale.exp()

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> projected tokens of all levels ``[B, N, D]`` (before the combiner)."""
        maps = self.image_features(images)  # per level [B, C_i, h_i, w_i]
        tokens = torch.cat([p(m).flatten(2).transpose(1, 2) for p, m in zip(self.project, maps, strict=True)],
                           dim=1)  # [B, N, D]
        if tokens.shape[1] != self.num_tokens:
            raise TgirUserError(f"itma: images give {tokens.shape[1]} tokens, the config "
                                f"(image_size {self.config.image_size}) expects {self.num_tokens}")
        return tokens

    def pool_image(self, x: torch.Tensor) -> torch.Tensor:
        """Resolution-wise pooling ``[B, N, D]`` -> ``[B, D]``: mean of the per-level token means."""
        return (x * self.pool_weights[:, None]).sum(dim=1)

    def gallery(self, tokens: torch.Tensor) -> torch.Tensor:
        """Target embedding ``[B, D]`` from image tokens alone, through the same combiner."""
        image_part, _ = self.combiner(tokens)
        return l2norm(self.pool_image(image_part))

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (gallery embedding ``[B, D]``, projected tokens ``[B, N, D]`` for ``compose``)."""
        tokens = self.image_tokens(images)  # [B, N, D]
        return self.gallery(tokens), tokens

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids ``[B, L]``, lengths ``[B]`` -> (tokens ``[B, L, D]``, float mask ``[B, L]``)."""
        tokens, mask = self.text(ids, lengths)  # [B, L, H], [B, L] bool
        mask = mask.to(tokens.dtype)  # [B, L] float: 1 word, 0 padding
        return self.text_project(tokens) * mask[..., None], mask  # [B, L, D], [B, L]

    def compose(self, tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
                ) -> torch.Tensor:
        """Image tokens ``[B, N, D]`` + text tokens ``[B, L, D]`` and mask ``[B, L]`` (float or
        bool) -> query embedding ``[B, D]``, L2-normalised."""
        mask = text_mask.to(tokens.dtype)  # [B, L]
        image_part, text_part = self.combiner(tokens, text_tokens, mask)
        image_vec = self.pool_image(image_part)  # [B, D]
        if text_part is None:  # two-stream: the text acted through cross-attention only
            return l2norm(image_vec)
        # Masked mean over words; a length-0 row (never produced by the vocabulary) stays finite.
        text_vec = (text_part * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        return l2norm((image_vec + text_vec) / 2)  # [B, D]

    def loss(self, ref_images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor,
             target_images: torch.Tensor, target_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """MAAF's batch-based classification: cross-entropy of ``scale² · q·t`` over the batch."""
        query = self.compose(self.image_tokens(ref_images), *self.encode_text(ids, lengths))  # [B, D]
        target = self.gallery(self.image_tokens(target_images))  # [B, D]
        bbc = batch_classification_loss(query, target, self.scale ** 2, target_labels)
        return {"loss": bbc, "bbc": bbc.detach()}
