"""``tgir train`` and ``tgir eval``: flags become one RunConfig; the library does the work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tgir.data.registry import DATASETS
from tgir.errors import TgirUserError
from tgir.models.config import FAMILIES


def _progress_reporter():
    """Draws one click progress bar per phase, with loss and throughput beside it."""
    from tgir.training.loop import Progress

    state: dict = {}
    interactive = sys.stderr.isatty()

    def report(p: Progress) -> None:
        if p.phase == "epoch done":
            close()
            click.echo(f"epoch {p.done}/{p.total}: {json.dumps(p.info)}", err=True)
            return
        if not interactive:  # logs: a line every 5% instead of a bar redrawn in place
            tick = (p.phase, 20 * p.done // max(p.total, 1))
            if tick != state.get("tick"):
                state["tick"] = tick
                info = " ".join(f"{k}={v}" for k, v in p.info.items())
                click.echo(f"{p.phase} {p.done}/{p.total} {info}".rstrip(), err=True)
            return
        if state.get("phase") != p.phase:
            close()
            state["bar"] = click.progressbar(length=p.total, label=p.phase, file=sys.stderr, show_pos=True,
                                             item_show_func=lambda _: state.get("info", ""))
            state["bar"].__enter__()
            state.update(phase=p.phase, done=0)
        state["info"] = " ".join(f"{k}={v}" for k, v in p.info.items())
        state["bar"].update(p.done - state["done"])
        state["done"] = p.done

    def close() -> None:
        bar = state.pop("bar", None)
        if bar is not None:
            bar.__exit__(None, None, None)
        state.pop("phase", None)

    return report, close


@click.command("train")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="run.json to start from.")
@click.option("--model", "family", type=click.Choice(FAMILIES), help="Model family (preset).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), help="Dataset format.")
@click.option("--data", help="Dataset root folder (the run records its absolute path).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--epochs", type=int, help="Training epochs. Default: the preset's (or --config's / --init's).")
@click.option("--batch-size", type=int, help="Triplets per step. Default: the preset's (or --config's / --init's).")
@click.option("--lr", type=float, help="Learning rate (> 0). Default: the preset's (or --config's / --init's).")
@click.option("--seed", type=int, help="Seed of every random choice. Default: the preset's (or --config's / --init's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where to train. Default: the config's value (auto: CUDA when available).")
@click.option("--max-steps", type=click.IntRange(min=0),
              help="Stop after this many steps in total (smoke runs); 0 = no limit. Default: the config's value "
                   "(0, no limit).")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
              help="Override any field, checked against its type, e.g. --set model.router.tau=0.3 "
                   "--set model.router.position=true --set train.lr_step_epochs=6,8.")
@click.option("--resume/--no-resume", default=False, show_default=True,
              help="Continue from OUT/last.pt (an error if there is none).")
@click.option("--init", "init", type=click.Path(dir_okay=False),
              help="Fine-tune: start from this checkpoint's weights, vocabulary and run config (flags and --set "
                   "still apply), with a fresh optimizer and schedule.")
def train(config_file, family, dataset, data, out_dir, epochs, batch_size, lr, seed, device, max_steps, sets,
          resume, init) -> None:
    """Train a model; writes last.pt, best.pt, run.json, vocab.json and metrics.json to --out."""
    from tgir.models.config import replace_path
    from tgir.models.presets import preset
    from tgir.training.config import RunConfig, train_preset

    if config_file:
        run = RunConfig.load(config_file)
    elif init:
        from tgir.training.checkpoint import load_checkpoint

        run = load_checkpoint(init).run
    elif family:
        ds = dataset or "css2d"
        run = RunConfig(preset(family, ds), train_preset(ds))
    else:
        raise TgirUserError("give --model (one of: " + ", ".join(FAMILIES) + "), --config FILE or --init CHECKPOINT")
    flags = {"train.dataset": dataset, "train.data": data, "train.epochs": epochs, "train.batch_size": batch_size,
             "train.lr": lr, "train.seed": seed, "train.device": device, "train.max_steps": max_steps,
             "train.init": init}
    if (config_file or init) and family and family != run.model.family:
        raise TgirUserError(f"--model {family} contradicts the family of --config or --init: {run.model.family!r}")
    for path, value in [*flags.items(), *(_split_set(s) for s in sets)]:
        if value is not None:
            run = replace_path(run, path, value)
    state = _fit(run, Path(out_dir), resume)
    click.echo(json.dumps({"out": out_dir, "epochs": state["epoch"], "steps": state["step"],
                           "best_val_R@1": state["best"]}))


def _fit(run, out: Path, resume: bool) -> dict:
    """Train into ``out``, logging the command line there. A folder this call created is removed again
    when the run fails before its first checkpoint, so a mistake leaves nothing to clean up."""
    import shutil

    from tgir.training.loop import LAST, Trainer, require_resumable

    if resume:  # before anything is written to --out
        require_resumable(out)
    created = _topmost_missing(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "command.txt", "a") as log:  # one line per invocation: resumes add theirs
        log.write(" ".join(["tgir", *sys.argv[1:]]) + "\n")
    report, close = _progress_reporter()
    try:
        return Trainer(run, out, report).fit(resume=resume)
    except Exception:
        if created is not None and not (out / LAST).is_file():
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        close()


def _topmost_missing(path: Path) -> Path | None:
    """The highest folder of ``path`` that does not exist yet (None: ``path`` exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _split_set(text: str) -> tuple[str, object]:
    path, sep, value = text.partition("=")
    if not sep or not path:
        raise TgirUserError(f"--set {text!r}: expected PATH=VALUE, e.g. model.router.tau=0.3")
    return path, value  # text: replace_path parses it as the field's declared type


@click.command("eval")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="Checkpoint file; repeat for an ensemble (normalised embeddings concatenated).")
@click.option("--bundle", type=click.Path(file_okay=False),
              help="Evaluate an exported bundle through a runtime instead of a checkpoint (needs --data).")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt", "torch", "c"]), default="auto",
              show_default=True, help="With --bundle: the runner.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --bundle on ONNX Runtime: intra-op threads (0: one per core).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), help="Default: the checkpoint's.")
@click.option("--data", help="Dataset root. Default: the checkpoint's.")
@click.option("--split", default="test", show_default=True,
              help="Split to evaluate; 'holdout' = the run's validation hold-out of its training split.")
@click.option("--tau", type=float, help="AMC: evaluate with this gate threshold (reports expert skip rates).")
@click.option("--sweep-tau", "sweep", help="AMC: comma-separated taus, e.g. 0,0.01,0.02; images embedded once.")
@click.option("--ema/--no-ema", default=True, show_default=True, help="Use the EMA weights when present.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images or queries embedded per forward pass (with --bundle: at most the bundle's max batch).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to run the checkpoint (auto: CUDA when available).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(checkpoints, bundle, backend, threads, dataset, data, split, tau, sweep, ema, batch_size, device,
             as_json) -> None:
    """Evaluate one checkpoint (or an ensemble), or an exported bundle, under the dataset's protocol."""
    if bundle:
        if checkpoints or tau is not None or sweep is not None:
            raise TgirUserError("--bundle evaluates the bundle as built; drop --checkpoint, --tau and --sweep-tau")
        click.echo(json.dumps(_evaluate_bundle(bundle, backend, threads, dataset, data, split, batch_size),
                              indent=None if as_json else 2))
        return
    if not checkpoints:
        raise TgirUserError("give --checkpoint (one or more) or --bundle")
    taus = _parse_taus(sweep) if sweep is not None else None  # before the slow part
    from tgir.data.registry import load_split
    from tgir.training.checkpoint import model_from_checkpoint
    from tgir.training.embed import evaluate_models
    from tgir.training.loop import resolve_device

    models = []
    for path in checkpoints:
        model, ckpt = model_from_checkpoint(path, use_ema=ema)
        if tau is not None:
            _set_tau(model, tau)
        models.append((model, ckpt.vocab))
    train_cfg = ckpt.run.train
    if split == "holdout":  # the training run's validation hold-out: where tau and the like are chosen
        from tgir.training.loop import holdout_split

        loaded = holdout_split(train_cfg, data)
    else:
        loaded = load_split(dataset or train_cfg.dataset, data or train_cfg.data, split,
                            **(train_cfg.options if not dataset or dataset == train_cfg.dataset else {}))
    if sweep is not None:
        from tgir.training.embed import tau_sweep

        if len(models) != 1:
            raise TgirUserError("--sweep-tau takes one checkpoint")
        rows = tau_sweep(models[0][0], loaded, models[0][1], taus, batch_size, resolve_device(device))
        click.echo(json.dumps(rows, indent=None if as_json else 2))
        return
    result = evaluate_models(models, loaded, batch_size, resolve_device(device))
    click.echo(json.dumps(result, indent=None if as_json else 2))


def _parse_taus(sweep: str) -> list[float]:
    try:
        taus = [float(t) for t in sweep.split(",")] if sweep.strip() else []
    except ValueError:
        raise TgirUserError(f"--sweep-tau {sweep!r}: expected numbers separated by commas, e.g. 0,0.01,0.02") from None
    if not taus:
        raise TgirUserError("--sweep-tau: give at least one tau, e.g. 0,0.01,0.02 (or drop it for a plain eval)")
    return taus


def _evaluate_bundle(bundle, backend, threads, dataset, data, split, batch_size) -> dict:
    from tgir.cli.common import open_bundle, progress_bar
    from tgir.data.registry import load_split
    from tgir.runtime.evaluate import evaluate_bundle

    if not data:
        raise TgirUserError("--bundle needs --data (the dataset root to evaluate on)")
    with open_bundle(bundle, backend, threads) as runner:
        loaded = load_split(dataset or "css2d", data, split)
        with progress_bar("embedding") as report:
            return evaluate_bundle(runner, loaded, min(batch_size, runner.max_batch), report)


def _set_tau(model, tau: float) -> None:
    if model.config.family != "amc":
        raise TgirUserError(f"--tau applies to AMC only; this checkpoint is {model.config.family!r}")
    model.set_router(tau=tau)


@click.command("ship")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Training checkpoint (best.pt).")
@click.option("--name", required=True,
              help="Base name of the shipped files, e.g. amc_css2d (letters, digits, '.', '_', '-').")
@click.option("--out", "out_dir", default="trained", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write NAME.pt, NAME.json and NAME.md to (created if missing).")
@click.option("--data", help="Dataset root to measure on. Default: the checkpoint's.")
@click.option("--split", default="test", show_default=True, help="Split the model card's recall is measured on.")
@click.option("--tau", type=float, help="AMC: ship with this gate threshold (conditional experts).")
@click.option("--half/--full", default=True, show_default=True, help="Store float16 weights.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to measure (auto: CUDA when available).")
def ship(checkpoint, name, out_dir, data, split, tau, half, device) -> None:
    """Ship a trained model: compact weights plus a model card measured on those weights."""
    from tgir.training.card import ship as ship_model
    from tgir.training.loop import resolve_device

    card = ship_model(checkpoint, name, out_dir, data, split, tau, half, resolve_device(device))
    click.echo(json.dumps({k: card["test"][k] for k in card["test"] if k.startswith("R@")}))
