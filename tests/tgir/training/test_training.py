"""Training loop, checkpoints and evaluation on tiny data: determinism, resume, NaN, recall."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tgir.data.records import ImageRecord, Query, RetrievalSplit
from tgir.errors import TgirUserError
from tgir.models.base import RetrievalModel, build_model, l2norm
from tgir.models.config import ModelConfig, replace_path
from tgir.training.checkpoint import load_checkpoint, model_from_checkpoint
from tgir.training.config import RunConfig, TrainConfig
from tgir.training.embed import evaluate_models
from tgir.training.loop import LAST, Trainer, TrainingDiverged
from tgir.vocab import Vocabulary


def _run(tiny, root, **train) -> RunConfig:
    t = TrainConfig(dataset="css2d", data=str(root), epochs=1, batch_size=8, lr=1e-3, val_fraction=0.2,
                    seed=1, device="cpu", max_steps=3, **train)
    return RunConfig(tiny("amc"), t)


def test_train_writes_artefacts_and_round_trips(tiny, tiny_css2d, tmp_path):
    state = Trainer(_run(tiny, tiny_css2d), tmp_path).fit()
    assert state["step"] == 3 and state["epoch"] == 1
    for name in ("last.pt", "best.pt", "run.json", "vocab.json", "metrics.json"):
        assert (tmp_path / name).is_file()
    assert "R@1" in state["history"][-1]["val"]
    model, ckpt = model_from_checkpoint(tmp_path / LAST)
    saved = torch.load(tmp_path / LAST, weights_only=True)["ema"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key  # bit-exact
    assert ckpt.run.model.text.vocab_size == len(ckpt.vocab)
    assert RunConfig.load(tmp_path / "run.json") == ckpt.run


def test_same_seed_same_weights(tiny, tiny_css2d, tmp_path):
    Trainer(_run(tiny, tiny_css2d), tmp_path / "a").fit()
    Trainer(_run(tiny, tiny_css2d), tmp_path / "b").fit()
    a = torch.load(tmp_path / "a" / LAST, weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / LAST, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues(tiny, tiny_css2d, tmp_path):
    run = _run(tiny, tiny_css2d)
    Trainer(run, tmp_path).fit()
    more = RunConfig(run.model, TrainConfig(**{**run.train.__dict__, "epochs": 2, "max_steps": 5}))
    state = Trainer(more, tmp_path).fit(resume=True)
    assert state["epoch"] == 2 and state["step"] == 5 and len(state["history"]) == 2


def test_frozen_backbone_stays_fixed(tiny, tiny_css2d, tmp_path):
    run = _run(tiny, tiny_css2d)
    frozen = replace_path(run, "model.backbone.trainable", False)
    Trainer(frozen, tmp_path).fit()  # trains from the float16 feature cache
    ckpt = load_checkpoint(tmp_path / LAST)
    torch.manual_seed(run.train.seed)  # the trainer seeds the same way before building
    init = build_model(ckpt.run.model).state_dict()
    backbone = [k for k in init if k.startswith("backbone.")]
    head = [k for k in init if k.startswith("layers.") and init[k].is_floating_point()]
    assert backbone and all(torch.equal(init[k], ckpt.model[k]) for k in backbone)
    assert any(not torch.equal(init[k], ckpt.model[k]) for k in head)  # the rest did train


def test_backbone_lr_scale_slows_only_the_trunk(tiny, tiny_css2d, tmp_path):
    run = _run(tiny, tiny_css2d, backbone_lr_scale=1e-3)
    trainer = Trainer(run, tmp_path)
    trainer.fit()
    assert sorted(g["lr"] for g in trainer.optimizer.param_groups) == pytest.approx([1e-6, 1e-3])
    torch.manual_seed(run.train.seed)  # the trainer seeds the same way before building
    init = build_model(load_checkpoint(tmp_path / LAST).run.model).state_dict()
    trained = dict(trainer.model.named_parameters())
    moved = {n: (trained[n].detach() - init[n]).abs().max().item() for n in trained}
    # Adam moves a weight by about lr per step: 3 steps at 1e-6 stay far below one at 1e-3.
    assert max(v for n, v in moved.items() if n.startswith("backbone.")) < 1e-5
    assert max(v for n, v in moved.items() if n.startswith("layers.")) > 5e-4
    with pytest.raises(TgirUserError, match="backbone_lr_scale"):
        TrainConfig(backbone_lr_scale=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, tiny_css2d, tmp_path, monkeypatch):
    run = _run(tiny, tiny_css2d)
    Trainer(run, tmp_path).fit()
    good = (tmp_path / LAST).read_bytes()
    trainer = Trainer(RunConfig(run.model, TrainConfig(**{**run.train.__dict__, "epochs": 2, "max_steps": 6})),
                      tmp_path)
    def nan_loss(self, *args):
        return {"loss": torch.tensor(float("nan"), requires_grad=True)}

    from tgir.models import amc

    monkeypatch.setattr(amc.AMC, "loss", nan_loss)
    message = r"loss became nan at step 4; stopped\. Last good checkpoint: .*last\.pt"
    with pytest.raises(TrainingDiverged, match=message):
        trainer.fit(resume=True)
    assert (tmp_path / LAST).read_bytes() == good


def test_checkpoint_errors(tiny, tiny_css2d, tmp_path):
    with pytest.raises(TgirUserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TgirUserError, match=r"junk\.pt: not a tgir checkpoint") as err:
        load_checkpoint(tmp_path / "junk.pt")
    assert "weights_only" not in str(err.value)  # torch's advice would run code from the file
    Trainer(_run(tiny, tiny_css2d), tmp_path).fit()
    data = torch.load(tmp_path / LAST, weights_only=True)
    run = json.loads(data["run"])
    run["model"]["router"]["gating"] = "softmax"  # a field this code does not have
    data["run"] = json.dumps(run)
    torch.save(data, tmp_path / "odd.pt")
    with pytest.raises(TgirUserError, match=r"config does not match this tgir: .*unknown field\(s\) gating"):
        load_checkpoint(tmp_path / "odd.pt")
    data = torch.load(tmp_path / LAST, weights_only=True)
    run = json.loads(data["run"])
    run["model"]["embed_dim"] = 64  # config says 64, weights are 32 wide
    data["run"] = json.dumps(run)
    torch.save(data, tmp_path / "wide.pt")
    with pytest.raises(TgirUserError, match="weights do not fit the model its config describes"):
        model_from_checkpoint(tmp_path / "wide.pt")


class _ColourModel(RetrievalModel):
    """Embeds an image as its mean colour and a text as a one-hot colour: rankings are known."""

    def __init__(self):
        super().__init__(ModelConfig(image_size=32, embed_dim=8))

    def encode_image(self, images):
        emb = torch.zeros(len(images), 8)
        emb[:, :3] = images.mean(dim=(2, 3))
        return l2norm(emb), emb[:, None]

    def encode_text(self, ids, lengths):
        return (torch.nn.functional.one_hot(ids[:, 0] - 4, 8).float(),)

    def compose(self, tokens, text):
        return l2norm(text)


def test_eval_on_a_toy_gallery(tmp_path):
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    images = []
    for i, (name, rgb) in enumerate(colours.items()):
        Image.new("RGB", (32, 32), rgb).save(tmp_path / f"{name}.png")
        images.append(ImageRecord(tmp_path / f"{name}.png", name, i))
    # q0: red image + "green" -> wants green: green first -> hit at 1.
    # q1: green image + "red" but the target is blue: red first, blue second (green excluded).
    queries = [Query(0, "green", 1, 1), Query(1, "red", 2, 2)]
    split = RetrievalSplit("css", "test", images, queries, list(colours))
    vocab = Vocabulary(["red", "green", "blue"])
    result = evaluate_models([(_ColourModel(), vocab)], split, batch_size=2)
    assert (result["R@1"], result["R@5"]) == (50.0, 100.0)
    both = evaluate_models([(_ColourModel(), vocab), (_ColourModel(), vocab)], split)
    assert both["R@1"] == 50.0
    assert np.isclose(result["R@10"], 100.0)


def test_feature_cache_on_disk_is_reused(tiny, tiny_css2d, tmp_path, monkeypatch):
    run = replace_path(_run(tiny, tiny_css2d), "model.backbone.trainable", False)
    run = replace_path(run, "train.feature_cache", str(tmp_path / "cache"))
    first = Trainer(run, tmp_path / "a").fit()
    files = list((tmp_path / "cache").glob("features-*.pt"))
    assert len(files) == 1

    from tgir.training import data

    def no_build(*args, **kwargs):
        raise AssertionError("the cached features should have been reused")

    monkeypatch.setattr(data.FeatureCache, "build", no_build)
    second = Trainer(run, tmp_path / "b").fit()
    assert second["history"] == first["history"]


def test_skip_rates_count_zero_gates():
    from tgir.training.embed import skip_rates

    gates = [torch.tensor([[[0.9, 0.0, 0.0], [0.8, 0.7, 0.0]]]), torch.tensor([[[0.6, 0.5, 0.7], [0.0, 0.6, 0.0]]])]
    rates = skip_rates(gates, ("nin", "gtn", "crn"))
    assert rates["layer1"] == {"nin": 0.0, "gtn": 0.5, "crn": 0.5}
    assert rates["layer2"] == {"nin": 0.5, "gtn": 0.0, "crn": 1.0}
    assert rates["overall"] == {"nin": 0.25, "gtn": 0.25, "crn": 0.75}


def test_grouped_batches_share_reference_images():
    from tgir.training.data import GroupedBatchSampler

    queries = [Query(ref, f"t{i}", 100 + i, i) for ref in range(5) for i in range(ref, ref + 6)]
    sampler = GroupedBatchSampler(queries, batch_size=6, group=3, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5  # 5 refs x 2 full groups of 3 = 10 groups, 2 per batch
    for batch in batches:
        refs = [queries[i].ref for i in batch]
        assert len(batch) == 6 and refs[:3] == [refs[0]] * 3 and refs[3:] == [refs[3]] * 3
    assert sorted(i for b in batches for i in b) == list(range(30))
    again = list(GroupedBatchSampler(queries, 6, 3, torch.Generator().manual_seed(0)))
    assert again == batches
    with pytest.raises(TgirUserError, match="must divide"):
        GroupedBatchSampler(queries, 6, 4, torch.Generator())


def test_label_aware_loss_ignores_duplicate_targets():
    from tgir.models.base import batch_classification_loss

    q = torch.eye(3)
    t = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # targets 0 and 1 are one scene
    plain = batch_classification_loss(q, t, 5.0)
    aware = batch_classification_loss(q, t, 5.0, torch.tensor([7, 7, 9]))
    # logits rows: [5, 5, 0], [0, 0, 0], [0, 0, 5]. Row 0: plain -5 + log(2e^5 + 1), aware (column 1
    # dropped) -5 + log(e^5 + 1). Row 1: plain log 3, aware (column 0 dropped) log 2. Row 2 unchanged.
    row2 = -5 + math.log(math.exp(5) + 2)
    assert plain.item() == pytest.approx((-5 + math.log(2 * math.exp(5) + 1) + math.log(3) + row2) / 3, rel=1e-5)
    assert aware.item() == pytest.approx((-5 + math.log(math.exp(5) + 1) + math.log(2) + row2) / 3, rel=1e-5)


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "the file is empty"),
    (b"hello world\n", "not a PyTorch file"),
    (b"\x00" * 10, "not a PyTorch file"),
])
def test_unreadable_checkpoint_is_one_clear_line(tmp_path, content, reason):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(TgirUserError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message == (f"{path}: not a tgir checkpoint (expected a file written by tgir train or tgir ship): "
                       f"{message.rsplit(': ', 1)[-1]}")
    assert reason in message and "weights_only" not in message and "\n" not in message


def test_checkpoint_with_python_objects_is_refused_without_unsafe_advice(tmp_path):
    import datetime

    torch.save({"when": datetime.datetime(2024, 1, 1)}, tmp_path / "objects.pt")
    with pytest.raises(TgirUserError, match="Python objects other than tensors") as err:
        load_checkpoint(tmp_path / "objects.pt")
    assert "weights_only" not in str(err.value) and "arbitrary code" not in str(err.value)


@pytest.mark.parametrize(("change", "message"), [
    ({"lr": -1.0}, "lr must be > 0.0, got -1.0"),
    ({"lr": 0.0}, "lr must be > 0.0"),
    ({"lr": math.inf}, "lr must be a finite number"),
    ({"lr": math.nan}, "lr must be a finite number"),
    ({"weight_decay": -1e-6}, "weight_decay must be >= 0.0"),
    ({"lr_gamma": 0.0}, "lr_gamma must be > 0.0"),
    ({"lr_step_epochs": (0, 5)}, "lr_step_epochs must be epochs >= 1"),
    ({"workers": -1}, "workers must be >= 0"),
    ({"min_count": 0}, "min_count must be >= 1"),
    ({"max_steps": -1}, "max_steps must be >= 0"),
    ({"eval_every": -1}, "eval_every must be >= 0"),
    ({"group_size": -2}, "group_size must be >= 0"),
    ({"backbone_lr_scale": math.nan}, "backbone_lr_scale must be > 0"),
    ({"backbone_lr_scale": math.inf}, "backbone_lr_scale must be > 0"),
    ({"val_fraction": math.nan}, "val_fraction must be in"),
])
def test_train_config_refuses_numbers_that_would_fail_mid_run(change, message):
    with pytest.raises(TgirUserError, match=f"^train: {message}"):
        TrainConfig(**change)


def test_resume_without_last_checkpoint_is_an_error(tiny, tiny_css2d, tmp_path):
    with pytest.raises(TgirUserError, match=r"--resume: .*last\.pt not found; drop --resume to start a new run"):
        Trainer(_run(tiny, tiny_css2d), tmp_path).fit(resume=True)
    assert not (tmp_path / "run.json").exists()


def test_run_paths_are_stored_absolute(tiny, tiny_css2d, tmp_path, monkeypatch):
    from tgir.training.loop import with_absolute_paths

    monkeypatch.chdir(tiny_css2d.parent)
    run = replace_path(_run(tiny, tiny_css2d.name), "train.init", "runs/a/best.pt")
    absolute = with_absolute_paths(run).train
    assert absolute.data == str(tiny_css2d) and absolute.init == str(tiny_css2d.parent / "runs/a/best.pt")
    assert absolute.feature_cache == ""  # "" means no cache, not the working directory
    assert Trainer(run, tmp_path).run.train.data == str(tiny_css2d)
