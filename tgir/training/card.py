"""Shipping a trained model: compact weights plus a model card (JSON + Markdown) whose numbers are
measured on the shipped weights themselves."""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import tempfile
import time
from pathlib import Path

import torch

from tgir.data.registry import load_split
from tgir.errors import TgirUserError
from tgir.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from tgir.training.embed import evaluate_models


def machine() -> str:
    """A one-line description of this machine (CPU model, cores, torch)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {threads} threads, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def ship(checkpoint: str | Path, name: str, out_dir: str | Path, data: str | None = None, split: str = "test",
         tau: float | None = None, half: bool = True, device: str = "cpu") -> dict:
    """Write ``<out>/<name>.pt`` (EMA weights, float16 when ``half``) and its model card.

    Args:
        checkpoint: A training checkpoint (``best.pt``).
        name: Base name of the shipped files.
        out_dir: Folder to write to (``trained/``).
        data: Dataset root to measure on (default: the one the model was trained on).
        split: Split to measure on (the test split; training never saw it).
        tau: AMC only: ship with this gate threshold and conditional experts.
        half: Store weights as float16 (halves the file; recall is measured after the rounding).
        device: Where to run the measurement.

    Returns:
        The card as a dict.
    """
    _check_name(name)
    model, ckpt = model_from_checkpoint(checkpoint)
    out = _writable_folder(out_dir, name)  # before the slow measurement
    if tau is not None:
        if model.config.family != "amc":
            raise TgirUserError(f"--tau applies to AMC only; this checkpoint is {model.config.family!r}")
        model.set_router(tau=tau, conditional=tau > 0)
    if half:  # round the weights as they will be stored, so the card measures what ships
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    run = dataclasses.replace(ckpt.run, model=model.config)
    t = run.train
    started = time.perf_counter()
    test = load_split(t.dataset, data or t.data, split, **t.options)  # a bad --data fails before any file is written
    target = out / f"{name}.pt"
    save_checkpoint(target, run, ckpt.vocab, model.half() if half else model, state=dict(ckpt.state))
    model.float()
    result = evaluate_models([(model, ckpt.vocab)], test, device=device)
    unrecorded = f"{machine()} (read when shipping; the run did not record one)"
    card = {
        "name": name,
        "file": target.name,
        "file_mb": round(target.stat().st_size / 2**20, 2),
        "family": model.config.family,
        "params": sum(p.numel() for p in model.parameters()),
        "config": run.to_dict(),
        "training": {"command": _run_command(checkpoint), "epochs": ckpt.state.get("epoch"),
                     "steps": ckpt.state.get("step"), "wall_seconds": ckpt.state.get("train_seconds"),
                     "machine": ckpt.state.get("machine") or unrecorded, "best_val_R@1": ckpt.state.get("best"),
                     "history": ckpt.state.get("history"), **_fine_tuned_from(t.init)},
        "test": {"dataset": t.dataset, "split": split, **result},
        "measured_on": machine(),
        "measure_seconds": round(time.perf_counter() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
        "weights_dtype": "float16" if half else "float32",
    }
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown_card(card))
    return card


NAME_CHARACTERS = "letters, digits, '.', '_' and '-', not starting with '.'"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _check_name(name: str) -> str:
    """A base name for the shipped files: no path separators, no hidden files, nothing empty."""
    if not _NAME.fullmatch(name):
        raise TgirUserError(f"--name {name!r}: a file base name is expected; allowed: {NAME_CHARACTERS}")
    return name


def _writable_folder(out_dir: str | Path, name: str) -> Path:
    """``out_dir``, created if missing, after checking a file can be written there."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=f".{name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise TgirUserError(f"{out}: cannot write the shipped model there ({err.strerror or err})") from None
    return out


def _run_command(checkpoint: str | Path) -> str | None:
    """The run's commands (``command.txt`` beside the checkpoint; resumes follow the start)."""
    path = Path(checkpoint).parent / "command.txt"
    lines = path.read_text().split("\n") if path.is_file() else []
    return " ; then ".join(line.strip() for line in lines if line.strip()) or None


def _fine_tuned_from(init: str) -> dict:
    """For a ``--init`` run: the starting checkpoint's own training (command, epochs, wall time), so
    the card accounts for the whole training and not only the fine-tune."""
    if not init:
        return {}
    source = {"checkpoint": init}
    if Path(init).is_file():
        state = load_checkpoint(init).state
        source.update(command=_run_command(init), epochs=state.get("epoch"), steps=state.get("step"),
                      wall_seconds=state.get("train_seconds"), machine=state.get("machine"))
    return {"fine_tuned_from": source}


def _fmt(x) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def _source_lines(training: dict) -> list[str]:
    source = training.get("fine_tuned_from")
    if not source:
        return []
    if "command" not in source:
        return [f"- fine-tuned from: `{source['checkpoint']}` (no longer there; its training is not recorded)"]
    return [f"- fine-tuned from: `{source['checkpoint']}`, itself trained {source['epochs']} epochs, {source['steps']} "
            f"steps, {source['wall_seconds']} s on {source['machine']}: `{source['command']}`"]


def markdown_card(card: dict) -> str:
    """The model card as Markdown."""
    test = card["test"]
    ks = [k for k in test if k.startswith("R@")]
    lines = [f"# {card['name']}", "",
             f"- family: **{card['family']}**, {card['params'] / 1e6:.2f} M parameters, "
             f"`{card['file']}` ({card['file_mb']} MB, {card['weights_dtype']} weights)",
             f"- trained: {card['training']['epochs']} epochs, {card['training']['steps']} steps, "
             f"{card['training']['wall_seconds']} s on {card['training']['machine']}",
             f"- test recall measured on: {card['measured_on']}",
             f"- command: `{card['training']['command']}`", *_source_lines(card['training']),
             f"- measured: {card['date']}", "",
             f"## {test['dataset']} {test['split']} ({test['queries']} queries)", "",
             "| | " + " | ".join(ks) + " |", "|---|" + "---|" * len(ks),
             "| overall | " + " | ".join(_fmt(test[k]) for k in ks) + " |"]
    for op, r in test.get("per_op", {}).items():
        lines.append(f"| {op} | " + " | ".join(_fmt(r[k]) for k in ks) + " |")
    routing = test.get("routing")
    if routing:
        lines += ["", f"## Expert skip rate at batch 1 (tau = {routing['tau']})", "",
                  "| layer | " + " | ".join(routing["skip_rate"]["overall"]) + " |",
                  "|---|" + "---|" * len(routing["skip_rate"]["overall"])]
        for layer, rates in routing["skip_rate"].items():
            lines.append(f"| {layer} | " + " | ".join(f"{100 * v:.1f}%" for v in rates.values()) + " |")
    lines += ["", "Config: see the JSON card (`config`)."]
    return "\n".join(lines) + "\n"
