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
    assert image_tokens(preset("amc")) == 16  # 64 px, stride 16 -> 4x4 (the shipped CSS-2D models)
    large = replace_path(replace_path(preset("amc"), "image_size", 128), "backbone.levels", [32])
    assert image_tokens(large) == 16  # 128 px, stride 32 -> 4x4
    assert image_tokens(preset("itma", "fashioniq")) == 14 * 14 + 7 * 7
    assert image_tokens(preset("tirg")) == 1


@pytest.mark.parametrize("family", ["amc", "itma", "tirg"])
def test_contract_links_the_graphs(family):
    c = io_contract(preset(family), max_batch=32, text_length=20)
    image, text, composer = c["image_encoder"], c["text_encoder"], c["composer"]
    assert [t.name for t in image.inputs] == ["images"] and image.inputs[0].shape == ("batch", 3, 64, 64)
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


def _edit(folder, change):
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(files="x"), r"'files' must be an object, got a string"),
    (lambda d: d.update(tokenizer=None), r"'tokenizer' must be an object, got null"),
    (lambda d: d.update(model=[]), r"'model' must be an object, got an array"),
    (lambda d: d.update(precision=8), r"'precision' must be a string, got a number"),
    (lambda d: d.update(aoti=None), r"'aoti' must be an object, got null"),
    (lambda d: d["files"].update({"vocab.json": 1}), r"'files' entry 'vocab\.json' must be a SHA-256 string"),
    (lambda d: d["model"].update(config_digest=None), r"'model\.config_digest' must be a string"),
])
def test_sections_of_the_wrong_type_are_refused(tmp_path, change, message):
    _bundle(tmp_path)
    _edit(tmp_path, change)
    with pytest.raises(TgirUserError, match=r"manifest\.json: " + message):
        Manifest.load(tmp_path)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("inputs", 5, r"graph 'composer' 'inputs' must be an array, got a number"),
    ("dynamic", [], r"graph 'composer' 'dynamic' must be an object, got an array"),
    ("file", None, r"graph 'composer' 'file' must be a string, got null"),
])
def test_graph_entries_of_the_wrong_type_are_refused(tmp_path, key, value, message):
    _bundle(tmp_path)
    _edit(tmp_path, lambda d: d["graphs"]["composer"].update({key: value}))
    with pytest.raises(TgirUserError, match=message):
        Manifest.load(tmp_path)


def test_overwrite_replaces_only_a_bundle(tmp_path):
    from tgir.manifest import staged_bundle

    data = tmp_path / "dataset"
    data.mkdir()
    (data / "css2d.json").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(TgirUserError, match="only to replace a tgir bundle, and this is not one"), \
                staged_bundle(data, overwrite=overwrite):
            pass
    assert (data / "css2d.json").read_text() == "{}"
    (tmp_path / "file").write_text("keep")
    with pytest.raises(TgirUserError, match="this is not one"), staged_bundle(tmp_path / "file", overwrite=True):
        pass
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _bundle(bundle)
    with pytest.raises(TgirUserError, match="not empty; pass --overwrite"), staged_bundle(bundle):
        pass
    with staged_bundle(bundle, overwrite=True) as tmp:
        (tmp / "new").write_text("")
    assert sorted(p.name for p in bundle.iterdir()) == ["new"]
    (tmp_path / "empty").mkdir()
    with staged_bundle(tmp_path / "empty", overwrite=True) as tmp:
        (tmp / "new").write_text("")
    assert (tmp_path / "empty" / "new").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_staged_bundle_mode_follows_the_umask(tmp_path, umask):
    import os

    from tgir.manifest import staged_bundle

    old = os.umask(umask)
    try:
        with staged_bundle(tmp_path / "b") as tmp:
            (tmp / "x").write_text("")
    finally:
        os.umask(old)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o777 & ~umask


def test_require_writable(tmp_path):
    from tgir.manifest import require_writable

    (tmp_path / "file").write_text("")
    assert require_writable(tmp_path / "new" / "deeper" / "v.json") == tmp_path / "new" / "deeper" / "v.json"
    assert not (tmp_path / "new").exists()  # checks only, creates nothing
    assert require_writable(tmp_path / "out", folder=True) == tmp_path / "out"
    assert require_writable(tmp_path / "file") == tmp_path / "file"
    with pytest.raises(TgirUserError, match=r"file/v\.json: cannot write there \(.*file is not a folder\)"):
        require_writable(tmp_path / "file" / "v.json")
    with pytest.raises(TgirUserError, match="cannot write there \\(it is a folder\\)"):
        require_writable(tmp_path)
    with pytest.raises(TgirUserError, match="cannot write there \\(not a folder\\)"):
        require_writable(tmp_path / "file", folder=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no probe left behind


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux /proc")
def test_require_writable_refuses_proc():
    from tgir.manifest import require_writable

    with pytest.raises(TgirUserError, match=r"/proc/v\.json: cannot write there"):
        require_writable("/proc/v.json")
    with pytest.raises(TgirUserError, match="/proc/idx: cannot write there"):
        require_writable("/proc/idx", folder=True)
