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
                 "--max-batch", "4", "--max-text-len", "5", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["router"]["form"] == "if" and out["graphs"]["composer"]["if_nodes"] == 6
    assert out["ok"] and out["parity"]["top10_identical"] == out["parity"]["queries"] == 63
    assert main(["check", str(tmp_path / "b"), "--json", "--tensorrt", "none"]) == 0  # parity: the recorded checkpoint
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["parity"]["problems"] == []
    graph = tmp_path / "b" / "composer.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    assert main(["check", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "composer.onnx: checksum differs" in err and "Traceback" not in err
    assert main(["onnx", "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "c"), "--opset", "9"]) == 1
    assert "opset 9 out of range" in capsys.readouterr().err
