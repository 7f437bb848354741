"""TIRG: shapes, google/tirg layout, text pooling, gated residual formula, loss, training, ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tgir.errors import TgirUserError
from tgir.models.base import build_model
from tgir.models.config import BackboneConfig, ModelConfig, TextConfig
from tgir.models.tirg import TIRG, last_valid

LEVELS = (32,)


def tiny_config(dropout: float = 0.1) -> ModelConfig:
    return ModelConfig(
        family="tirg", image_size=64, embed_dim=32,
        backbone=BackboneConfig(name="resnet18", levels=LEVELS, weights="none"),
        text=TextConfig(vocab_size=20, word_dim=8, hidden=16, dropout=dropout), loss_scale=4.0)


def tiny_model(dropout: float = 0.1, seed: int = 0) -> TIRG:
    torch.manual_seed(seed)
    model = build_model(tiny_config(dropout))
    assert isinstance(model, TIRG)
    return model.eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def texts(pad_to: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three texts of lengths 4, 2, 1, padded with 0 to max(4, pad_to) columns."""
    rows = [[5, 6, 7, 8], [9, 10], [11]]
    ids = torch.zeros(len(rows), max(4, pad_to), dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, torch.tensor([len(r) for r in rows], dtype=torch.int64)


def test_shapes_and_normalisation():
    model = tiny_model()
    ids, lengths = texts()
    with torch.no_grad():
        gallery, tokens = model.encode_image(images(3, 1))
        (features,) = model.encode_text(ids, lengths)
        query = model.compose(tokens, features)
        direct = model(images(3, 1), ids, lengths)
    assert model.text_outputs == ("text_features",)
    assert gallery.shape == (3, 32) and tokens.shape == (3, 1, 32) and features.shape == (3, 32)
    assert query.shape == (3, 32)
    torch.testing.assert_close(gallery.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(query.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(gallery, nn.functional.normalize(tokens[:, 0], dim=1))
    torch.testing.assert_close(direct, query)


def test_layout_follows_google_tirg():
    model = tiny_model()
    assert model.a.tolist() == [1.0, 10.0, 1.0, 1.0]
    assert math.isclose(model.scale.item(), 4.0)
    gate = [type(m) for m in model.gated_feature_composer]
    res = [type(m) for m in model.res_info_composer]
    assert gate == [nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert res == [nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert model.gated_feature_composer[2].weight.shape == (32, 64)
    linears = [m for m in model.res_info_composer if isinstance(m, nn.Linear)]
    assert [m.weight.shape for m in linears] == [(64, 64), (32, 64)]
    assert model.image_fc.in_features == 512  # resnet18 layer4, globally pooled


def test_loss_scale_initialises_the_learnable_scale():
    assert math.isclose(build_model(tiny_config().replace(loss_scale=7.0)).scale.item(), 7.0)
    with pytest.raises(TgirUserError, match="loss_scale"):
        build_model(tiny_config().replace(loss_scale=-1.0))


def test_compose_is_the_gated_residual_formula():
    model = tiny_model()
    with torch.no_grad():
        for bn in (model.gated_feature_composer[0], model.res_info_composer[0]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        model.a.copy_(torch.tensor([0.7, 3.0, 1.0, 1.0]))
        x, t = torch.randn(2, 32), torch.randn(2, 32)
        c = torch.cat([x, t], dim=1)

        def bn_relu(bn, v):
            normalised = (v - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
            return torch.relu(normalised * bn.weight + bn.bias)

        g_lin = model.gated_feature_composer[2]
        gate = torch.sigmoid(bn_relu(model.gated_feature_composer[0], c) @ g_lin.weight.t() + g_lin.bias)
        r1, r2 = model.res_info_composer[2], model.res_info_composer[4]
        h = torch.relu(bn_relu(model.res_info_composer[0], c) @ r1.weight.t() + r1.bias)
        res = h @ r2.weight.t() + r2.bias
        f = 0.7 * gate * x + 3.0 * res
        torch.testing.assert_close(model.compose(x[:, None], t), f / f.norm(dim=1, keepdim=True))


def test_last_valid_picks_the_last_word():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    out = last_valid(tokens, torch.tensor([3, 1]))
    torch.testing.assert_close(out, torch.stack([tokens[0, 2], tokens[1, 0]]))


def test_padding_invariance_and_gallery_independence():
    model = tiny_model()
    with torch.no_grad():
        gallery, tokens = model.encode_image(images(3, 2))
        alone, _ = model.encode_image(images(3, 2)[2:])
        short = model.compose(tokens, *model.encode_text(*texts()))
        long = model.compose(tokens, *model.encode_text(*texts(pad_to=9)))
    torch.testing.assert_close(long, short, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone[0], gallery[2], atol=1e-5, rtol=0)
    assert not torch.allclose(short, gallery, atol=1e-3)


def test_loss_matches_hand_computed_cross_entropy():
    model = tiny_model()
    with torch.no_grad():
        model.scale.fill_(2.5)
        ref, target = images(3, 4), images(3, 5)
        ids, lengths = texts()
        out = model.loss(ref, ids, lengths, target)
        q = model(ref, ids, lengths).double().numpy()
        t = model.encode_image(target)[0].double().numpy()
    s2 = 2.5 ** 2  # google/tirg's NormalizationLayer scales both sides
    terms = []
    for i in range(3):
        logits = [s2 * float(np.dot(q[i], t[j])) for j in range(3)]
        terms.append(-logits[i] + math.log(sum(math.exp(z) for z in logits)))
    expected = sum(terms) / 3
    assert set(out) == {"loss", "bbc"}
    assert abs(out["loss"].item() - expected) < 1e-5


def test_a_few_steps_lower_the_loss():
    # A frozen trunk on 32-px images keeps this fast on a busy CPU; every other part trains.
    torch.manual_seed(0)
    model = build_model(tiny_config(dropout=0.0).replace(
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
    assert model.scale.grad is not None and model.a.grad is not None


def test_config_round_trip_rebuilds_the_same_model():
    model = tiny_model()
    config = ModelConfig.from_dict(model.config.to_dict())
    assert config == model.config
    rebuilt = build_model(config).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images(3, 8), *texts()), model(images(3, 8), *texts()))


def test_onnx_export_matches_onnxruntime(tmp_path, export_and_check, text_case):
    model = tiny_model()
    batch = torch.export.Dim("batch", max=256)
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
    with torch.no_grad():
        compose_cases = [(tokens[:b], model.encode_text(*text_case(b, 4, seed=b))[0]) for b in (1, 3)]
        example = (tokens[:2], model.encode_text(*text_case(2, 3, seed=0))[0])
    seconds_compose = export_and_check(
        model, "compose", ["tokens", "text_features"], ["query"], example,
        {"tokens": {0: batch}, "text_features": {0: batch}}, compose_cases, tmp_path / "compose.onnx")
    print(f"tirg export: encode_text {seconds_text:.1f} s, compose {seconds_compose:.1f} s")
