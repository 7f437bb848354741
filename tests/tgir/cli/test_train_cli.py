"""``tgir train`` / ``tgir eval`` from the command line, including user errors."""

from __future__ import annotations

import json

import pytest

from tgir.cli import main
from tgir.training.config import RunConfig, TrainConfig


@pytest.fixture
def run_file(tiny, tiny_css2d, tmp_path):
    run = RunConfig(tiny("amc"), TrainConfig(dataset="css2d", data=str(tiny_css2d), epochs=1, batch_size=8,
                                             val_fraction=0.2, device="cpu"))
    path = tmp_path / "run.json"
    run.save(path)
    return path


def _one_line_error(code, err, *fragments):
    assert code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("tgir: error: ")
    for f in fragments:
        assert f in line


def test_train_then_eval(run_file, tiny_css2d, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.chdir(tiny_css2d.parent)  # a relative --data, as typed by hand
    assert main(["train", "--config", str(run_file), "--out", str(out), "--max-steps", "2", "--set",
                 "train.lr=0.001", "--data", tiny_css2d.name, "--set", "model.router.position=False"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2
    saved = RunConfig.load(out / "run.json")
    assert saved.train.lr == 0.001 and saved.model.router.position is False  # not the (truthy) text "False"
    assert saved.train.data == str(tiny_css2d)  # absolute: the evaluations below run from elsewhere
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["queries"] == 180 and set(result["per_op"]) == {"add", "remove", "make"}
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--checkpoint", str(out / "best.pt"),
                 "--tau", "0.5", "--json", "--device", "cpu"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["R@50"] <= 100
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--split", "holdout", "--json"]) == 0
    holdout = json.loads(capsys.readouterr().out)
    assert holdout["queries"] == 36  # 2 of the 10 training reference images held out, 18 texts each
    metrics = json.loads((out / "metrics.json").read_text())
    assert holdout["R@1"] == metrics["history"][-1]["val"]["R@1"]
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--split", "holdout", "--sweep-tau", "0,0.5",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["tau"] for r in rows] == [0.0, 0.5]
    assert rows[0]["R@1"] == holdout["R@1"]  # tau 0 is the dense model: same numbers as plain eval
    assert rows[0]["skip_rate"]["overall"]["crn"] == 0.0
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--split", "holdout", "--tau", "0.5",
                 "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["R@1"] == rows[1]["R@1"] and single["routing"]["skip_rate"] == rows[1]["skip_rate"]


def test_unknown_family_in_config(run_file, tmp_path, capsys):
    data = json.loads(run_file.read_text())
    data["model"]["family"] = "clip"
    run_file.write_text(json.dumps(data))
    code = main(["train", "--config", str(run_file), "--out", str(tmp_path / "o")])
    _one_line_error(code, capsys.readouterr().err, "unknown model 'clip'", "'amc', 'itma', 'tirg'")


def test_unknown_model_flag_lists_choices(tmp_path, capsys):
    code = main(["train", "--model", "clip", "--out", str(tmp_path)])
    assert code == 2 and "'clip' is not one of 'amc', 'itma', 'tirg'" in capsys.readouterr().err


def test_unknown_set_path(run_file, tmp_path, capsys):
    code = main(["train", "--config", str(run_file), "--out", str(tmp_path / "o"), "--set", "model.routr.tau=1"])
    _one_line_error(code, capsys.readouterr().err, "'routr'", "router")


def test_eval_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"\x00" * 10)
    code = main(["eval", "--checkpoint", str(tmp_path / "x.pt")])
    _one_line_error(code, capsys.readouterr().err, "x.pt", "not a tgir checkpoint")


@pytest.mark.parametrize("content", [b"", b"hello world\n"])
def test_empty_or_text_checkpoint_is_one_line(tmp_path, capsys, content):
    (tmp_path / "x.pt").write_bytes(content)
    expected = f"{tmp_path / 'x.pt'}: not a tgir checkpoint (expected a file written by tgir train or tgir ship): "
    for argv in (["eval", "--checkpoint", str(tmp_path / "x.pt")],
                 ["train", "--init", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o")]):
        code = main(argv)
        err = capsys.readouterr().err
        _one_line_error(code, err, expected)
        assert "weights_only" not in err
    assert not (tmp_path / "o").exists()


def test_missing_dataset_root(run_file, tmp_path, capsys):
    out = tmp_path / "runs" / "new" / "o"
    code = main(["train", "--config", str(run_file), "--out", str(out), "--data", str(tmp_path / "no")])
    _one_line_error(code, capsys.readouterr().err, str(tmp_path / "no"), "not found")
    assert not (tmp_path / "runs").exists()  # the failed run removes the folders it created
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    code = main(["train", "--config", str(run_file), "--out", str(tmp_path / "kept"), "--data", str(tmp_path / "no")])
    assert code == 1 and (tmp_path / "kept" / "notes.txt").read_text() == "mine"  # not ours to remove


@pytest.mark.parametrize(("setting", "fragments"), [
    ("model.backbone.trainable=maybe", ["model.backbone.trainable: expected a boolean (true/false/1/0), got 'maybe'"]),
    ("train.epochs=abc", ["train.epochs: expected an integer, got 'abc'"]),
    ("train.epochs=1.5", ["train.epochs: expected an integer, got '1.5'"]),
    ("train.batch_size=8.5", ["train.batch_size: expected an integer, got '8.5'"]),
    ("model.router.tau=abc", ["model.router.tau: expected a finite number, got 'abc'"]),
    ("train.lr_step_epochs=x", ["train.lr_step_epochs: expected a list of integers"]),
    ("model.router=3", ["model.router is a section; set one of its fields:", "tau", "position"]),
    ("train.lr=-1", ["train: lr must be > 0"]),
])
def test_set_values_are_checked_against_the_field_type(run_file, tmp_path, capsys, setting, fragments):
    code = main(["train", "--config", str(run_file), "--out", str(tmp_path / "o"), "--set", setting])
    _one_line_error(code, capsys.readouterr().err, *fragments)
    assert not (tmp_path / "o").exists()


def test_bad_train_flags_are_one_line(run_file, tmp_path, capsys):
    code = main(["train", "--config", str(run_file), "--out", str(tmp_path / "o"), "--lr", "-1"])
    _one_line_error(code, capsys.readouterr().err, "train: lr must be > 0.0, got -1.0")
    code = main(["train", "--config", str(run_file), "--out", str(tmp_path / "o"), "--resume"])
    _one_line_error(code, capsys.readouterr().err, f"--resume: {tmp_path / 'o' / 'last.pt'} not found; drop --resume")
    assert not (tmp_path / "o").exists()


def test_eval_argument_errors(tmp_path, capsys):
    for argv in (["eval", "--checkpoint", str(tmp_path / "x.pt"), "--batch-size", "0"],
                 ["eval", "--bundle", str(tmp_path), "--data", str(tmp_path), "--batch-size", "0"]):
        assert main(argv) == 2 and "Invalid value for '--batch-size': 0 is not in the range x>=1" in \
            capsys.readouterr().err
    code = main(["eval", "--checkpoint", str(tmp_path / "x.pt"), "--sweep-tau", ""])
    _one_line_error(code, capsys.readouterr().err, "--sweep-tau: give at least one tau")
    code = main(["eval", "--checkpoint", str(tmp_path / "x.pt"), "--sweep-tau", "0,,0.1"])
    _one_line_error(code, capsys.readouterr().err, "--sweep-tau '0,,0.1': expected numbers separated by commas")
    code = main(["eval", "--bundle", str(tmp_path), "--data", str(tmp_path), "--sweep-tau", ""])
    _one_line_error(code, capsys.readouterr().err, "drop --checkpoint, --tau and --sweep-tau")


def test_help_says_what_every_option_does(capsys):
    import click

    from tgir.cli.train import evaluate, ship, train

    for command in (train, evaluate, ship):
        assert all(p.help for p in command.params if isinstance(p, click.Option)), command.name
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "0 = no limit" in text and "Default: the preset's" in text
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--debug" in text and "TGIR_DEBUG=1" in text


def test_init_fine_tunes_from_a_checkpoint(run_file, tmp_path, capsys):
    import torch

    from tgir.training.checkpoint import load_checkpoint

    first = tmp_path / "dense"
    assert main(["train", "--config", str(run_file), "--out", str(first), "--max-steps", "2"]) == 0
    capsys.readouterr()
    start = load_checkpoint(first / "last.pt")
    # zero steps of training: the fine-tune's weights are the initial checkpoint's EMA weights
    sparse = tmp_path / "sparse"
    # (lr must be > 0: one Adam step at 1e-12 moves no weight by more than 1e-12)
    assert main(["train", "--init", str(first / "last.pt"), "--out", str(sparse), "--max-steps", "1",
                 "--set", "train.lr=1e-12", "--set", "train.ema_decay=0",
                 "--set", "model.router.sparsity_weight=0.02"]) == 0
    capsys.readouterr()
    tuned = load_checkpoint(sparse / "last.pt")
    assert tuned.vocab.itos == start.vocab.itos
    assert tuned.run.model.router.sparsity_weight == 0.02 and tuned.run.train.init == str(first / "last.pt")
    for name, value in start.ema.items():
        assert torch.allclose(tuned.model[name].float(), value.float(), rtol=0, atol=1e-9), name
    # a model config the weights do not fit, and a family that contradicts the checkpoint: one line
    code = main(["train", "--init", str(first / "last.pt"), "--out", str(tmp_path / "x"), "--set",
                 "model.embed_dim=16"])
    _one_line_error(code, capsys.readouterr().err, "weights do not fit the model", "shape differs")
    code = main(["train", "--init", str(first / "last.pt"), "--model", "tirg", "--out", str(tmp_path / "y")])
    _one_line_error(code, capsys.readouterr().err, "--model tirg contradicts", "'amc'")
    code = main(["train", "--init", str(tmp_path / "none.pt"), "--out", str(tmp_path / "z")])
    _one_line_error(code, capsys.readouterr().err, "checkpoint not found")
