"""The fused query graph: one ONNX graph for image encoder + text encoder + composer, the same answers
as the three graphs (If branches included), used by the ONNX Runtime runner, dropped when stale."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from tgir.export.fuse import query_graph_from_bundle
from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint
from tgir.runtime.ort import OrtOptions, OrtRunner, save_optimized

from tgir.errors import TgirUserError
from tgir.manifest import Manifest
from tgir.models.base import build_model
from tgir.training.checkpoint import save_checkpoint
from tgir.training.config import RunConfig
from tgir.vocab import Vocabulary

WORDS = [f"w{i}" for i in range(16)]


def _fused_copy(bundle, tmp_path, name="b"):
    folder = tmp_path / name
    shutil.copytree(bundle, folder)
    manifest = Manifest.load(folder)
    entry = query_graph_from_bundle(folder, manifest)
    manifest.save(folder)
    return folder, entry


def _queries(runner, n, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((n, 3, 64, 64)).astype(np.float32)
    words = runner.vocab.itos[4:]  # the bundle's own words (after the specials)
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(n)]
    return pixels, texts


def _separate(folder, pixels, texts):
    with OrtRunner(folder, OrtOptions(fused=False)) as runner:
        assert not runner.fused
        return runner.encode_queries(pixels, texts)


def test_fused_amc_equals_the_three_graphs(tiny_amc_bundle, tmp_path):
    folder, entry = _fused_copy(tiny_amc_bundle, tmp_path)
    graph = onnx.load(str(folder / entry["file"])).graph
    assert [i.name for i in graph.input] == ["images", "ids", "lengths"]
    assert [o.name for o in graph.output] == ["query"]
    assert sum(n.op_type == "If" for n in graph.node) == 6  # 2 layers x 3 experts kept conditional
    with OrtRunner(folder) as runner:
        assert set(runner.fused) == {"query_encoder"} and "query_encoder" in runner.sessions
        calls = []
        run = runner._run
        runner._run = lambda g, feeds: calls.append(g) or run(g, feeds)
        pixels, texts = _queries(runner, 11)  # two batches of max batch 8
        fused = runner.encode_queries(pixels, texts)
    assert calls == ["query_encoder", "query_encoder"]
    want = _separate(folder, pixels, texts)
    assert fused.shape == want.shape == (11, 32)
    assert np.abs(fused - want).max() <= 1e-6


def test_fused_itma_takes_token_text_features(tiny, tmp_path):
    torch.manual_seed(0)
    cfg = tiny("itma")
    ckpt = tmp_path / "itma.pt"
    save_checkpoint(ckpt, RunConfig(cfg), Vocabulary(WORDS), build_model(cfg).eval())
    onnx_from_checkpoint(ckpt, tmp_path / "src", OnnxConfig(max_batch=4, text_length=6))
    folder, entry = _fused_copy(tmp_path / "src", tmp_path)
    assert [t["name"] for t in entry["inputs"]] == ["images", "ids", "lengths"]
    with OrtRunner(folder) as runner:
        pixels, texts = _queries(runner, 5, seed=1)
        fused = runner.encode_queries(pixels, texts)
    assert np.abs(fused - _separate(folder, pixels, texts)).max() <= 1e-6


def test_saved_optimized_fused_graph(tiny_amc_bundle, tmp_path):
    folder, _ = _fused_copy(tiny_amc_bundle, tmp_path)
    manifest = Manifest.load(folder)
    entry = save_optimized(folder, manifest)
    manifest.save(folder)
    assert entry["files"]["query_encoder"] == "query_encoder.ort.onnx"
    with OrtRunner(folder) as runner:
        assert runner.sessions["query_encoder"]._model_path.endswith("query_encoder.ort.onnx")
        pixels, texts = _queries(runner, 3)
        fused = runner.encode_queries(pixels, texts)
    assert np.abs(fused - _separate(folder, pixels, texts)).max() <= 1e-5


def test_stale_fused_graph_is_not_used(tiny_amc_bundle, tmp_path):
    folder, _ = _fused_copy(tiny_amc_bundle, tmp_path)
    manifest = Manifest.load(folder)
    manifest.build["fused"]["query_encoder"]["from"]["composer"] = "0" * 64  # fused from another composer
    manifest.save(folder)
    with pytest.warns(UserWarning, match="fused query_encoder graph was made from other graph files"):
        runner = OrtRunner(folder)
    assert not runner.fused and "query_encoder" not in runner.sessions
    pixels, texts = _queries(runner, 2)
    np.testing.assert_array_equal(runner.encode_queries(pixels, texts), _separate(folder, pixels, texts))


def test_fused_inputs_are_validated(tiny_amc_bundle, tmp_path):
    folder, _ = _fused_copy(tiny_amc_bundle, tmp_path)
    runner = OrtRunner(folder)
    pixels, _ = _queries(runner, 1)
    with pytest.raises(TgirUserError, match=r"query_encoder: inputs are \['images', 'ids', 'lengths'\]"):
        runner.run("query_encoder", {"images": pixels})
    with pytest.raises(TgirUserError, match="query_encoder input ids: axis 1 is 5, expected 8"):
        runner.run("query_encoder", {"images": pixels, "ids": np.zeros((1, 5), np.int64),
                                     "lengths": np.ones(1, np.int64)})


def test_fusing_needs_every_graph(tiny_amc_bundle, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(tiny_amc_bundle, folder)
    manifest = Manifest.load(folder)
    del manifest.graphs["text_encoder"]
    with pytest.raises(TgirUserError, match="without the text_encoder graph"):
        query_graph_from_bundle(folder, manifest)


def test_fp16_conversion_drops_the_fused_graph(tiny_amc_bundle, tmp_path):
    from tgir.calib.fp16 import fp16_from_bundle

    folder, entry = _fused_copy(tiny_amc_bundle, tmp_path)
    half = fp16_from_bundle(folder, tmp_path / "fp16")
    assert "fused" not in half.build and entry["file"] not in half.files
    assert not (tmp_path / "fp16" / entry["file"]).exists()
