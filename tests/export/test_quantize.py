"""fp32 bundle -> INT8 Q/DQ bundle: calibrated on CSS-2D samples, Q/DQ inside the experts' If
branches, the same contract, runnable on ONNX Runtime; a quantized bundle is not quantized again."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tgir.calib.data import CalibData
from tgir.calib.qdq import QuantConfig
from tgir.export.check import check_graphs
from tgir.export.quantize import quantized_from_bundle

from tgir.errors import TgirUserError
from tgir.manifest import Manifest


@pytest.fixture
def fp32_bundle(tiny_amc_bundle):
    return tiny_amc_bundle


@pytest.mark.parametrize("flavour", ["tensorrt", "cpu"])
def test_quantized_bundle(fp32_bundle, tmp_path, tiny_css2d, flavour):
    data = CalibData("css2d", str(tiny_css2d), samples=32, batch=16)
    manifest, ranges = quantized_from_bundle(fp32_bundle, tmp_path / flavour, data,
                                             QuantConfig(flavour=flavour, method="percentile"))
    assert manifest.precision == "int8" and manifest.build["quantization"]["flavour"] == flavour
    assert manifest.router == Manifest.load(fp32_bundle).router
    assert any(name.startswith("layers.0.experts.2") for name in ranges)  # CRN, inside an If
    composer = onnx.load(str(tmp_path / flavour / "composer.onnx"))
    branch_ops = [n.op_type for node in composer.graph.node if node.op_type == "If" for a in node.attribute
                  for n in a.g.node]
    assert "DequantizeLinear" in branch_ops and "QuantizeLinear" in branch_ops
    text_ops = {n.op_type for n in onnx.load(str(tmp_path / flavour / "text_encoder.onnx")).graph.node}
    # cpu: ONNX Runtime's int8-weight LSTM; tensorrt: a float LSTM (TensorRT cannot parse the contrib op)
    assert ("DynamicQuantizeLSTM" in text_ops) == (flavour == "cpu") and ("LSTM" in text_ops) == (flavour != "cpu")
    assert manifest.build["quantization"]["lstm"].startswith("int8" if flavour == "cpu" else "float")
    image_ops = {n.op_type for n in onnx.load(str(tmp_path / flavour / "image_encoder.onnx")).graph.node}
    assert "BatchNormalization" not in image_ops and "QuantizeLinear" in image_ops  # folded before quantizing
    # tensorrt: the lint passes; cpu: uint8 activations are for ONNX Runtime, the lint says so.
    report = check_graphs(tmp_path / flavour, tensorrt="10.15")
    assert report.ok == (flavour == "tensorrt"), report.problems
    if flavour == "cpu":
        assert any("UINT8" in p for p in report.problems)
    session = ort.InferenceSession(str(tmp_path / flavour / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    gallery, _ = session.run(None, {"images": np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)})
    np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-4)
    with pytest.raises(TgirUserError, match="already int8"):
        quantized_from_bundle(tmp_path / flavour, tmp_path / "again", data, QuantConfig())
    if flavour == "tensorrt":
        _check_caches(fp32_bundle, tmp_path / flavour, ranges)


def _check_caches(fp32_bundle, bundle, ranges):
    """One TensorRT calibration cache per graph, keyed by the fp32 graphs' tensors (inside If bodies
    too), each entry the amax of the calibrated module that reads the tensor."""
    from tgir.calib.cache import read_calibration_cache

    facts = Manifest.load(bundle).build["quantization"]["calibration_caches"]  # checksums verified by load
    assert facts["tensorrt"] == "10.3.0" and facts["modules_without_a_tensor"] == []
    composer = onnx.load(str(fp32_bundle / "composer.onnx"))
    bodies = {t for node in composer.graph.node if node.op_type == "If" for a in node.attribute
              for n in a.g.node for t in n.input}
    for graph, entry in facts["graphs"].items():
        number, algorithm, amax = read_calibration_cache(bundle / entry["file"])
        assert (number, algorithm, len(amax)) == (100300, "EntropyCalibration2", entry["tensors"])
        if graph == "composer":
            assert bodies & set(amax)  # the experts' MatMul inputs inside the If branches
        if graph == "image_encoder":  # the stem conv reads the image itself and stays float by default
            assert "images" not in amax and "backbone.conv1" not in ranges
        assert all(v > 0 for v in amax.values())
    assert facts["graphs"]["image_encoder"]["tensors"] > 10 and facts["graphs"]["composer"]["tensors"] > 5


def test_int8_lstm_weights_on_the_shipped_text_graph(shipped_amc_bundle, tmp_path):
    import shutil

    from tgir.calib.lstm import quantize_lstm_weights

    from tgir.vocab import Vocabulary

    shutil.copy(shipped_amc_bundle / "text_encoder.onnx", tmp_path / "t.onnx")
    assert quantize_lstm_weights(tmp_path / "t.onnx") == 1
    assert quantize_lstm_weights(tmp_path / "t.onnx") == 0  # nothing left to rewrite
    vocab = Vocabulary.load(shipped_amc_bundle / "vocab.json")
    texts = ["add red circle to top-left", "remove gray square", "make middle-center blue triangle small",
             "add green cylinder to bottom-right and remove blue circle"]
    ids, lengths = vocab.encode_batch(texts, 32)
    want, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
        None, {"ids": ids, "lengths": lengths})[0]
        for p in (shipped_amc_bundle / "text_encoder.onnx", tmp_path / "t.onnx"))
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    # int8 weights: close (measured 0.99999 on CSS texts), not identical (the op really changed)
    assert cos.min() > 0.9995 and not np.array_equal(want, got), cos
    with pytest.raises(TgirUserError, match="TensorRT cannot parse"):
        QuantConfig(flavour="tensorrt", int8_lstm=True)


def test_calibrate_cli(fp32_bundle, tmp_path, tiny_css2d, capsys):
    import json

    from tgir.export.cli import main

    args = ["calibrate", "--bundle", str(fp32_bundle), "--data", str(tiny_css2d), "--samples", "32",
            "--method", "max", "--out", str(tmp_path / "q"), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["precision"] == "int8" and out["quantization"]["method"] == "max"
    assert out["quantization"]["split"] == "train"
    assert main([*args[:-3], "--samples", "8", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "too few calibration samples (8)" in err and "Traceback" not in err


def test_calibrate_cli_checks_flags_first(fp32_bundle, tmp_path, tiny_css2d, monkeypatch, refuses_each):
    import tgir.export.quantize as quantize
    from tgir.export.cli import main

    def never(*args, **kwargs):
        raise AssertionError("calibration started before the flags were checked")

    monkeypatch.setattr(quantize, "quantized_from_bundle", never)
    args = ["calibrate", "--bundle", str(fp32_bundle), "--data", str(tiny_css2d), "--out", str(tmp_path / "q")]
    cases = [(["--split", "test", "--samples", "32"], "never come from the test split (that would "
                                                       "tune on it); valid choices for css2d: 'train'"),
             (["--split", "val", "--samples", "32"], "unknown css2d calibration split 'val'; valid "
                                                      "choices: 'train'"),
             (["--percentile", "150", "--samples", "32"], "percentile must be in (0, 100]"),
             (["--samples", "5000"], "asked for 5000 calibration samples")]
    refuses_each(main, args, cases)
    assert not (tmp_path / "q").exists()


def test_calibrate_summary(fp32_bundle, tmp_path, capsys):
    """Without --json, calibrate says what it wrote where and the key numbers (no JSON)."""
    from tgir.export.summary import calibrate_what, written_lines

    quantization = {"flavour": "cpu", "method": "percentile", "percentile": 99.99, "samples": 512,
                    "dataset": "css2d", "split": "train", "tensors": 40}
    report = {"ok": True, "graphs": {"composer": {"nodes": 9, "nodes_with_subgraphs": 20, "if_nodes": 3,
                                                  "params": 2_500_000, "bytes": 3 << 20}}, "problems": []}
    lines = written_lines("q8", calibrate_what(quantization), ["composer.onnx", "manifest.json"], report)
    assert lines == ["wrote q8/ (int8, cpu flavour, percentile 99.99, 512 samples from css2d train, "
                     "40 quantized tensors): composer.onnx, manifest.json", "check passed:",
                     "  composer: 9 nodes (20 with If bodies, 3 If), 2.50M params, 3.0 MiB"]
