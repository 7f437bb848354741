"""Polygraphy (NVIDIA's inspection tool, from PyPI; ONNX only here) reads every exported graph."""

from __future__ import annotations

import re
import shutil
import subprocess

import onnx
import pytest
import torch
from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

from tgir.models.base import build_model
from tgir.training.checkpoint import save_checkpoint
from tgir.training.config import RunConfig
from tgir.vocab import Vocabulary

POLYGRAPHY = shutil.which("polygraphy")


@pytest.mark.skipif(POLYGRAPHY is None, reason="polygraphy is not installed (pip install -e '.[dev]')")
def test_polygraphy_inspects_every_graph(tiny, tmp_path):
    torch.manual_seed(0)
    cfg = tiny("amc")
    save_checkpoint(tmp_path / "m.pt", RunConfig(cfg), Vocabulary(["a"]), build_model(cfg))
    onnx_from_checkpoint(tmp_path / "m.pt", tmp_path / "b", OnnxConfig(tau=0.4, max_batch=4, text_length=5))
    for graph in ("image_encoder", "text_encoder", "composer"):
        path = tmp_path / "b" / f"{graph}.onnx"
        done = subprocess.run([POLYGRAPHY, "inspect", "model", str(path)], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        nodes = int(re.search(r"---- (\d+) Node\(s\) ----", done.stdout).group(1))
        assert nodes == len(onnx.load(str(path)).graph.node), done.stdout
