"""Checkpoints: state dicts plus configs and vocabulary as JSON text, never pickled modules.

Loaded with ``torch.load(weights_only=True)``. A checkpoint whose config does not match this code,
or whose tensors do not fit the model the config describes, is refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from tgir.errors import TgirUserError
from tgir.manifest import Manifest
from tgir.models.base import RetrievalModel, build_model
from tgir.models.config import ModelConfig
from tgir.training.config import RunConfig
from tgir.vocab import Vocabulary

FORMAT = "tgir-checkpoint"
NOT_OURS = "not a tgir checkpoint (expected a file written by tgir train or tgir ship)"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint file."""

    run: RunConfig
    vocab: Vocabulary
    model: dict
    ema: dict | None
    optimizer: dict | None
    state: dict


def save_checkpoint(path: str | Path, run: RunConfig, vocab: Vocabulary, model: torch.nn.Module,
                    ema: torch.nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    state: dict | None = None) -> None:
    """Write a checkpoint atomically (temp file, then rename), so a crash never leaves half a file."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "run": json.dumps(run.to_dict()),
        "vocab": json.dumps(vocab.to_dict()),
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "state": dict(state or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file written by ``save_checkpoint``."""
    path = Path(path)
    if not path.is_file():
        raise TgirUserError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise TgirUserError(f"{path}: cannot read the checkpoint ({err.strerror or err})") from None
    except Exception as err:  # torch.load raises a zoo of types on junk (struct.error, UnpicklingError, ...)
        raise TgirUserError(f"{path}: {NOT_OURS}: {_unreadable_reason(path, err)}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TgirUserError(f"{path}: {NOT_OURS}: no \"format\": \"{FORMAT}\" entry")
    if data.get("version") != VERSION:
        raise TgirUserError(f"{path}: checkpoint version {data.get('version')!r}; this tgir reads {VERSION}")
    try:
        run = RunConfig.from_dict(json.loads(data["run"]))
        vocab_data = json.loads(data["vocab"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise TgirUserError(f"{path}: damaged checkpoint metadata ({err})") from None
    except TgirUserError as err:
        raise TgirUserError(f"{path}: config does not match this tgir: {err}") from None
    vocab = Vocabulary(vocab_data["words"], vocab_data.get("max_length", 64))
    return Checkpoint(run, vocab, data["model"], data.get("ema"), data.get("optimizer"), data.get("state", {}))


def _unreadable_reason(path: Path, err: Exception) -> str:
    """A short reason why ``torch.load`` refused a file. torch's own message can be empty (an empty
    file) or advise ``weights_only=False``, which would execute code from the file: never pass it on."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        if isinstance(err, pickle.UnpicklingError):
            return "a PyTorch file holding Python objects other than tensors and plain data, which tgir never loads"
        return "a zip archive that is not a PyTorch file, or a damaged one"
    return "not a PyTorch file (another format, or truncated)"


def build_for_loading(config: ModelConfig) -> RetrievalModel:
    """Build a model whose weights will be overwritten: skip pretrained-weight and GloVe loading
    (the files may not exist here), but keep the original config on the model."""
    light = config.replace(backbone=dataclasses.replace(config.backbone, weights="none"),
                           text=dataclasses.replace(config.text, glove=False))
    model = build_model(light)
    model.config = config
    return model


def load_state(model: torch.nn.Module, state: dict, where: str) -> None:
    """``load_state_dict`` with a one-line error naming missing, unexpected or misshapen tensors.

    Modules' load hooks run first (e.g. CRN splits an older joint ``fuse.weight``), so names are
    compared after them.
    """
    own = model.state_dict()
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    result = None if shapes else model.load_state_dict(state, strict=False)
    missing, unexpected = (sorted(result.missing_keys), sorted(result.unexpected_keys)) if result else ([], [])
    if missing or unexpected or shapes:
        parts = [f"{name}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes))
                 if keys]
        raise TgirUserError(f"{where}: weights do not fit the model its config describes ({'; '.join(parts)})")


def model_from_checkpoint(path: str | Path, use_ema: bool = True) -> tuple[RetrievalModel, Checkpoint]:
    """Rebuild the model a checkpoint describes, in eval mode, with its (EMA) weights."""
    ckpt = load_checkpoint(path)
    model = build_for_loading(ckpt.run.model)
    weights = ckpt.ema if use_ema and ckpt.ema is not None else ckpt.model
    load_state(model, weights, str(path))
    return model.eval(), ckpt


def model_for_bundle(manifest: Manifest, folder: str | Path, checkpoint: str | Path | None = None,
                     reference: bool = False) -> RetrievalModel:
    """The model a bundle was exported from, with the bundle's router settings.

    Args:
        manifest: The bundle's manifest.
        folder: The bundle (for messages).
        checkpoint: The source checkpoint; None: the one the manifest names, if still unchanged.
        reference: Run AMC's router eagerly (experts as needed, sub-threshold gates zeroed): the
            graphs' numbers without control flow, the reference parity and runners compare with.

    Raises:
        TgirUserError: No usable checkpoint, or one whose model config is not the bundle's.
    """
    if checkpoint is None:
        checkpoint, why = manifest.source_checkpoint()
        if checkpoint is None:
            raise TgirUserError(f"{folder}: {why}")
    model, _ = model_from_checkpoint(checkpoint)
    router = manifest.router
    if router and model.config.family == "amc":  # the settings the exporter wrote into the config
        model.set_router(tau=router["tau"], conditional=router["form"] == "if")
    if model.config.digest() != manifest.model["config_digest"]:
        raise TgirUserError(f"{checkpoint}: its model config (digest {model.config.digest()}) differs from the one "
                            f"{folder} was exported from ({manifest.model['config_digest']}): another checkpoint, or "
                            "a bundle from another tgir version; export the bundle again from this checkpoint")
    if router and reference:
        model.set_router(always_run=False, conditional=False)
    return model.eval()
