"""What all families share: the registry, presets, and the feature-cache path of encode_image."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tgir.errors import TgirUserError
from tgir.models.base import FAMILIES, build_model
from tgir.models.config import ModelConfig, RouterConfig, replace_path
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
    assert cfg.family == family and cfg.image_size == (64 if dataset == "css2d" else 224)
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


@pytest.mark.parametrize(("path", "text", "expected"), [
    ("router.position", "False", False), ("router.position", "true", True), ("router.position", "0", False),
    ("router.position", "TRUE", True), ("router.tau", "0.3", 0.3), ("router.tau", "0", 0.0),
    ("router.layers", "3", 3), ("router.experts", "nin,gtn", ("nin", "gtn")),
    ("router.experts", '["nin", "crn"]', ("nin", "crn")), ("backbone.levels", "16", (16,)),
    ("backbone.levels", "[16, 32]", (16, 32)), ("backbone.weights", "none", "none"),
])
def test_set_text_is_parsed_as_the_field_type(path, text, expected):
    cfg = replace_path(preset("amc"), path, text)
    value = cfg
    for name in path.split("."):
        value = getattr(value, name)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("backbone.trainable", "maybe", "backbone.trainable: expected a boolean (true/false/1/0), got 'maybe'"),
    ("router.tau", "abc", "router.tau: expected a finite number, got 'abc'"),
    ("router.tau", "nan", "router.tau: expected a finite number, got 'nan'"),
    ("router.layers", "1.5", "router.layers: expected an integer, got '1.5'"),
    ("router.layers", 2.0, "router.layers: expected an integer, got 2.0"),
    ("router.conditional", 2, "router.conditional: expected a boolean"),
    ("router.tau", True, "router.tau: expected a finite number, got True"),
    ("text.pooling", 3, "text.pooling: expected text, got 3"),
    ("backbone.levels", "16,,32", "backbone.levels: expected a list of integers (e.g. 6,8), got '16,,32'"),
    ("router", "3", "router is a section; set one of its fields: experts, layers, hidden"),
    ("router", RouterConfig, "router is a section"),
])
def test_set_refuses_values_of_the_wrong_type(path, value, message):
    with pytest.raises(TgirUserError) as err:
        replace_path(preset("amc"), path, value)
    assert message in str(err.value)


def test_set_names_the_full_path_of_nested_fields():
    from tgir.training.config import RunConfig, TrainConfig

    run = RunConfig(preset("amc"), TrainConfig())
    assert replace_path(run, "train.lr_step_epochs", "5").train.lr_step_epochs == (5,)
    assert replace_path(run, "train.options", '{"category": "dress"}').train.options == {"category": "dress"}
    assert replace_path(run, "train.data", '"my data"').train.data == "my data"  # JSON quotes, as before
    with pytest.raises(TgirUserError, match=r"train\.epochs: expected an integer, got 'abc'"):
        replace_path(run, "train.epochs", "abc")
    with pytest.raises(TgirUserError, match=r"train\.batch_size: expected an integer, got '8\.5'"):
        replace_path(run, "train.batch_size", "8.5")
    with pytest.raises(TgirUserError, match=r"model\.router is a section; set one of its fields: experts"):
        replace_path(run, "model.router", "3")
    whole = RouterConfig(layers=1)  # library code may still swap a whole section
    assert replace_path(run, "model.router", whole).model.router == whole


@pytest.mark.parametrize("name", ["amc_dense_css2d", "tirg_css2d", "itma_css2d"])
def test_css2d_presets_are_the_shipped_recipe(name):
    """``tgir train --model F --dataset css2d`` trains what trained/ ships (its card's config)."""
    import json
    from pathlib import Path

    from tgir.training.config import train_preset

    card = json.loads((Path(__file__).resolve().parents[3] / "trained" / f"{name}.json").read_text())["config"]
    model = preset(card["model"]["family"], "css2d").to_dict()
    for key in ("image_size", "embed_dim", "backbone", "combiner", "loss_scale"):
        assert model[key] == ModelConfig.from_dict(card["model"]).to_dict()[key], key
    train = train_preset("css2d")
    for key in ("epochs", "lr", "group_size", "batch_size", "ema_decay", "seed"):
        assert getattr(train, key) == card["train"][key], key
    assert list(train.lr_step_epochs) == card["train"]["lr_step_epochs"]
