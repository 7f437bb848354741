"""tgir-export build-engine: export -> check -> calibrate -> ONNX Runtime bundle in one command; a
bundle from the same recipe is kept, a stale one rebuilt, foreign folders and missing TensorRT refused."""

from __future__ import annotations

import json

import pytest
import tgir.runtime
from tgir.export.cli import main

from tgir.manifest import Manifest


@pytest.fixture(scope="module")
def built(tiny_amc_bundle, tiny_css2d, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "bundle"
    args = ["build-engine", "--checkpoint", str(tiny_amc_bundle.parent / "m.pt"), "--out", str(out),
            "--calib-data", str(tiny_css2d), "--calib-samples", "32", "--max-batch", "8", "--max-text-len", "8",
            "--tau", "0.4", "--no-parity", "--backend", "onnxruntime", "--json"]
    assert main(args) == 0
    return out, args


def test_builds_an_int8_onnxruntime_bundle(built, tiny_amc_bundle, tiny_css2d, capsys):
    import os

    out, _ = built
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # shared like any folder the user makes, not 0700
    m = Manifest.load(out)
    assert (m.precision, m.backend) == ("int8", "onnxruntime")
    assert m.build["quantization"]["flavour"] == "cpu"  # ONNX Runtime CPU: uint8 activations
    assert set(m.build["onnxruntime_optimized"]["files"]) == {"image_encoder", "text_encoder", "composer",
                                                              "query_encoder"}
    assert m.build["fused"]["query_encoder"]["file"] == "query_encoder.onnx"  # one call per query
    recipe = json.loads((out / "build_config.json").read_text())
    assert recipe["calib"]["samples"] == 32 and recipe["onnx"]["max_batch"] == 8
    # the INT8 bundle answers close to the fp32 bundle it came from
    from tgir.data.registry import load_split

    split = load_split("css2d", str(tiny_css2d), "test")
    images, texts = [split.images[q.ref].path for q in split.queries[:8]], [q.text for q in split.queries[:8]]
    with tgir.runtime.open(out) as q8, tgir.runtime.open(tiny_amc_bundle) as f32:
        assert q8.fused and not f32.fused
        cos = (q8.encode_queries(images, texts) * f32.encode_queries(images, texts)).sum(1)
    assert cos.min() > 0.9, cos


def test_same_recipe_is_up_to_date_and_a_changed_one_rebuilds(built, capsys):
    out, args = built
    capsys.readouterr()
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["up_to_date"] is True
    assert "manifest.json" in summary["files"] and "composer.ort.onnx" in summary["files"]
    assert main(args[:-1]) == 0  # the summary for people lists it too
    assert "\n  manifest.json\n" in capsys.readouterr().out
    before = Manifest.load(out).build["recipe_sha256"]
    assert main([*args, "--calib-method", "max"]) == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is False
    after = Manifest.load(out)
    assert after.build["recipe_sha256"] != before and after.build["quantization"]["method"] == "max"


def test_refusals(built, tmp_path, capsys):
    _, args = built
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    at = args.index("--out") + 1
    assert main([*args[:at], str(foreign), *args[at + 1:]]) == 1
    assert "is not a tgir bundle" in capsys.readouterr().err
    assert (foreign / "holiday.jpg").exists()  # nothing lost
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        b = args.index("--backend") + 1
        assert main([*args[:at], str(tmp_path / "trt"), *args[at + 1:b], "tensorrt", *args[b + 1:]]) == 1
        assert "tensorrt" in capsys.readouterr().err.lower()
        assert not (tmp_path / "trt").exists()  # a failed build leaves nothing behind
    assert main([*args[:1], "--checkpoint", str(tmp_path / "none.pt"), *args[3:]]) == 1
    assert "none.pt: checkpoint not found" in capsys.readouterr().err


def test_flags_are_checked_before_any_work(built, tmp_path, monkeypatch, refuses_each):
    import tgir.export.build as build

    def never(*args, **kwargs):
        raise AssertionError("slow work started before the flags were checked")

    monkeypatch.setattr(build, "_stages", never)
    _, args = built
    at = args.index("--out") + 1
    args = [*args[:at], str(tmp_path / "b"), *args[at + 1:]]
    empty = tmp_path / "empty"
    empty.mkdir()
    refuses_each(main, args, [(["--threads", "-2"], "--threads must be >= 0 (0: one per core), got -2"),
                              (["--calib-samples", "0"], "too few calibration samples (0); use at least 32"),
                              (["--calib-keep-sensitive", "-1"], "--calib-keep-sensitive must be >= 0, got -1"),
                              (["--workspace-mib", "0"], "workspace must be >= 1 MiB, got 0"),  # whatever the backend
                              (["--calib-data", str(empty)], "expected the CSS data file"),
                              (["--calib-samples", "5000"], "asked for 5000 calibration samples")])
    assert not (tmp_path / "b").exists()


def test_check_opens_the_saved_onnxruntime_graphs(built, tmp_path, capsys):
    """A bundle's ONNX Runtime optimised graphs (``*.ort.onnx``) are checked too, not only the three graphs."""
    import shutil

    out, _ = built
    assert main(["check", str(out), "--no-parity", "--tensorrt", "none", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    saved = ["query_encoder.onnx", *(f"{g}.ort.onnx" for g in ("image_encoder", "text_encoder", "composer",
                                                                "query_encoder"))]
    assert report["saved"] == dict.fromkeys(saved, True)
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "composer.ort.onnx").write_bytes(b"garbage" * 100)
    Manifest.load(bad, verify=False).save(bad)  # its checksum updated: only opening it can tell
    assert main(["check", str(bad), "--no-parity", "--tensorrt", "none"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "composer.ort.onnx: not a readable ONNX graph" in captured.err
    assert "check FAILED" in captured.out and "Traceback" not in captured.err
