"""What all families share: the registry, presets, and the feature-cache path of encode_image."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tgir.errors import TgirUserError
from tgir.models.base import FAMILIES, build_model
from tgir.models.config import ModelConfig, replace_path
from tgir.models.presets import preset


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_features_path_equals_image_path(tiny, family):
    torch.manual_seed(0)
    model = build_model(tiny(family)).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model.encode_image(images)
        b = model.encode_image(model.backbone(images))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dataset", ["css2d", "fashioniq"])
def test_presets_round_trip(family, dataset):
    cfg = preset(family, dataset)
    assert cfg.family == family and cfg.image_size == (128 if dataset == "css2d" else 224)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    if family == "amc":  # the paper's routed layers (router.residual was measured and not adopted)
        assert not cfg.router.residual


def test_unknown_names_list_choices():
    with pytest.raises(TgirUserError, match="unknown model 'clip'; valid choices: 'amc', 'itma', 'tirg'"):
        preset("clip")
    with pytest.raises(TgirUserError, match="unknown expert 'moe'; valid choices: 'nin', 'gtn', 'crn'"):
        replace_path(preset("amc"), "router.experts", ["nin", "moe"])
    with pytest.raises(TgirUserError, match="unknown backbone 'vit'"):
        replace_path(preset("amc"), "backbone.name", "vit")


def test_config_from_dict_rejects_mismatch():
    data = preset("amc").to_dict()
    data["config_version"] = 99
    with pytest.raises(TgirUserError, match="model config version 99"):
        ModelConfig.from_dict(data)
    data = preset("amc").to_dict()
    del data["router"]["tau"]
    assert ModelConfig.from_dict(data).router.tau == 0.0  # missing fields take their defaults
    data["text"]["width"] = 3
    with pytest.raises(TgirUserError, match=r"model config\.text: unknown field\(s\) width"):
        ModelConfig.from_dict(data)


def test_digest_tracks_every_field():
    cfg = preset("amc")
    assert cfg.digest() == preset("amc").digest()
    assert cfg.digest() != cfg.replace(router=dataclasses.replace(cfg.router, tau=0.1)).digest()
