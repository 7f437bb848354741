"""The training loop: deterministic, resumable, EMA-evaluated, and safe against a diverging loss."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tgir.data.records import RetrievalSplit
from tgir.data.registry import load_split
from tgir.errors import TgirUserError
from tgir.evaluate import evaluate_split
from tgir.models.base import RetrievalModel, build_model
from tgir.training.card import machine
from tgir.training.checkpoint import load_checkpoint, load_state, save_checkpoint
from tgir.training.config import RunConfig, TrainConfig
from tgir.training.data import FeatureCache, GroupedBatchSampler, TripletIndexDataset, hold_out, make_collate
from tgir.training.embed import embed_split, preprocess_for
from tgir.vocab import Vocabulary

LAST, BEST = "last.pt", "best.pt"


class TrainingDiverged(TgirUserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Progress:
    """What the loop reports after each step (the CLI draws it; library code never sees click)."""

    phase: str
    done: int
    total: int
    info: dict


Reporter = Callable[[Progress], None]


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TgirUserError("device 'cuda' requested but no CUDA device is available; use --device cpu")
    return name


def require_resumable(out_dir: str | Path) -> None:
    """Refuse to resume a run folder that has no ``last.pt`` (instead of silently starting afresh)."""
    last = Path(out_dir) / LAST
    if not last.is_file():
        raise TgirUserError(f"--resume: {last} not found; drop --resume to start a new run")


def with_absolute_paths(run: RunConfig) -> RunConfig:
    """``run`` with its dataset root, initial checkpoint and feature cache as absolute paths, so that
    ``run.json`` and checkpoints still point at them from another working directory (``tgir eval``)."""
    t = run.train
    paths = {name: str(Path(getattr(t, name)).resolve()) for name in ("data", "init", "feature_cache")
             if getattr(t, name)}  # "" means "none" for init and feature_cache: keep it
    return dataclasses.replace(run, train=dataclasses.replace(t, **paths))


class EMA:
    """Exponential moving average of a model's parameters and buffers (evaluated, never trained)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for ema_t, t in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if ema_t.dtype.is_floating_point:
                ema_t.mul_(self.decay).add_(t.detach(), alpha=1 - self.decay)
            else:
                ema_t.copy_(t)


def _validation_split(split: RetrievalSplit, val_queries) -> RetrievalSplit:
    return dataclasses.replace(split, split=f"{split.split}-holdout", queries=val_queries)


def holdout_split(train: TrainConfig, data: str | None = None) -> RetrievalSplit:
    """The validation hold-out a run with this ``TrainConfig`` selected its checkpoint on."""
    split = load_split(train.dataset, data or train.data, "train", **train.options)
    _, val = hold_out(split, train.val_fraction, train.seed)
    if not val:
        raise TgirUserError("this run held nothing out (val_fraction = 0)")
    return _validation_split(split, val)


def validate(model: RetrievalModel, split: RetrievalSplit, vocab: Vocabulary, device: str,
             cache: FeatureCache | None = None) -> dict:
    queries, gallery = embed_split(model, split, vocab, device=device,
                                   features=cache.__getitem__ if cache is not None else None)
    return evaluate_split(split, queries, gallery)


class Trainer:
    """Trains one run into ``out_dir`` (``last.pt``, ``best.pt``, ``run.json``, ``vocab.json``,
    ``metrics.json``)."""

    def __init__(self, run: RunConfig, out_dir: str | Path, reporter: Reporter | None = None) -> None:
        self.run, self.out = with_absolute_paths(run), Path(out_dir)
        self.report = reporter or (lambda p: None)
        self.device = resolve_device(run.train.device)

    def _setup(self, resume: bool) -> dict:
        if resume:
            require_resumable(self.out)
        t = self.run.train
        torch.manual_seed(t.seed)
        self.split = load_split(t.dataset, t.data, "train", **t.options)
        train_q, val_q = hold_out(self.split, t.val_fraction, t.seed)
        if len(train_q) < t.batch_size:
            raise TgirUserError(f"only {len(train_q)} training queries for batch size {t.batch_size}")
        self.train_queries, self.val = train_q, _validation_split(self.split, val_q) if val_q else None
        state = {"epoch": 0, "step": 0, "best": -1.0, "history": []}
        ckpt = load_checkpoint(self.out / LAST) if resume else None
        init = load_checkpoint(t.init) if ckpt is None and t.init else None
        if ckpt is not None:
            # The model (and its vocabulary) come from the checkpoint; the schedule from this run, so a
            # resumed run can be given more epochs.
            self.run, self.vocab = dataclasses.replace(ckpt.run, train=t), ckpt.vocab
        else:
            # Token ids must mean what they meant to the initial weights: keep their vocabulary.
            self.vocab = init.vocab if init else Vocabulary.build((q.text for q in train_q), min_count=t.min_count)
            text = dataclasses.replace(self.run.model.text, vocab_size=len(self.vocab))
            self.run = dataclasses.replace(self.run, model=self.run.model.replace(text=text))
        self.model = build_model(self.run.model).to(self.device)
        if init is not None:
            load_state(self.model, init.ema if init.ema is not None else init.model, t.init)
        elif ckpt is None and self.run.model.text.glove:
            self.model.text.load_glove(self.vocab.itos)  # GloVe rows need the vocabulary, known only now
        groups = self._param_groups()
        # Kept here, not read back from the optimizer: a resumed run's saved groups carry the old value.
        self.lr_scales = [g.pop("lr_scale") for g in groups]
        self.optimizer = torch.optim.Adam(groups, lr=t.lr, eps=1e-8, weight_decay=t.weight_decay)
        self.ema = EMA(self.model, t.ema_decay) if t.ema_decay > 0 else None
        if ckpt is not None:
            load_state(self.model, ckpt.model, str(self.out / LAST))
            if self.ema is not None and ckpt.ema is not None:
                load_state(self.ema.model, ckpt.ema, str(self.out / LAST))
            if ckpt.optimizer:
                try:
                    self.optimizer.load_state_dict(ckpt.optimizer)
                except ValueError:  # its parameters were laid out by an older model definition
                    raise TgirUserError(f"{self.out / LAST}: its optimizer state does not fit this model's parameters "
                                        "(saved by an older tgir, or with another train.backbone_lr_scale); "
                                        "start a new run from its weights with "
                                        f"--init {self.out / LAST} instead of --resume") from None
            state.update(ckpt.state)
        self.out.mkdir(parents=True, exist_ok=True)
        self.run.save(self.out / "run.json")
        self.vocab.save(self.out / "vocab.json")
        return state

    def _param_groups(self) -> list[dict]:
        """Trainable parameters, the trunk in its own group when it has its own rate. One group
        otherwise, so that the optimizer state of runs saved before the option still loads."""
        scale = self.run.train.backbone_lr_scale
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if scale == 1.0:
            return [{"params": [p for _, p in trainable], "lr_scale": 1.0}]
        trunk = [p for n, p in trainable if n.startswith("backbone.")]
        rest = [p for n, p in trainable if not n.startswith("backbone.")]
        return [g for g in ({"params": rest, "lr_scale": 1.0}, {"params": trunk, "lr_scale": scale}) if g["params"]]

    def _lr(self, epoch: int) -> float:
        t = self.run.train
        return t.lr * t.lr_gamma ** sum(epoch >= e for e in t.lr_step_epochs)

    def _loader(self, epoch: int, cache: FeatureCache | None) -> DataLoader:
        t = self.run.train
        gen = torch.Generator().manual_seed(t.seed * 1000 + epoch)  # same order after a resume
        collate = make_collate(self.vocab, self.split, preprocess_for(self.model), cache)
        data = TripletIndexDataset(self.train_queries)
        if t.group_size > 1:
            sampler = GroupedBatchSampler(self.train_queries, t.batch_size, t.group_size, gen)
            return DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=t.workers)
        return DataLoader(data, batch_size=t.batch_size, shuffle=True, drop_last=True, generator=gen,
                          collate_fn=collate, num_workers=t.workers)

    def _save(self, name: str, state: dict) -> None:
        save_checkpoint(self.out / name, self.run, self.vocab, self.model, self.ema and self.ema.model,
                        self.optimizer, state)

    def _step(self, batch, state: dict) -> dict:
        ref, ids, lengths, target, labels = batch
        move = (lambda x: [f.to(self.device) for f in x]) if isinstance(ref, list) else (
            lambda x: x.to(self.device))
        losses = self.model.loss(move(ref), ids.to(self.device), lengths.to(self.device), move(target),
                                 labels.to(self.device) if self.run.train.group_size > 1 else None)
        loss_value = losses["loss"].item()
        if not math.isfinite(loss_value):
            kept = self.out / LAST if (self.out / LAST).is_file() else None
            raise TrainingDiverged(f"loss became {loss_value} at step {state['step'] + 1}; "
                                   f"stopped. Last good checkpoint: {kept or 'none yet'}. Lower --lr?")
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        state["step"] += 1
        return {k: round(float(v.detach()), 4) for k, v in losses.items()}

    def fit(self, resume: bool = False) -> dict:
        """Train, evaluating the EMA weights on the hold-out after epochs; returns final metrics."""
        state = self._setup(resume)
        t = self.run.train
        cache = None
        if not self.run.model.backbone.trainable:
            cache = self._feature_cache()
        while state["epoch"] < t.epochs and not (t.max_steps and state["step"] >= t.max_steps):
            epoch = state["epoch"]
            for group, scale in zip(self.optimizer.param_groups, self.lr_scales, strict=True):
                group["lr"] = self._lr(epoch) * scale
            self.model.train()
            loader, start = self._loader(epoch, cache), time.perf_counter()
            epoch_start = start
            for i, batch in enumerate(loader, 1):
                info = self._step(batch, state)
                info["q/s"] = round(i * t.batch_size / (time.perf_counter() - start), 1)
                self.report(Progress(f"epoch {epoch + 1}/{t.epochs}", i, len(loader), info))
                if t.max_steps and state["step"] >= t.max_steps:
                    break
            state["epoch"] = epoch + 1
            state["train_seconds"] = round(state.get("train_seconds", 0.0) + time.perf_counter() - epoch_start, 1)
            state["machine"] = machine()
            self._end_epoch(state, cache)
        return state

    def _feature_cache(self) -> FeatureCache:
        """Backbone outputs of every training image (float16), optionally kept on disk for reuse."""
        args = (self.model.backbone, self.split, preprocess_for(self.model), 64, self.device,
                lambda d, n: self.report(Progress("caching features", d, n, {})))
        folder = self.run.train.feature_cache
        if not folder:
            return FeatureCache.build(*args)
        backbone = dataclasses.asdict(self.run.model.backbone)
        key = {"backbone": {k: backbone[k] for k in ("name", "levels", "weights")},
               "image_size": self.run.model.image_size, "dataset": self.run.train.dataset,
               "split": self.split.split, "images": [str(r.path.resolve()) for r in self.split.images]}
        return FeatureCache.load_or_build(folder, key, *args)

    def _end_epoch(self, state: dict, cache: FeatureCache | None) -> None:
        t = self.run.train
        record = {"epoch": state["epoch"], "step": state["step"]}
        last = state["epoch"] >= t.epochs or bool(t.max_steps and state["step"] >= t.max_steps)
        if self.val is not None and (last or (t.eval_every and state["epoch"] % t.eval_every == 0)):
            model = self.ema.model if self.ema is not None else self.model
            metrics = validate(model, self.val, self.vocab, self.device, cache)
            record["val"] = {k: v for k, v in metrics.items() if k.startswith("R@")}
            if metrics["R@1"] > state["best"]:
                state["best"] = metrics["R@1"]
                self._save(BEST, state)
        state["history"] = [*state["history"], record]
        self._save(LAST, state)
        (self.out / "metrics.json").write_text(json.dumps(state, indent=2) + "\n")
        self.report(Progress("epoch done", state["epoch"], t.epochs, record))
