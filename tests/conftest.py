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


@pytest.fixture(scope="session")
def tiny_amc_bundle(tmp_path_factory, tiny_css2d):
    """An fp32 bundle of a tiny AMC (tau 0.4, If router, max batch 8, text length 8) whose vocabulary
    is the tiny CSS-2D training split's; the checkpoint is ``<bundle>/../m.pt``. Read-only: copy it
    before changing anything."""
    import torch
    from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

    from tgir.data.registry import load_split
    from tgir.models.base import build_model
    from tgir.training.checkpoint import save_checkpoint
    from tgir.training.config import RunConfig
    from tgir.vocab import Vocabulary

    root = tmp_path_factory.mktemp("amc_bundle")
    torch.manual_seed(0)
    cfg = tiny_config("amc")
    vocab = Vocabulary.build(q.text for q in load_split("css2d", tiny_css2d, "train").queries)
    cfg = cfg.replace(text=cfg.text.__class__(**{**cfg.text.__dict__, "vocab_size": len(vocab)}))
    save_checkpoint(root / "m.pt", RunConfig(cfg), vocab, build_model(cfg))
    onnx_from_checkpoint(root / "m.pt", root / "fp32", OnnxConfig(tau=0.4, max_batch=8, text_length=8))
    return root / "fp32"


@pytest.fixture(scope="session")
def shipped_amc_bundle(tmp_path_factory):
    """The shipped AMC checkpoint (trained/amc_css2d.pt) exported to an fp32 bundle, max batch 16
    (about 30 s). Read-only: copy it before changing anything."""
    from tgir.export.build import shipped_checkpoint
    from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

    bundle = tmp_path_factory.mktemp("amc_shipped") / "fp32"
    onnx_from_checkpoint(shipped_checkpoint(), bundle, OnnxConfig(max_batch=16))
    return bundle


@pytest.fixture(scope="session")
def tiny_aoti_bundle(tmp_path_factory, tiny_amc_bundle):
    """A copy of ``tiny_amc_bundle`` with AOTInductor objects of its graphs (``aoti/*.so``, CPU).
    Compiling costs about 50 s on two cores (g++). Read-only: copy it before changing anything."""
    import shutil

    from tgir.export.aoti import AotiConfig, aoti_from_bundle

    bundle = tmp_path_factory.mktemp("aoti_bundle") / "fp32"
    shutil.copytree(tiny_amc_bundle, bundle)
    aoti_from_bundle(bundle, AotiConfig(device="cpu"))
    return bundle
