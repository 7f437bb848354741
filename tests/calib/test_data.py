"""Calibration samples: drawn reproducibly from a dataset through the bundle's preprocessing and
tokenizer; mismatched datasets, quantized bundles and too few samples are refused."""

from __future__ import annotations

import numpy as np
import pytest
from tgir.calib.data import CalibData, calibration_batches, usable_queries

from tgir.data.registry import load_split
from tgir.errors import TgirUserError
from tgir.manifest import Manifest, contract_to_json, io_contract
from tgir.vocab import Vocabulary

LENGTH = 12


def _bundle(folder, tiny, vocab: Vocabulary, precision="fp32", size=None):
    folder.mkdir()
    cfg = tiny("amc")
    vocab.save(folder / "vocab.json")
    prep = {"size": size or cfg.image_size, "resize": None, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "color_order": "RGB", "layout": "NCHW", "dtype": "float32"}
    Manifest(model={"family": "amc", "config_digest": cfg.digest(), "config": cfg.to_dict()},
             graphs={g: {"file": f"{g}.onnx", **spec}
                     for g, spec in contract_to_json(io_contract(cfg, 8, LENGTH)).items()},
             preprocess=prep,
             tokenizer={"vocab_file": "vocab.json", "max_length": LENGTH}, precision=precision,
             files={"vocab.json": ""}).save(folder)
    return folder


def _vocab(root):
    return Vocabulary.build(q.text for q in load_split("css2d", root, "train").queries)


def test_batches_follow_the_bundle(tiny, tmp_path, tiny_css2d):
    bundle = _bundle(tmp_path / "b", tiny, _vocab(tiny_css2d))
    cfg = CalibData("css2d", str(tiny_css2d), samples=40, batch=16, seed=3)
    seen = []
    batches = list(calibration_batches(bundle, cfg, progress=lambda d, n: seen.append((d, n))))
    assert [len(b.ids) for b in batches] == [16, 16, 8] and seen[-1] == (3, 3)
    first = batches[0]
    assert first.references.shape == (16, 3, 64, 64) and first.references.dtype == np.float32
    assert first.ids.shape == (16, LENGTH) and (first.lengths >= 1).all()
    assert (first.ids[np.arange(LENGTH)[None] >= first.lengths[:, None]] == 0).all()  # padded with PAD
    assert abs(float(first.targets.mean())) < 3  # ImageNet-normalised pixels, not raw bytes
    again = next(calibration_batches(bundle, cfg))
    np.testing.assert_array_equal(again.ids, first.ids)  # the seed fixes the draw


def test_refusals(tiny, tmp_path, tiny_css2d):
    with pytest.raises(TgirUserError, match="too few calibration samples"):
        CalibData("css2d", str(tiny_css2d), samples=4)
    with pytest.raises(TgirUserError, match="unknown dataset 'imagenet'"):
        CalibData("imagenet", "x")
    with pytest.raises(TgirUserError, match=r"never come from the test split .*; valid choices for css2d: 'train'"):
        CalibData("css2d", str(tiny_css2d), split="test", samples=32)
    with pytest.raises(TgirUserError, match="unknown css2d calibration split 'val'; valid choices: 'train'"):
        CalibData("css2d", str(tiny_css2d), split="val", samples=32)
    assert CalibData("fashioniq", "x", split="val").split == "val"  # any split but test
    with pytest.raises(TgirUserError, match="expected the CSS data file"):  # before any image is read
        usable_queries(CalibData("css2d", str(tmp_path), samples=32))
    good = CalibData("css2d", str(tiny_css2d), samples=40)
    stranger = _bundle(tmp_path / "s", tiny, Vocabulary(["dress", "shirt"]))
    with pytest.raises(TgirUserError, match=r"100% of the calibration texts' words are unknown"):
        next(calibration_batches(stranger, good))
    quantized = _bundle(tmp_path / "q", tiny, _vocab(tiny_css2d), precision="int8")
    with pytest.raises(TgirUserError, match="already int8"):
        next(calibration_batches(quantized, good))
    resized = _bundle(tmp_path / "r", tiny, _vocab(tiny_css2d), size=96)
    with pytest.raises(TgirUserError, match="makes 96 px images but the image graph takes 64 px"):
        next(calibration_batches(resized, good))
    with pytest.raises(TgirUserError, match="asked for 5000 calibration samples"):
        next(calibration_batches(_bundle(tmp_path / "n", tiny, _vocab(tiny_css2d)),
                                 CalibData("css2d", str(tiny_css2d), samples=5000)))
