"""Shipping: float16 weights, and a model card measured on exactly those weights."""

from __future__ import annotations

import json

import torch

from tgir.cli import main
from tgir.training.checkpoint import model_from_checkpoint
from tgir.training.config import RunConfig, TrainConfig
from tgir.training.loop import Trainer


def test_ship_writes_weights_and_card(tiny, tiny_css2d, tmp_path, capsys):
    run = RunConfig(tiny("amc"), TrainConfig(dataset="css2d", data=str(tiny_css2d), epochs=1, batch_size=8,
                                             val_fraction=0.2, device="cpu", max_steps=2))
    Trainer(run, tmp_path / "run").fit()
    code = main(["ship", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--name", "amc_tiny", "--out",
                 str(tmp_path / "trained"), "--tau", "0.5", "--device", "cpu"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    card = json.loads((tmp_path / "trained" / "amc_tiny.json").read_text())
    assert card["test"]["queries"] == 180 and card["test"]["R@1"] == printed["R@1"]
    assert card["config"]["model"]["router"] == {**card["config"]["model"]["router"], "tau": 0.5,
                                                 "conditional": True}
    rates = card["test"]["routing"]["skip_rate"]
    assert set(rates) == {"layer1", "layer2", "overall"} and 0 <= rates["overall"]["crn"] <= 1
    assert card["params"] > 0 and card["weights_dtype"] == "float16"
    md = (tmp_path / "trained" / "amc_tiny.md").read_text()
    assert "| overall |" in md and "Expert skip rate at batch 1 (tau = 0.5)" in md
    saved = torch.load(tmp_path / "trained" / "amc_tiny.pt", weights_only=True)
    assert saved["optimizer"] is None and saved["ema"] is None
    assert {t.dtype for t in saved["model"].values() if t.is_floating_point()} == {torch.float16}
    model, ckpt = model_from_checkpoint(tmp_path / "trained" / "amc_tiny.pt")
    assert ckpt.run.model.router.tau == 0.5 and next(model.parameters()).dtype == torch.float32
    # The card's recall is that of the shipped weights, re-measured here.
    again = main(["eval", "--checkpoint", str(tmp_path / "trained" / "amc_tiny.pt"), "--json", "--device", "cpu"])
    assert again == 0 and json.loads(capsys.readouterr().out)["R@1"] == card["test"]["R@1"]


def test_card_of_a_fine_tune_names_its_start(tiny, tiny_css2d, tmp_path, capsys):
    train = TrainConfig(dataset="css2d", data=str(tiny_css2d), epochs=1, batch_size=8, val_fraction=0.2,
                        device="cpu", max_steps=2)
    Trainer(RunConfig(tiny("amc"), train), tmp_path / "dense").fit()
    (tmp_path / "dense" / "command.txt").write_text("tgir train --model amc --out dense\n")
    start = tmp_path / "dense" / "best.pt"
    assert main(["train", "--init", str(start), "--out", str(tmp_path / "ft"), "--max-steps", "2",
                 "--set", "model.router.sparsity_weight=0.05"]) == 0
    assert main(["ship", "--checkpoint", str(tmp_path / "ft" / "best.pt"), "--name", "ft", "--out",
                 str(tmp_path / "trained"), "--tau", "0.02", "--device", "cpu"]) == 0
    capsys.readouterr()
    source = json.loads((tmp_path / "trained" / "ft.json").read_text())["training"]["fine_tuned_from"]
    assert source["checkpoint"] == str(start) and source["command"] == "tgir train --model amc --out dense"
    assert source["steps"] == 2 and source["wall_seconds"] > 0
    md = (tmp_path / "trained" / "ft.md").read_text()
    assert f"- fine-tuned from: `{start}`, itself trained 1 epochs, 2 steps" in md


def test_ship_refuses_bad_names_and_unwritable_folders(tiny, tiny_css2d, tmp_path, capsys, monkeypatch):
    from tgir.models.base import build_model
    from tgir.training import card
    from tgir.training.checkpoint import save_checkpoint
    from tgir.vocab import Vocabulary

    cfg = tiny("amc")
    run = RunConfig(cfg, TrainConfig(dataset="css2d", data=str(tiny_css2d)))
    save_checkpoint(tmp_path / "m.pt", run, Vocabulary([f"w{i}" for i in range(16)]), build_model(cfg))

    def no_measuring(*args, **kwargs):
        raise AssertionError("the output is checked before measuring")

    monkeypatch.setattr(card, "evaluate_models", no_measuring)
    (tmp_path / "file").write_text("")
    for name in ("a/b", "", ".hidden", "a b", "../up"):
        code = main(["ship", "--checkpoint", str(tmp_path / "m.pt"), "--name", name, "--out", str(tmp_path / "t")])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, name
        assert f"--name {name!r}: a file base name is expected; allowed: letters, digits" in err
    code = main(["ship", "--checkpoint", str(tmp_path / "m.pt"), "--name", "ok", "--out",
                 str(tmp_path / "file" / "trained")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.strip() == f"tgir: error: {tmp_path / 'file' / 'trained'}: cannot write the shipped model there " \
                          "(Not a directory)"
    code = main(["ship", "--checkpoint", str(tmp_path / "m.pt"), "--name", "ok", "--out", str(tmp_path / "t"),
                 "--data", str(tmp_path / "nowhere")])
    assert code == 1 and "nowhere" in capsys.readouterr().err
    assert list((tmp_path / "t").iterdir()) == []  # no weights without their card
