"""Training configuration: what to train on and how, saved with the model config as ``run.json``."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tgir.errors import TgirUserError
from tgir.models.config import ModelConfig, _build


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        dataset: Dataset name (``tgir.data.registry.DATASETS``).
        data: Dataset root folder.
        options: Loader settings, e.g. ``{"category": "dress"}`` for FashionIQ.
        epochs: Passes over the training queries.
        batch_size: Triplets per step (drop_last, as AMC).
        lr: Adam learning rate (AMC: 1e-4).
        weight_decay: Adam weight decay (AMC: 1e-6).
        backbone_lr_scale: Learning-rate multiplier of the image trunk (google/tirg trains its
            ImageNet trunk at 0.1x the composer's rate); 1 = one rate for every parameter.
        lr_step_epochs: Epochs after which the learning rate is multiplied by ``lr_gamma``.
        lr_gamma: Step decay factor.
        ema_decay: Decay of the weight EMA used for evaluation (AMC: 0.999); 0 disables it.
        val_fraction: Share of training reference images held out for model selection (never
            the test split).
        seed: Seed of every random choice (weights, shuffling, the validation hold-out).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        workers: DataLoader worker processes for image decoding.
        min_count: Vocabulary: drop words seen fewer times in the training texts.
        max_steps: Stop after this many steps in total (0 = no limit; for smoke tests).
        eval_every: Evaluate on the validation hold-out every this many epochs (0 = only at the end).
        group_size: Queries per reference image in a batch (0 or 1 = random batches, as the papers;
            k > 1 = batches of batch_size / k reference images with k queries each: hard negatives).
        feature_cache: Folder where a frozen backbone's features are saved and reused across runs
            ("" = keep them in memory only).
        init: Checkpoint whose weights (its EMA when it has one) and vocabulary start this run
            (fine-tuning, e.g. a dense AMC turned sparse); optimizer and schedule start afresh.
            "" = random initialisation (ImageNet trunk).
    """

    dataset: str = "css2d"
    data: str = "data/css2d"
    options: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-6
    backbone_lr_scale: float = 1.0
    lr_step_epochs: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    ema_decay: float = 0.999
    val_fraction: float = 0.05
    seed: int = 300
    device: str = "auto"
    workers: int = 0
    min_count: int = 1
    max_steps: int = 0
    eval_every: int = 1
    feature_cache: str = ""
    group_size: int = 0
    init: str = ""

    def __post_init__(self) -> None:
        _check_numbers(self)
        if self.epochs < 1 or self.batch_size < 2:
            raise TgirUserError("train: need epochs >= 1 and batch_size >= 2 (the loss contrasts a batch)")
        if not 0 <= self.val_fraction < 0.5:
            raise TgirUserError(f"train: val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if not 0 < self.backbone_lr_scale < math.inf:
            raise TgirUserError(f"train: backbone_lr_scale must be > 0, got {self.backbone_lr_scale} "
                                "(freeze the trunk with model.backbone.trainable=false instead)")
        if not 0 <= self.ema_decay < 1:
            raise TgirUserError(f"train: ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.group_size > 1 and self.batch_size % self.group_size:
            raise TgirUserError(f"train: group_size {self.group_size} must divide batch_size {self.batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise TgirUserError(f"train: unknown device {self.device!r}; valid choices: auto, cpu, cuda")


def train_preset(dataset: str) -> TrainConfig:
    """The default ``TrainConfig`` for ``dataset``: on CSS-style data, the shipped models' recipe.

    That is 8 epochs of Adam 2e-4 with one x0.1 step after epoch 6, each batch of 32 drawn as 16
    reference images x 2 queries (``group_size``: the other query of a reference is a hard
    negative; with 4 references x 8 queries AMC reached 74.3 R@1 against 86.1, README/RESULTS.md).
    Other datasets keep the papers' settings (``TrainConfig``'s defaults) until measured there.
    """
    if dataset in ("css", "css2d"):
        return TrainConfig(dataset=dataset, epochs=8, lr=2e-4, lr_step_epochs=(6,), group_size=2)
    return TrainConfig(dataset=dataset)


# field -> (lowest allowed value, whether that value itself is allowed)
_LOWER_BOUNDS = {
    "lr": (0.0, False), "weight_decay": (0.0, True), "lr_gamma": (0.0, False), "workers": (0, True),
    "min_count": (1, True), "max_steps": (0, True), "eval_every": (0, True), "group_size": (0, True),
}


def _check_numbers(t: TrainConfig) -> None:
    """Refuse numbers the optimizer, the DataLoader or the schedule would reject later, mid-run,
    with their own (less clear) messages."""
    for name, (low, inclusive) in _LOWER_BOUNDS.items():
        value = getattr(t, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise TgirUserError(f"train: {name} must be a finite number, got {value}")
        if value < low or (value == low and not inclusive):
            raise TgirUserError(f"train: {name} must be {'>=' if inclusive else '>'} {low}, got {value}")
    if any(e < 1 for e in t.lr_step_epochs):
        raise TgirUserError(f"train: lr_step_epochs must be epochs >= 1, got {list(t.lr_step_epochs)}")


@dataclass(frozen=True)
class RunConfig:
    """A training run: the model and how it is trained."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        if not isinstance(data, dict) or set(data) - {"model", "train"}:
            raise TgirUserError("run config: expected an object with 'model' and 'train'")
        model = ModelConfig.from_dict(data.get("model", ModelConfig().to_dict()))
        train = _build(TrainConfig, data.get("train", {}), "run config.train")
        return cls(model, train)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise TgirUserError(f"{path}: config file not found") from None
        except json.JSONDecodeError as err:
            raise TgirUserError(f"{path}: not valid JSON ({err})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
