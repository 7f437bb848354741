"""The I/O contract and the bundle manifest: shapes per family, checksums, refusal of bad bundles."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tgir.errors import TgirUserError
from tgir.manifest import Manifest, contract_to_json, image_tokens, io_contract
from tgir.models.config import replace_path
from tgir.models.presets import preset


def test_token_counts_per_family():
    assert image_tokens(preset("amc")) == 16  # 128 px, stride 32 -> 4x4
    small = replace_path(replace_path(preset("amc"), "image_size", 64), "backbone.levels", [16])
    assert image_tokens(small) == 16  # 64 px, stride 16 -> 4x4 (the shipped CSS-2D models)
    assert image_tokens(preset("itma", "fashioniq")) == 14 * 14 + 7 * 7
    assert image_tokens(preset("tirg")) == 1


@pytest.mark.parametrize("family", ["amc", "itma", "tirg"])
def test_contract_links_the_graphs(family):
    c = io_contract(preset(family), max_batch=32, text_length=20)
    image, text, composer = c["image_encoder"], c["text_encoder"], c["composer"]
    assert [t.name for t in image.inputs] == ["images"] and image.inputs[0].shape == ("batch", 3, 128, 128)
    assert composer.inputs[0] == image.outputs[1]  # tokens flow from the image encoder
    assert composer.inputs[1:] == text.outputs  # text features flow from the text encoder
    assert text.inputs[0].shape == ("batch", 20) and text.inputs[0].dtype == "int64"
    assert composer.outputs[0].shape == ("batch", 512)
    assert image.dynamic == {"batch": (1, 1, 32)}
    json.dumps(contract_to_json(c))  # serialisable


def _bundle(tmp_path):
    (tmp_path / "composer.onnx").write_bytes(b"graph bytes")
    (tmp_path / "vocab.json").write_text("{}")
    cfg = preset("amc")
    m = Manifest(model={"family": "amc", "config_digest": cfg.digest(), "config": cfg.to_dict()},
                 graphs={"composer": {"file": "composer.onnx", **contract_to_json(io_contract(cfg))["composer"]}},
                 preprocess={"size": 128}, tokenizer={"vocab_file": "vocab.json"},
                 files={"composer.onnx": "", "vocab.json": ""})
    m.save(tmp_path)
    return m


def test_round_trip_and_checksums(tmp_path):
    m = _bundle(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded.to_dict() == json.loads(json.dumps(m.to_dict()))  # JSON has lists, not tuples
    assert len(loaded.files["composer.onnx"]) == 64


def test_refuses_changed_missing_or_foreign(tmp_path):
    _bundle(tmp_path)
    (tmp_path / "composer.onnx").write_bytes(b"graph by")  # truncated
    with pytest.raises(TgirUserError, match=r"composer\.onnx: checksum differs"):
        Manifest.load(tmp_path)
    (tmp_path / "composer.onnx").unlink()
    with pytest.raises(TgirUserError, match=r"composer\.onnx: missing from the bundle"):
        Manifest.load(tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(TgirUserError, match="schema version 99; this tgir reads 2"):
        Manifest.load(tmp_path)
    with pytest.raises(TgirUserError, match=r"no manifest\.json"):
        Manifest.load(tmp_path / "nowhere")


def test_bad_contract_arguments():
    with pytest.raises(TgirUserError, match="opt batch"):
        io_contract(preset("amc"), max_batch=4, opt_batch=8)


def test_manifest_is_torch_free():
    out = subprocess.run([sys.executable, "-c", "import sys, tgir.manifest; print('torch' in sys.modules)"],
                         check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
