"""fp32 bundle -> FP16 (mixed precision) bundle: fp16 inside the AMC experts' If branches, blocked ops
and the router in fp32, the same float32 I/O contract, runnable on ONNX Runtime CPU close to fp32."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from tgir.calib.fp16 import DEFAULT_KEEP_OPS, Fp16Config, convert_model, fp16_from_bundle
from tgir.export.check import check_graphs
from tgir.export.lint import lint_model

from tgir.errors import TgirUserError
from tgir.manifest import Manifest

# Tolerance of the fp16 bundle against the fp32 one (ONNX Runtime CPU, L2-normalised embeddings):
# fp16 keeps ~3 decimal digits, so unit vectors may differ by a few 1e-3 per element.
MAX_ABS, MIN_COSINE = 1e-2, 0.999


@pytest.fixture(scope="module")
def fp16_bundle(tiny_amc_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "fp16"
    manifest = fp16_from_bundle(tiny_amc_bundle, out)
    return out, manifest


def _types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    return {**types, **{i.name: i.data_type for i in graph.initializer}}


def _walk(graph: onnx.GraphProto, types: dict[str, int]):
    """(node, element types visible to it) for every node, subgraphs included."""
    types = {**types, **_types(graph)}
    for node in graph.node:
        yield node, types
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g, types)


def test_manifest_and_checks(fp16_bundle, tiny_amc_bundle):
    out, manifest = fp16_bundle
    source = Manifest.load(tiny_amc_bundle)
    assert Manifest.load(out).precision == manifest.precision == "fp16"
    for section in ("model", "graphs", "preprocess", "tokenizer", "router"):
        assert getattr(manifest, section) == getattr(source, section), section  # the contract is unchanged
    facts = manifest.build["fp16"]
    assert facts["converter"] == "tgir.calib.fp16" and facts["keep_ops"] == list(DEFAULT_KEEP_OPS)
    assert facts["graphs"]["composer"]["fp16_nodes"] > 0 and facts["graphs"]["composer"]["fp32_nodes"] > 0
    assert len(manifest.build["source_bundle_sha256"]) == 64
    assert (out / "vocab.json").read_bytes() == (tiny_amc_bundle / "vocab.json").read_bytes()
    report = check_graphs(out, tensorrt="10.15")  # checker (full), strict shape inference, hygiene, TensorRT lint
    assert report.ok, report.problems


def test_fp16_inside_if_branches(fp16_bundle):
    composer = onnx.load(str(fp16_bundle[0] / "composer.onnx"))
    assert not lint_model(composer, tensorrt="10.15")  # includes: both branches' outputs agree in dtype
    ifs = [n for n in composer.graph.node if n.op_type == "If"]
    assert len(ifs) == 6  # 2 layers x 3 experts
    heavy = 0
    for node in ifs:
        then, other = (a.g for a in sorted(node.attribute, key=lambda a: a.name != "then_branch"))
        assert [o.type.tensor_type.elem_type for o in then.output] == [o.type.tensor_type.elem_type
                                                                       for o in other.output]
        for inner, types in _walk(then, _types(composer.graph)):
            if inner.op_type in ("MatMul", "Gemm"):  # the experts' weights and matmuls run in fp16
                heavy += 1
                assert types[inner.input[0]] == types[inner.input[1]] == TensorProto.FLOAT16, inner.name
    assert heavy >= 20  # GTN: 2 Gemm, CRN: 8 MatMul, per layer


@pytest.mark.parametrize("graph", ["image_encoder", "text_encoder", "composer"])
def test_blocked_ops_stay_fp32(fp16_bundle, graph):
    model = onnx.load(str(fp16_bundle[0] / f"{graph}.onnx"))
    for node, types in _walk(model.graph, _types(model.graph)):
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if node.op_type in DEFAULT_KEEP_OPS or ".router" in scopes:
            floats = [types[t] for t in [*node.input, *node.output] if t and types.get(t) in
                      (TensorProto.FLOAT, TensorProto.FLOAT16)]
            assert floats and set(floats) == {TensorProto.FLOAT}, (node.op_type, node.name)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] != [TensorProto.FLOAT16]
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {TensorProto.FLOAT}


def test_keep_ops_and_clamping():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])
    w = onnx.numpy_helper.from_array(np.full((4, 4), 1e6, np.float32), "w")  # beyond fp16: clamped to 65504
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    _, facts = convert_model(model)
    assert facts["fp16_nodes"] == 2 and facts["casts"] == 2 and facts["clamped_values"] == 16
    kept, facts = convert_model(model, Fp16Config(keep_ops=("MatMul",)))  # Relu follows its fp32 input
    assert (facts["fp16_nodes"], facts["fp32_nodes"], facts["casts"]) == (0, 2, 0)
    assert kept.graph.initializer[0].data_type == TensorProto.FLOAT
    out = ort.InferenceSession(kept.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.ones((2, 4), np.float32)})[0]
    np.testing.assert_allclose(out, 4e6)


def _embed(folder, images, ids, lengths):
    def run(graph, feeds):
        return ort.InferenceSession(str(folder / f"{graph}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)

    gallery, tokens = run("image_encoder", {"images": images})
    text = run("text_encoder", {"ids": ids, "lengths": lengths})
    query = run("composer", {"tokens": tokens, "text_features": text[0]})[0]
    return {"gallery": gallery, "text": text[0], "query": query}


def test_onnxruntime_close_to_fp32(fp16_bundle, tiny_amc_bundle):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 3, 64, 64)).astype(np.float32)
    ids = rng.integers(4, 12, size=(8, 8)).astype(np.int64)
    lengths = np.array([8, 1, 3, 5, 8, 2, 7, 4], dtype=np.int64)
    ref, got = _embed(tiny_amc_bundle, images, ids, lengths), _embed(fp16_bundle[0], images, ids, lengths)
    for name in ("gallery", "query"):  # L2-normalised outputs
        np.testing.assert_allclose(np.linalg.norm(got[name], axis=1), 1.0, atol=1e-4)
    for name in ref:
        a, b = ref[name], got[name]
        cosine = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert np.abs(a - b).max() <= MAX_ABS and cosine.min() >= MIN_COSINE, name


def test_float16_io(tiny_amc_bundle, tmp_path):
    manifest = fp16_from_bundle(tiny_amc_bundle, tmp_path / "b", Fp16Config(keep_io_types=False))
    assert [t["dtype"] for t in manifest.graphs["composer"]["inputs"]] == ["float16", "float16"]
    assert check_graphs(tmp_path / "b", tensorrt="10.15").ok
    session = ort.InferenceSession(str(tmp_path / "b" / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    gallery, _ = session.run(None, {"images": np.zeros((1, 3, 64, 64), np.float16)})
    assert gallery.dtype == np.float16


def test_refusals(fp16_bundle, tiny_amc_bundle, tmp_path):
    with pytest.raises(TgirUserError, match="already fp16"):
        fp16_from_bundle(fp16_bundle[0], tmp_path / "again")
    shutil.copytree(tiny_amc_bundle, tmp_path / "int8")
    manifest = Manifest.load(tmp_path / "int8")
    manifest.precision = "int8"
    manifest.save(tmp_path / "int8")
    with pytest.raises(TgirUserError, match="already int8"):
        fp16_from_bundle(tmp_path / "int8", tmp_path / "again")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(TgirUserError, match="not empty; pass --overwrite"):
        fp16_from_bundle(tiny_amc_bundle, tmp_path / "full")
    assert (tmp_path / "full" / "x").exists() and not (tmp_path / "again").exists()


def test_fp16_cli(tiny_amc_bundle, tmp_path, capsys):
    from tgir.export.cli import main

    args = ["fp16", "--bundle", str(tiny_amc_bundle), "--out", str(tmp_path / "h"), "--keep-op", "Softmax"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()  # by default a summary for people
    assert out[0].startswith(f"wrote {tmp_path / 'h'}/ (fp16, fp32 kept for ops Softmax and modules *router*): ")
    assert "manifest.json" in out[0] and out[1] == "check passed:"
    assert main(args) == 1  # --out is not empty now
    err = capsys.readouterr().err
    assert "not empty; pass --overwrite" in err and "Traceback" not in err
    assert main([*args, "--overwrite", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["precision"] == "fp16" and out["fp16"]["keep_ops"] == ["Softmax"]
    source = tmp_path / "source"
    shutil.copytree(tiny_amc_bundle, source)
    assert main(["fp16", "--bundle", str(source), "--out", str(source), "--overwrite"]) == 1
    assert "is the source bundle; write the fp16 bundle elsewhere" in capsys.readouterr().err


def test_fp32_artefacts_not_carried(tiny_amc_bundle, tmp_path):
    """ONNX Runtime's saved optimised graphs (and TensorRT engines) describe the fp32 graphs: dropped."""
    from tgir.runtime.ort import save_optimized

    shutil.copytree(tiny_amc_bundle, tmp_path / "src")
    manifest = Manifest.load(tmp_path / "src")
    saved = save_optimized(tmp_path / "src", manifest)
    manifest.save(tmp_path / "src")
    new = fp16_from_bundle(tmp_path / "src", tmp_path / "h")
    assert "onnxruntime_optimized" not in new.build and new.backend == "onnxruntime"
    assert not set(saved["files"].values()) & set(new.files) and not list((tmp_path / "h").glob("*.ort.onnx"))
    assert sorted(new.files) == sorted(Manifest.load(tiny_amc_bundle).files)


def test_itma_float_mask_output_keeps_one_producer(tiny, tmp_path):
    # ITMA's text graph outputs a float mask made by a Cast of a bool: no float input, so the pass
    # used to defer it and make one copy per precision, both named like the graph output.
    import torch
    from tgir.export.onnx import OnnxConfig, onnx_from_model

    from tgir.models.base import build_model
    from tgir.vocab import Vocabulary

    vocab = Vocabulary.build(["make it red", "add a blue circle"])
    cfg = tiny("itma")
    cfg = cfg.replace(text=cfg.text.__class__(**{**cfg.text.__dict__, "vocab_size": len(vocab)}))
    torch.manual_seed(0)
    onnx_from_model(build_model(cfg), vocab, tmp_path / "fp32", OnnxConfig(max_batch=4, text_length=8))
    fp16_from_bundle(tmp_path / "fp32", tmp_path / "fp16")
    lengths = np.array([8, 3], np.int64)
    ids = np.where(np.arange(8)[None] < lengths[:, None], 5, 0).astype(np.int64)
    want, got = (ort.InferenceSession(str(tmp_path / b / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
                 .run(None, {"ids": ids, "lengths": lengths}) for b in ("fp32", "fp16"))
    names = [o.name for o in onnx.load(str(tmp_path / "fp16" / "text_encoder.onnx")).graph.output]
    mask = names.index("text_mask")
    np.testing.assert_array_equal(got[mask], want[mask])  # 0/1 exactly, in float32
    assert got[mask].dtype == np.float32
    for i in range(len(names)):
        np.testing.assert_allclose(got[i], want[i], atol=2e-2)
