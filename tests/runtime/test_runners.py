"""Runners: ONNX Runtime vs the PyTorch reference on the same bundle, input validation against the
contract, refusal of corrupted bundles, bundle evaluation under the CSS protocol."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tgir.runtime
from tgir.runtime.evaluate import evaluate_bundle
from tgir.runtime.ort import OrtOptions, OrtRunner, save_optimized

from tgir.data.registry import load_split
from tgir.errors import TgirUserError

MAX_ABS = 1e-4  # fp32 graphs vs eager PyTorch, the export issue's parity limit


@pytest.fixture(scope="module")
def split(tiny_css2d):
    return load_split("css2d", str(tiny_css2d), "test")


def test_ort_matches_torch(tiny_amc_bundle, split):
    images = [split.images[i].path for i in range(11)]  # 11: two batches of max batch 8
    texts = [q.text for q in split.queries[:11]]
    out = {}
    for backend in ("onnxruntime", "torch"):
        with tgir.runtime.open(tiny_amc_bundle, backend) as runner:
            assert runner.backend == backend
            out[backend] = (runner.encode_images(images), runner.encode_queries(images, texts))
    for got, want in zip(out["onnxruntime"], out["torch"], strict=True):
        assert got.shape == want.shape == (11, 32)
        assert np.abs(got - want).max() <= MAX_ABS
    np.testing.assert_allclose(np.linalg.norm(out["onnxruntime"][0], axis=1), 1, atol=1e-5)


def test_inputs_are_validated(tiny_amc_bundle, split):
    runner = OrtRunner(tiny_amc_bundle)
    good = runner.pixels([split.images[0].path])
    with pytest.raises(TgirUserError, match="dtype float64, expected float32"):
        runner.run("image_encoder", {"images": good.astype(np.float64)})
    with pytest.raises(TgirUserError, match="axis 2 is 32, expected 64"):
        runner.run("image_encoder", {"images": good[:, :, :32]})
    with pytest.raises(TgirUserError, match=r"batch 9 outside the bundle.s range 1\.\.8"):
        runner.run("image_encoder", {"images": np.repeat(good, 9, 0)})
    with pytest.raises(TgirUserError, match=r"inputs are \['ids', 'lengths'\]"):
        runner.run("text_encoder", {"ids": np.zeros((1, 8), np.int64)})
    with pytest.raises(TgirUserError, match="batch 2 differs"):
        runner.run("text_encoder", {"ids": np.zeros((1, 8), np.int64), "lengths": np.ones(2, np.int64)})
    with pytest.raises(TgirUserError, match="unknown graph 'decoder'"):
        runner.run("decoder", {})
    with pytest.raises(TgirUserError, match="2 reference images but 1 texts"):
        runner.encode_queries([split.images[0].path] * 2, ["make it red"])
    with pytest.raises(TgirUserError, match="cannot decode image"):
        runner.encode_images([__file__])
    with pytest.warns(tgir.runtime.UnknownWordsWarning, match="no word of 'zzz qqq'"):
        q = runner.encode_queries([split.images[0].path], ["zzz qqq"])
    assert np.isfinite(q).all()  # still answers
    long = " ".join(["make the red circle big"] * 2)  # 10 words, the bundle's text length is 8
    with pytest.warns(tgir.runtime.base.TextTooLongWarning, match="has 10 words; the bundle reads the first 8"):
        runner.encode_queries([split.images[0].path], [long])
    with warnings.catch_warnings():
        warnings.simplefilter("error", tgir.runtime.base.QueryTextWarning)
        runner.encode_queries([split.images[0].path], ["make the red circle big"])  # fits: no warning


def test_saved_optimized_graphs_are_used_and_equal(tiny_amc_bundle, tmp_path, split):
    from tgir.manifest import Manifest

    folder = tmp_path / "b"
    shutil.copytree(tiny_amc_bundle, folder)
    manifest = Manifest.load(folder)
    entry = save_optimized(folder, manifest)
    manifest.save(folder)
    assert all((folder / f).is_file() for f in entry["files"].values())
    images = [split.images[i].path for i in range(5)]
    saved, plain = OrtRunner(folder), OrtRunner(folder, OrtOptions(use_saved=False))
    assert saved.sessions["composer"]._model_path.endswith("composer.ort.onnx")
    np.testing.assert_allclose(saved.encode_images(images), plain.encode_images(images), atol=1e-6)


def _edit(folder, change):
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def test_corrupt_bundles_are_refused(tiny_amc_bundle, tmp_path):
    def fresh(name):
        folder = tmp_path / name
        shutil.copytree(tiny_amc_bundle, folder)
        return folder

    b = fresh("contract")
    _edit(b, lambda d: d["graphs"]["composer"]["inputs"][0].update(name="regions"))
    with pytest.raises(TgirUserError, match="I/O contract was edited"):
        tgir.runtime.open(b)
    b = fresh("range")
    _edit(b, lambda d: d["graphs"]["image_encoder"]["dynamic"].update(batch=[1, 1, 0]))
    with pytest.raises(TgirUserError, match=r"range \[1, 1, 0\] is not \[min, opt, max\]"):
        tgir.runtime.open(b)
    b = fresh("graph")  # the graph file itself replaced by another graph, manifest re-signed
    shutil.copy(b / "text_encoder.onnx", b / "composer.onnx")
    from tgir.manifest import Manifest

    m = Manifest.load(b, verify=False)
    m.save(b)
    with pytest.raises(TgirUserError, match="the manifest does not describe this graph"):
        tgir.runtime.open(b)
    b = fresh("truncated")
    (b / "image_encoder.onnx").write_bytes((b / "image_encoder.onnx").read_bytes()[:1000])
    with pytest.raises(TgirUserError, match="checksum differs"):
        tgir.runtime.open(b)
    for name, edit, message in [
        ("tok-null", lambda d: d.update(tokenizer=None), r"manifest\.json: 'tokenizer' must be an object, got null"),
        ("tok-len", lambda d: d["tokenizer"].pop("max_length"), r"'tokenizer\.max_length' must be a positive"),
        ("tok-file", lambda d: d["tokenizer"].update(vocab_file=3), r"'tokenizer\.vocab_file' must name"),
    ]:
        b = fresh(name)
        _edit(b, edit)
        with pytest.raises(TgirUserError, match=message):
            tgir.runtime.open(b)
    with pytest.raises(TgirUserError, match="unknown backend 'tflite'"):
        tgir.runtime.open(tiny_amc_bundle, "tflite")
    with pytest.raises(TgirUserError, match=r"runs on torch, which does not take the option\(s\) threads"):
        tgir.runtime.open(tiny_amc_bundle, "torch", threads=2)


def test_bundle_recall_matches_the_checkpoints(tiny_amc_bundle, split):
    """``tgir eval --bundle`` and ``tgir eval --checkpoint`` agree (fixed text length, batching and
    ONNX Runtime change nothing beyond float noise: at most one query may flip on a near tie)."""
    from tgir.training.checkpoint import model_from_checkpoint
    from tgir.training.embed import evaluate_models

    result = evaluate_bundle(OrtRunner(tiny_amc_bundle), split, batch=5)
    model, ckpt = model_from_checkpoint(tiny_amc_bundle.parent / "m.pt")
    model.set_router(tau=0.4)
    reference = evaluate_models([(model, ckpt.vocab)], split, 16, "cpu")
    for k in ("R@1", "R@5", "R@10", "R@50"):
        assert abs(result[k] - reference[k]) <= 100 / len(split.queries) + 1e-9, k
    assert result["bundle"]["precision"] == "fp32" and result["queries"] == len(split.queries)
    assert set(result["per_op"]) == {"add", "remove", "make"}


def test_runtime_never_imports_torch_or_the_exporter(tiny_amc_bundle):
    code = ("import sys, tgir.runtime, tgir.runtime.index, tgir.runtime.evaluate\n"
            f"r = tgir.runtime.open({str(tiny_amc_bundle)!r})\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('tgir.export', 'tgir.calib'))))")
    with warnings.catch_warnings():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_eval_bundle_command(tiny_amc_bundle, tiny_css2d, capsys):
    from tgir.cli import main

    assert main(["eval", "--bundle", str(tiny_amc_bundle), "--data", str(tiny_css2d), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["queries"] == 180 and result["bundle"]["backend"] == "onnxruntime" and "R@1" in result
    assert main(["eval", "--bundle", str(tiny_amc_bundle)]) == 1
    assert "--bundle needs --data" in capsys.readouterr().err
    assert main(["eval", "--bundle", str(tiny_amc_bundle), "--data", str(tiny_css2d), "--tau", "0.1"]) == 1
    assert "drop --checkpoint, --tau" in capsys.readouterr().err


def test_ort_sessions_do_not_spin_unless_asked():
    from tgir.runtime.ort import session_options

    key = "session.intra_op.allow_spinning"
    # three sessions per query: spinning pools would take the cores from the running one
    assert session_options(OrtOptions(threads=2)).get_session_config_entry(key) == "0"
    assert session_options(OrtOptions(threads=2, spin=True)).get_session_config_entry(key) == "1"


def test_token_ids_and_lengths_are_checked_before_the_backend(tiny_amc_bundle):
    runner = OrtRunner(tiny_amc_bundle)
    ids, lengths = np.ones((1, 8), np.int64), np.ones(1, np.int64)
    size = len(runner.vocab)
    for bad, message in ((np.full((1, 8), size, np.int64), rf"token id {size} outside the vocabulary 0\.\.{size - 1}"),
                         (np.full((1, 8), -5, np.int64), "token id -5 outside the vocabulary")):
        with pytest.raises(TgirUserError, match=message):
            runner.run("text_encoder", {"ids": bad, "lengths": lengths})
    for bad in (99, -1, 0):  # a tokenized text has 1..L tokens
        with pytest.raises(TgirUserError, match=rf"lengths: {bad} outside 1\.\.8"):
            runner.run("text_encoder", {"ids": ids, "lengths": np.full(1, bad, np.int64)})
    runner.run("text_encoder", {"ids": np.full((1, 8), size - 1, np.int64), "lengths": np.full(1, 8, np.int64)})


def test_image_and_text_lists_are_checked_alike_on_every_item(tiny_amc_bundle, split):
    from PIL import Image

    runner = OrtRunner(tiny_amc_bundle)
    path = split.images[0].path
    pixels = np.asarray(Image.open(path).convert("RGB"))
    want = runner.encode_images([path])
    np.testing.assert_array_equal(runner.encode_images([pixels]), want)  # an RGB uint8 array, as the C runner takes
    np.testing.assert_array_equal(runner.encode_images(p for p in [path]), want)  # any iterable
    np.testing.assert_array_equal(runner.encode_images(pixels[None]), want)  # [B, H, W, 3] uint8: B pictures
    for images, message in ((path, "images must be a list of images, not one path"),
                            (str(path), "images must be a list of images, not one string"),
                            ([None], r"image 0: expected a file path, a PIL image or an RGB uint8 .* got NoneType"),
                            ([path, 3], r"image 1: expected .* got int"),
                            (pixels, r"got uint8 \[64, 64, 3\]; pass a list of images")):
        with pytest.raises(TgirUserError, match=message):
            runner.encode_images(images)
    with pytest.raises(TgirUserError, match="images must be a list of images, not one string"):
        runner.encode_queries(str(path), ["x"])  # before comparing lengths
    for texts, message in ((None, "texts must be a list of strings, got NoneType"), (5, "got int"),
                           (b"red", "not one bytes string"), ("red", "not one string"),
                           ([None], "text 0: expected a string"),
                           (["add\x00 red cube"], r"text 0: .* contains a NUL character"),
                           (["add \ud800"], r"text 0: .* not valid Unicode")):
        with pytest.raises(TgirUserError, match=message):
            runner.encode_queries([path], texts)


def test_closed_runners_refuse_every_call(tiny_amc_bundle, split):
    path = split.images[0].path
    for backend in ("onnxruntime", "torch"):
        runner = tgir.runtime.open(tiny_amc_bundle, backend)
        runner.close()
        for call in (lambda r: r.encode_images([path]), lambda r: r.encode_queries([path], ["x"]),
                     lambda r: r.run("text_encoder", {}), lambda r: r.search(np.zeros((1, 32), np.float32))):
            with pytest.raises(TgirUserError, match=f"the {backend} runner is closed"):
                call(runner)


def test_options_are_checked_before_any_work(tiny_amc_bundle):
    for threads in ("2", None, 2.5, True):
        with pytest.raises(TgirUserError, match="threads must be an integer"):
            OrtOptions(threads=threads)
    for threads in (-1, 10**12):
        with pytest.raises(TgirUserError, match=r"threads must be between 0 and 1024"):
            OrtOptions(threads=threads)
    assert OrtOptions(threads=np.int64(2)).threads == 2
    with pytest.raises(TgirUserError, match=r"does not take the option\(s\) foo \("):  # threads is fine: not named
        tgir.runtime.open(tiny_amc_bundle, "onnxruntime", threads=1, foo=1)
    with pytest.raises(TgirUserError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        tgir.runtime.open(tiny_amc_bundle, "torch", device="tpu")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(TgirUserError, match=r"device 'cuda': torch\.cuda\.is_available\(\) is False"):
            tgir.runtime.open(tiny_amc_bundle, "torch", device="cuda")
    runner = OrtRunner(tiny_amc_bundle)
    with pytest.raises(TgirUserError, match=r"attach takes a GalleryIndex .* got dict"):
        runner.attach({})
