"""Shared fixtures: a tiny CSS-2D dataset generated once per test session, tiny model configs."""

from __future__ import annotations

import pytest

from tgir.data.css2d import Css2dConfig, write_css2d
from tgir.models.config import BackboneConfig, CombinerConfig, ModelConfig, RouterConfig, TextConfig

TINY = Css2dConfig(seed=7, scale=0.01)  # 10 base scenes per split: 190 images, 180 queries


@pytest.fixture(scope="session")
def tiny_css2d(tmp_path_factory):
    """Path of a tiny CSS-2D dataset (do not modify it; copy it first)."""
    root = tmp_path_factory.mktemp("css2d")
    write_css2d(TINY, root)
    return root


def tiny_config(family: str = "amc", **changes) -> ModelConfig:
    """A 64 px, 32-wide model with a random ResNet-18 trunk (seconds on CPU)."""
    cfg = ModelConfig(
        family=family,
        image_size=64,
        embed_dim=32,
        backbone=BackboneConfig("resnet18", levels=(32,), weights="none"),
        text=TextConfig(vocab_size=20, word_dim=8, hidden=32),
        router=RouterConfig(hidden=16, heads=4, ffn=32),
        combiner=CombinerConfig(blocks=1, heads=4, ffn=32, dropout=0.0),
    )
    return cfg.replace(**changes)


@pytest.fixture
def tiny():
    return tiny_config
