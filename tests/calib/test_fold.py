"""BatchNorm folding before quantization: exact in eval mode, only for BatchNorms a conv feeds alone."""

from __future__ import annotations

import pytest
import torch
from tgir.calib.fold import conv_bn_pairs, fold_batchnorms
from torch import nn

from tgir.models.base import build_model


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g))


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_folding_is_exact_and_removes_every_backbone_batchnorm(tiny, backbone):
    cfg = tiny("amc")
    cfg = cfg.replace(backbone=cfg.backbone.__class__(**{**cfg.backbone.__dict__, "name": backbone,
                                                          "levels": (16,), "weights": "none"}))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _randomise_bn(model)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model.encode_image(images)
    folded = fold_batchnorms(model, lambda: model.encode_image(images))
    assert folded and not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    with torch.no_grad():
        got = model.encode_image(images)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


class _Shared(nn.Module):
    """conv -> two BatchNorms (not foldable), relu -> BatchNorm (not a conv's), conv -> BatchNorm (foldable)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared, self.bn_a, self.bn_b = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.bn_relu = nn.BatchNorm2d(3)
        self.conv, self.bn = nn.Conv2d(3, 4, 1, bias=True), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shared(x)
        return self.bn_a(y).sum() + self.bn_b(y).sum() + self.bn_relu(torch.relu(x)).sum() + self.bn(self.conv(x)).sum()


def test_only_exclusive_conv_batchnorm_pairs_fold():
    model = _Shared().eval()
    _randomise_bn(model)
    x = torch.randn(2, 3, 8, 8)
    assert conv_bn_pairs(model, lambda: (model(x), model(x))) == [("conv", "bn")]  # two passes count once
    want = model(x)
    assert fold_batchnorms(model, lambda: model(x)) == ["bn"]
    assert isinstance(model.bn, nn.Identity) and isinstance(model.bn_a, nn.BatchNorm2d)
    torch.testing.assert_close(model(x), want, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorms(_Shared().train(), lambda: None)
