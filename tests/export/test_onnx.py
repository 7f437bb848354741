"""tgir-export onnx: graphs per family, If nodes for the router, ORT parity, atomic bundles."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tgir.export.check import check_graphs, hygiene
from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

from tgir.errors import TgirUserError
from tgir.manifest import Manifest
from tgir.models.base import build_model
from tgir.models.config import replace_path
from tgir.training.checkpoint import model_from_checkpoint, save_checkpoint
from tgir.training.config import RunConfig
from tgir.vocab import Vocabulary

TEXT_LENGTH = 6


def _checkpoint(tiny, tmp_path, family="amc", nan_crn=False, change=None):
    torch.manual_seed(0)
    cfg = tiny(family)
    if change:  # one config option away from the paper: (path, value), e.g. ("router.residual", True)
        cfg = replace_path(cfg, *change)
    model = build_model(cfg).eval()
    if nan_crn:  # CRN's gate is sigmoid(0) = 0.5 < tau and its weights are NaN: it must never run
        crn = cfg.router.experts.index("crn")
        with torch.no_grad():
            for layer in model.layers:
                layer.router.net[-1].weight[crn].zero_()
                for p in layer.experts[crn].parameters():
                    p.fill_(float("nan"))
    path = tmp_path / f"{family}.pt"
    save_checkpoint(path, RunConfig(cfg), Vocabulary([f"w{i}" for i in range(16)]), model)
    return path


def _session(folder, graph):
    return ort.InferenceSession(str(folder / f"{graph}.onnx"), providers=["CPUExecutionProvider"])


def _if_nodes(path) -> int:
    return sum(n.op_type == "If" for n in onnx.load(str(path)).graph.node)


def _inputs(batch, seed=0, length=None):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 64, 64, generator=g)
    lengths = torch.randint(1, TEXT_LENGTH + 1, (batch,), generator=g)
    lengths[0] = TEXT_LENGTH  # the longest text and the shortest in every batch
    lengths[-1] = 1
    if length is not None:
        lengths[:] = length
    ids = torch.randint(4, 20, (batch, TEXT_LENGTH), generator=g)
    ids[torch.arange(TEXT_LENGTH)[None] >= lengths[:, None]] = 0
    return images, ids, lengths


@pytest.mark.parametrize(("family", "tau", "router", "ifs", "change"), [
    ("amc", 0.5, "if", 6, None), ("amc", 0.5, "dense", 0, None), ("amc", 0.0, "if", 0, None),
    ("amc", 0.5, "if", 6, ("router.residual", True)), ("amc", 0.5, "if", 6, ("router.position", True)),
    ("amc", 0.5, "if", 6, ("text.pooling", "last")), ("itma", None, "if", 0, None), ("tirg", None, "if", 0, None)])
def test_export_and_parity(tiny, tmp_path, family, tau, router, ifs, change):
    cfg = OnnxConfig(tau=tau, router=router, max_batch=8, text_length=TEXT_LENGTH)
    checkpoint = _checkpoint(tiny, tmp_path, family, change=change)
    manifest = onnx_from_checkpoint(checkpoint, tmp_path / "bundle", cfg)
    folder = tmp_path / "bundle"
    assert Manifest.load(folder).model["family"] == family
    assert _if_nodes(folder / "composer.onnx") == ifs
    if family == "amc":
        assert manifest.router["form"] == ("dense" if tau == 0 else router)
    model, _ = model_from_checkpoint(tmp_path / f"{family}.pt")
    if family == "amc":
        router_cfg = dataclasses.replace(model.config.router, tau=tau, conditional=False)
        for layer in model.layers:
            layer.cfg = router_cfg
    image, text, composer = (_session(folder, g) for g in ("image_encoder", "text_encoder", "composer"))
    assert check_graphs(folder).ok  # checker, shape inference, hygiene, TensorRT lint
    for batch, length in ((1, 1), (1, TEXT_LENGTH), (7, None)):
        images, ids, lengths = _inputs(batch, seed=batch, length=length)
        with torch.no_grad():
            gallery, tokens = model.encode_image(images)
            feats = model.encode_text(ids, lengths)
            query = model.compose(tokens, *feats)
        got_gallery, got_tokens = image.run(None, {"images": images.numpy()})
        got_text = text.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})
        names = [i.name for i in composer.get_inputs()]
        got_query, = composer.run(None, dict(zip(names, [got_tokens, *got_text], strict=True)))
        np.testing.assert_allclose(got_gallery, gallery.numpy(), atol=1e-4)
        for g, w in zip(got_text, feats, strict=True):
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4)
        np.testing.assert_allclose(got_query, query.numpy(), atol=1e-4)


def test_skipped_branch_is_not_executed(tiny, tmp_path):
    onnx_from_checkpoint(_checkpoint(tiny, tmp_path, nan_crn=True), tmp_path / "b",
                         OnnxConfig(tau=0.6, router="if", max_batch=4, text_length=TEXT_LENGTH))
    composer = _session(tmp_path / "b", "composer")
    tokens = np.random.default_rng(0).normal(size=(2, 4, 32)).astype(np.float32)
    text = np.random.default_rng(1).normal(size=(2, 32)).astype(np.float32)
    query, = composer.run(None, {"tokens": tokens, "text_features": text})
    assert np.isfinite(query).all()


def test_bad_inputs(tiny, tmp_path):
    ckpt = _checkpoint(tiny, tmp_path)
    with pytest.raises(TgirUserError, match=r"opset 12 out of range; valid: 18\.\.23"):
        OnnxConfig(opset=12)
    with pytest.raises(TgirUserError, match="unknown router form 'host'"):
        OnnxConfig(router="host")
    with pytest.raises(TgirUserError, match="--tau applies to AMC only"):
        onnx_from_checkpoint(_checkpoint(tiny, tmp_path, "tirg"), tmp_path / "t", OnnxConfig(tau=0.3))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(TgirUserError, match="exists and is not empty"):
        onnx_from_checkpoint(ckpt, tmp_path / "full")
    (tmp_path / "file").write_text("")
    with pytest.raises(TgirUserError, match="cannot write there"):
        onnx_from_checkpoint(ckpt, tmp_path / "file" / "bundle")
    payload = torch.load(ckpt, weights_only=True)
    payload["run"] = payload["run"].replace('"family": "amc"', '"family": "clip"')
    torch.save(payload, tmp_path / "clip.pt")
    with pytest.raises(TgirUserError, match="unknown model 'clip'; valid choices: 'amc', 'itma', 'tirg'"):
        onnx_from_checkpoint(tmp_path / "clip.pt", tmp_path / "c")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(TgirUserError, match="not a tgir checkpoint"):
        onnx_from_checkpoint(tmp_path / "bad.pt", tmp_path / "o")


def test_failed_export_leaves_nothing_behind(tiny, tmp_path, monkeypatch):
    import tgir.export.onnx as exporter

    def boom(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(exporter, "_export_graph", boom)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        onnx_from_checkpoint(_checkpoint(tiny, tmp_path), tmp_path / "out" / "bundle")
    assert list((tmp_path / "out").iterdir()) == []


def test_parity_on_css2d_samples(tiny, tmp_path, tiny_css2d):
    from tgir.export.parity import parity

    ckpt = _checkpoint(tiny, tmp_path)
    onnx_from_checkpoint(ckpt, tmp_path / "b", OnnxConfig(tau=0.5, max_batch=8, text_length=TEXT_LENGTH))
    result = parity(tmp_path / "b", ckpt, tiny_css2d, queries=20, gallery=60, batch=7)
    assert result["problems"] == [] and result["top10_identical"] == 20 and result["queries"] == 20
    assert result["query_max_abs"] <= 1e-4 and result["gallery"] == 60
    # A composer whose weights drifted after export: parity must fail and say where.
    graph = tmp_path / "b" / "composer.onnx"
    model = onnx.load(str(graph))
    for weight in model.graph.initializer:
        values = onnx.numpy_helper.to_array(weight)
        if values.dtype == np.float32 and values.ndim == 2:
            weight.CopyFrom(onnx.numpy_helper.from_array(values * 1.05, weight.name))
    onnx.save(model, str(graph))
    Manifest.load(tmp_path / "b", verify=False).save(tmp_path / "b")
    result = parity(tmp_path / "b", ckpt, tiny_css2d, queries=20, gallery=60, batch=7)
    assert any(p.startswith("query embeddings: max abs diff") for p in result["problems"]), result
    other = _checkpoint(tiny, tmp_path, "tirg")
    with pytest.raises(TgirUserError, match=r"model config \(digest \w+\) differs .* export the bundle again"):
        parity(tmp_path / "b", other, tiny_css2d)


def test_graphs_are_folded_and_clean(tiny, tmp_path):
    onnx_from_checkpoint(_checkpoint(tiny, tmp_path, "itma"), tmp_path / "b",
                         OnnxConfig(max_batch=4, text_length=TEXT_LENGTH))
    for graph in ("image_encoder", "text_encoder", "composer"):
        facts = hygiene(onnx.load(str(tmp_path / "b" / f"{graph}.onnx")))
        assert facts == {"dead_nodes": [], "unfolded_constants": [], "training_ops": []}, graph
