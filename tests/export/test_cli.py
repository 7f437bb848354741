"""``tgir-export`` answers and reports unknown commands as usage errors."""

from tgir.export.cli import main


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "tgir-export" in capsys.readouterr().out


def test_unknown_command(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_onnx_then_check(tiny, tmp_path, capsys):
    import json

    import torch

    from tgir.models.base import build_model
    from tgir.training.checkpoint import save_checkpoint
    from tgir.training.config import RunConfig
    from tgir.vocab import Vocabulary

    torch.manual_seed(0)
    cfg = tiny("amc")
    save_checkpoint(tmp_path / "m.pt", RunConfig(cfg), Vocabulary(["a", "b"]), build_model(cfg))
    code = main(["onnx", "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "b"), "--tau", "0.4",
                 "--max-batch", "4", "--max-text-len", "5"])
    assert code == 0
    out = capsys.readouterr().out.splitlines()  # by default a summary for people; --json is for scripts
    assert out[0] == (f"wrote {tmp_path / 'b'}/ (amc, router if, tau 0.4): composer.onnx, image_encoder.onnx, "
                      "manifest.json, text_encoder.onnx, vocab.json")
    assert out[1] == "check passed:" and any(ln.startswith("  composer: ") and ", 6 If)" in ln for ln in out)
    assert out[-1].startswith("  parity with PyTorch: 63 queries") and out[-1].endswith("identical for 63/63")
    assert main(["check", str(tmp_path / "b"), "--json", "--tensorrt", "none"]) == 0  # parity: the recorded checkpoint
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["parity"]["problems"] == []
    assert report["parity"]["top10_identical"] == report["parity"]["queries"] == 63
    assert report["graphs"]["composer"]["if_nodes"] == 6
    graph = tmp_path / "b" / "composer.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    assert main(["check", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "composer.onnx: checksum differs" in err and "Traceback" not in err
    assert main(["onnx", "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "c"), "--opset", "9"]) == 1
    assert "opset 9 out of range" in capsys.readouterr().err


def _one_error_line(err: str, text: str) -> None:
    lines = err.strip().splitlines()
    assert lines[-1].startswith("tgir-export: error: ") and text in lines[-1], err
    assert "Traceback" not in err


def test_onnx_refuses_an_unknown_tensorrt_version_before_exporting(tmp_path, monkeypatch, capsys):
    import tgir.export.onnx as exporter

    def never(*args, **kwargs):
        raise AssertionError("exported before checking --tensorrt")

    monkeypatch.setattr(exporter, "onnx_from_checkpoint", never)
    for version in ("7.0", "banana"):
        assert main(["onnx", "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"), "--no-parity",
                     "--tensorrt", version]) == 1
        _one_error_line(capsys.readouterr().err, f"no TensorRT operator table for '{version}'; valid choices: 10.15")
    assert not (tmp_path / "o").exists()
    assert main(["check", str(tmp_path / "o"), "--tensorrt", "banana"]) == 1
    _one_error_line(capsys.readouterr().err, "valid choices: 10.15")


def test_a_failed_check_leaves_no_bundle_and_keeps_the_old_one(tiny_amc_bundle, tmp_path, monkeypatch, capsys):
    import shutil

    import tgir.export.check as check
    import tgir.export.onnx as exporter
    from tgir.export.check import CheckReport

    from tgir.manifest import Manifest

    def export(checkpoint, folder, cfg, progress=None):  # a stand-in for minutes of export
        shutil.copytree(tiny_amc_bundle, folder, dirs_exist_ok=True)
        return Manifest.load(folder)

    monkeypatch.setattr(exporter, "onnx_from_checkpoint", export)
    monkeypatch.setattr(check, "check_bundle", lambda *a, **k: CheckReport(problems=["composer: boom"]))
    shutil.copytree(tiny_amc_bundle, tmp_path / "old")
    before = (tmp_path / "old" / "manifest.json").read_text()
    args = ["onnx", "--checkpoint", str(tiny_amc_bundle.parent / "m.pt"), "--no-parity"]
    assert main([*args, "--out", str(tmp_path / "new")]) == 1
    _one_error_line(capsys.readouterr().err, "bundle check failed: composer: boom (nothing was written to")
    assert not (tmp_path / "new").exists()
    assert main([*args, "--out", str(tmp_path / "old"), "--overwrite"]) == 1
    assert (tmp_path / "old" / "manifest.json").read_text() == before  # the old bundle is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # and no staging folder is left


def test_every_option_has_help():
    import importlib

    from tgir.export.cli import COMMANDS

    for name, target in COMMANDS.items():
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        empty = [p.opts[0] for p in command.params if p.param_type_name == "option" and not p.help]
        assert empty == [], f"{name}: options without help: {empty}"
        json_flag = next(p for p in command.params if p.name == "as_json")
        assert "instead of the summary" in json_flag.help


def test_build_engine_help_says_what_best_does(capsys):
    assert main(["build-engine", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "best: the same as int8" in out and "fp16 elsewhere" not in out
    from tgir.export import build

    assert "fp16 on TensorRT" not in build.BuildConfig.__doc__


def test_tensorrt_md_flags_exist():
    """export/TENSORRT.md's flag table names real build-engine flags, and every EngineConfig field."""
    import dataclasses
    import re
    from pathlib import Path

    import tgir.export
    from tgir.export.commands import build_engine_command
    from tgir.export.engine import EngineConfig

    text = (Path(tgir.export.__file__).parent / "TENSORRT.md").read_text()
    table = text.split("## Flags", 1)[1].split("\n## ", 1)[0]
    assert "proposed" not in table
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    flags = {f for row in rows for f in re.findall(r"--[a-z][a-z0-9-]*", row.split("|")[1])}
    known = {opt for p in build_engine_command.params for opt in [*p.opts, *p.secondary_opts]}
    assert flags and flags <= known, flags - known
    assert "best" in next(row for row in rows if row.startswith("| `--precision"))
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    assert {f for f in fields if f"`{f}`" not in table} == set()
