"""ITMA (MAAF sequence-concat and two-stream): shapes, masking, pooling, loss, training, ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tgir.errors import TgirUserError
from tgir.models.base import build_model
from tgir.models.config import BackboneConfig, CombinerConfig, ModelConfig, TextConfig
from tgir.models.itma import ITMA, Attention

VARIANTS = {
    "concat": {},
    "identity": {"identity_softmax": True},
    "two_stream": {"variant": "two_stream"},
}

LEVELS = (16, 32)


def tiny_config(dropout: float = 0.1, **combiner) -> ModelConfig:
    return ModelConfig(
        family="itma", image_size=64, embed_dim=32,
        backbone=BackboneConfig(name="resnet18", levels=LEVELS, weights="none"),
        text=TextConfig(vocab_size=20, word_dim=8, hidden=16, dropout=dropout), loss_scale=4.0,
        combiner=CombinerConfig(blocks=2, heads=4, ffn=16, dropout=dropout, **combiner))


def tiny_model(variant: str = "concat", dropout: float = 0.1, seed: int = 0) -> ITMA:
    torch.manual_seed(seed)
    model = build_model(tiny_config(dropout, **VARIANTS[variant]))
    assert isinstance(model, ITMA)
    return model.eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def texts(pad_to: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three texts of lengths 4, 2, 1, padded with 0 to max(4, pad_to) columns."""
    rows = [[5, 6, 7, 8], [9, 10], [11]]
    width = max(4, pad_to)
    ids = torch.zeros(len(rows), width, dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, torch.tensor([len(r) for r in rows], dtype=torch.int64)


# ------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_normalisation(variant):
    model = tiny_model(variant)
    ids, lengths = texts()
    with torch.no_grad():
        gallery, tokens = model.encode_image(images(3, 1))
        text_tokens, text_mask = model.encode_text(ids, lengths)
        query = model.compose(tokens, text_tokens, text_mask)
        direct = model(images(3, 1), ids, lengths)
    assert model.text_outputs == ("text_tokens", "text_mask")
    assert gallery.shape == (3, 32)
    assert tokens.shape == (3, 4 * 4 + 2 * 2, 32)  # levels 16 and 32 of a 64-px image
    assert model.num_tokens == 20
    assert text_tokens.shape == (3, 4, 32)
    assert text_mask.dtype == torch.float32
    assert text_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert torch.all(text_tokens[1, 2:] == 0)  # padded positions are zeroed
    assert query.shape == (3, 32)
    torch.testing.assert_close(gallery.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(query.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(direct, query)
    # a bool mask is accepted too
    torch.testing.assert_close(model.compose(tokens, text_tokens, text_mask.bool()), query)


def test_projection_layout():
    model = tiny_model()
    conv, bn, act = model.project[0]
    assert conv.bias is None and conv.kernel_size == (1, 1)
    assert conv.in_channels == 256 and model.project[1][0].in_channels == 512  # resnet18 layer3/4
    assert bn.eps == 1e-3 and isinstance(act, nn.ReLU)
    assert len(model.combiner.blocks) == 2
    assert math.isclose(model.scale.item(), 4.0, rel_tol=1e-6)


def test_loss_scale_initialises_the_learnable_scale():
    model = build_model(tiny_config().replace(loss_scale=7.0))
    assert math.isclose(model.scale.item(), 7.0, rel_tol=1e-6)
    with pytest.raises(TgirUserError, match="loss_scale"):
        build_model(tiny_config().replace(loss_scale=0.0))


def test_resolution_wise_pooling_weights_levels_equally():
    model = tiny_model()
    x = torch.zeros(1, 20, 32)
    x[0, :16] = 1.0  # level 16: 16 tokens of ones; level 32: 4 tokens of zeros
    # average of per-level means = (1 + 0) / 2, not the token mean 16 / 20
    torch.testing.assert_close(model.pool_image(x), torch.full((1, 32), 0.5))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gallery_does_not_depend_on_text_or_batch(variant):
    model = tiny_model(variant)
    batch = images(3, 2)
    with torch.no_grad():
        gallery, tokens = model.encode_image(batch)
        alone, _ = model.encode_image(batch[1:2])
        query = model.compose(tokens, *model.encode_text(*texts()))
        # the gallery path is the combiner on image tokens alone
        image_part, text_part = model.combiner(tokens)
    assert text_part is None
    torch.testing.assert_close(alone[0], gallery[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.gallery(tokens), gallery)
    torch.testing.assert_close(nn.functional.normalize(model.pool_image(image_part), dim=1), gallery)
    assert not torch.allclose(query, gallery, atol=1e-3)  # the text does change the query


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_invariance(variant):
    model = tiny_model(variant)
    with torch.no_grad():
        _, tokens = model.encode_image(images(3, 3))
        short = model.compose(tokens, *model.encode_text(*texts()))
        long = model.compose(tokens, *model.encode_text(*texts(pad_to=9)))
        # garbage at padded positions must not leak through the combiner either
        text_tokens, mask = model.encode_text(*texts(pad_to=9))
        noisy = text_tokens + (1 - mask)[..., None] * 100 * torch.randn_like(text_tokens)
        garbage = model.compose(tokens, noisy, mask)
    torch.testing.assert_close(long, short, atol=1e-5, rtol=0)
    torch.testing.assert_close(garbage, short, atol=1e-5, rtol=0)


def test_token_count_mismatch_is_a_user_error():
    model = tiny_model()
    with pytest.raises(TgirUserError, match="expects 20"):
        model.encode_image(torch.randn(1, 3, 96, 96))


# ---------------------------------------------------------------------------------- attention


def _attention_pair() -> tuple[Attention, Attention]:
    torch.manual_seed(0)
    soft = Attention(8, heads=2, dropout=0.0)
    ident = Attention(8, heads=2, dropout=0.0, identity_softmax=True)
    ident.load_state_dict(soft.state_dict())
    return soft.eval(), ident.eval()


def test_identity_softmax_matches_explicit_formula():
    soft, ident = _attention_pair()
    x = torch.randn(2, 3, 8)
    ctx = torch.randn(2, 4, 8)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    out = ident(x, ctx, mask)
    # explicit: per head, (q·k / sqrt(dh)) * mask, then weighted sum of values, then out proj
    q = ident.q(x).reshape(2, 3, 2, 4)
    k = ident.k(ctx).reshape(2, 4, 2, 4)
    v = ident.v(ctx).reshape(2, 4, 2, 4)
    expected = torch.zeros(2, 3, 2, 4)
    for b in range(2):
        for h in range(2):
            for i in range(3):
                for j in range(4):
                    w = (q[b, i, h] @ k[b, j, h]) / 2.0 * mask[b, j]
                    expected[b, i, h] += w * v[b, j, h]
    torch.testing.assert_close(out, ident.out(expected.reshape(2, 3, 8)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, soft(x, ctx, mask), atol=1e-3)


@pytest.mark.parametrize("identity", [False, True])
def test_masked_keys_are_ignored(identity):
    soft, ident = _attention_pair()
    attn = ident if identity else soft
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    q = attn.q(x).unflatten(-1, (2, -1)).transpose(1, 2)
    k = attn.k(ctx).unflatten(-1, (2, -1)).transpose(1, 2)
    weights = attn.weights(q, k, mask)  # [B, h, Nq, Nk]
    assert torch.all(weights[0, :, :, 2:] == 0) and torch.all(weights[1, :, :, 1:] == 0)
    if not identity:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3))
    changed = ctx.clone()
    changed[0, 2:] = 50.0
    changed[1, 1:] = -50.0
    torch.testing.assert_close(attn(x, changed, mask), attn(x, ctx, mask))


def test_heads_must_divide_dim():
    with pytest.raises(TgirUserError, match="divisible"):
        Attention(10, heads=4, dropout=0.0)


# --------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("variant", ["concat", "two_stream"])
def test_loss_matches_hand_computed_cross_entropy(variant):
    model = tiny_model(variant)
    with torch.no_grad():
        model.log_scale.fill_(math.log(2.5))
        ref, target = images(3, 4), images(3, 5)
        ids, lengths = texts()
        out = model.loss(ref, ids, lengths, target)
        q = model(ref, ids, lengths).double().numpy()
        t = model.encode_image(target)[0].double().numpy()
    s2 = 2.5 ** 2  # the scale multiplies both embeddings
    terms = []
    for i in range(3):
        logits = [s2 * float(np.dot(q[i], t[j])) for j in range(3)]
        terms.append(-logits[i] + math.log(sum(math.exp(z) for z in logits)))
    expected = sum(terms) / 3
    assert set(out) == {"loss", "bbc"}
    assert abs(out["loss"].item() - expected) < 1e-5
    assert abs(out["bbc"].item() - expected) < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_few_steps_lower_the_loss(variant):
    # A frozen trunk on 32-px images keeps this fast on a busy CPU; every other part trains.
    torch.manual_seed(0)
    model = build_model(tiny_config(dropout=0.0, **VARIANTS[variant]).replace(
        image_size=32,
        backbone=BackboneConfig(name="resnet18", levels=LEVELS, weights="none", trainable=False))).train()
    ref, target = images(4, 6)[..., :32, :32], images(4, 7)[..., :32, :32]
    ids = torch.tensor([[5, 6, 0], [7, 0, 0], [8, 9, 10], [11, 12, 0]])
    lengths = torch.tensor([2, 1, 3, 2])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        loss = model.loss(ref, ids, lengths, target)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.05, losses
    assert model.log_scale.grad is not None


# ------------------------------------------------------------------------------------- config


def test_config_round_trip_rebuilds_the_same_model():
    model = tiny_model("two_stream")
    config = ModelConfig.from_dict(model.config.to_dict())
    assert config == model.config
    rebuilt = build_model(config).eval()
    assert isinstance(rebuilt, ITMA)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images(3, 8), *texts()), model(images(3, 8), *texts()))
        torch.testing.assert_close(rebuilt.encode_image(images(2, 9))[0], model.encode_image(images(2, 9))[0])


# ---------------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_export_matches_onnxruntime(variant, tmp_path, export_and_check, text_case):
    model = tiny_model(variant)
    batch, length = torch.export.Dim("batch", min=1, max=256), torch.export.Dim("length", min=1, max=64)
    with torch.no_grad():
        _, tokens = model.encode_image(images(3, 9))
    # The text graph is exported at a fixed padded width: torch.export specialises nn.LSTM's time
    # axis once an LSTM has been exported in the process (pytorch/pytorch#115092), and a fixed width
    # is what TensorRT profiles want anyway. Actual lengths still vary inside that width.
    text_cases = [text_case(b, 5, seed=b * 10 + s) for b in (1, 3) for s in (1, 2)]
    seconds_text = export_and_check(
        model, "encode_text", ["ids", "lengths"], list(model.text_outputs), text_case(2, 5, seed=0),
        {"ids": {0: batch}, "lengths": {0: batch}}, text_cases, tmp_path / "text.onnx")
    text_cases = [text_case(b, n, seed=b * 10 + n) for b in (1, 3) for n in (2, 5)]
    compose_cases = []
    for ids, lengths in text_cases:
        with torch.no_grad():
            compose_cases.append((tokens[: len(ids)], *model.encode_text(ids, lengths)))
    with torch.no_grad():
        example = (tokens[:2], *model.encode_text(*text_case(2, 3, seed=0)))
    seconds_compose = export_and_check(
        model, "compose", ["tokens", "text_tokens", "text_mask"], ["query"], example,
        {"tokens": {0: batch}, "text_tokens": {0: batch, 1: length}, "text_mask": {0: batch, 1: length}},
        compose_cases, tmp_path / "compose.onnx")
    print(f"itma[{variant}] export: encode_text {seconds_text:.1f} s, compose {seconds_compose:.1f} s")
