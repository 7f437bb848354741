"""Shared fixtures: a tiny CSS-2D dataset generated once per test session."""

from __future__ import annotations

import pytest

from tgir.data.css2d import Css2dConfig, write_css2d

TINY = Css2dConfig(seed=7, scale=0.01)  # 10 base scenes per split: 190 images, 180 queries


@pytest.fixture(scope="session")
def tiny_css2d(tmp_path_factory):
    """Path of a tiny CSS-2D dataset (do not modify it; copy it first)."""
    root = tmp_path_factory.mktemp("css2d")
    write_css2d(TINY, root)
    return root
