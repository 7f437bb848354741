"""``tgir data``: generate CSS-2D, inspect datasets, build vocabularies."""

from __future__ import annotations

import inspect
import json

import click

from tgir.cli.common import progress_callback
from tgir.data.registry import DATASETS
from tgir.errors import TgirUserError, unknown_choice


@click.group()
def data() -> None:
    """Generate, inspect and check datasets."""


def _print_stats(stats: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    for name, s in stats.items():
        ops = ", ".join(f"{k} {v}" for k, v in s.get("queries_per_op", {}).items())
        line = f"{name:>6}: {s['images']:>6} images, {s['queries']:>6} queries"
        if "texts" in s:
            line += f", {s['texts']:>5} distinct texts"
        line += f", {s['labels']:>6} labels"
        click.echo(line + (f" ({ops})" if ops else ""))


@data.command("css2d")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--seed", default=0, show_default=True, help="Master seed (same seed + version = same bytes).")
@click.option("--scale", default=1.0, show_default=True,
              help="Fraction of full size (1.0 = ~19K images/split).")
@click.option("--size", type=click.Choice(["64", "128"]), default="64", show_default=True, help="Image side.")
@click.option("--true-circle/--diamond-circle", default=False, show_default=True,
              help="Draw circles as circles (TIRG draws diamonds).")
@click.option("--overwrite/--no-overwrite", default=False, show_default=True,
              help="Replace a CSS dataset already in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print statistics as JSON.")
def css2d(out_dir: str, seed: int, scale: float, size: str, true_circle: bool, overwrite: bool,
          as_json: bool) -> None:
    """Generate the CSS-2D benchmark in CSS's on-disk format (plus a JSON mirror)."""
    from tgir.data.css2d import GENERATOR_VERSION, Css2dConfig, write_css2d

    cfg = Css2dConfig(seed=seed, scale=scale, size=int(size), true_circle=true_circle)
    callback, close = progress_callback("rendering")
    try:
        stats = write_css2d(cfg, out_dir, overwrite=overwrite, progress=None if as_json else callback)
    finally:
        close()
    if not as_json:
        click.echo(f"CSS-2D v{GENERATOR_VERSION} written to {out_dir} (seed {seed}, scale {scale}):")
    _print_stats(stats, as_json)


def _parse_options(pairs: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` pairs to ``{loader keyword: raw value}`` (dashes in keys become underscores)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TgirUserError(f"--option {pair!r}: expected KEY=VALUE, e.g. gallery=full-split")
        options[key.replace("-", "_")] = value
    return options


def loader_options(dataset: str) -> dict[str, inspect.Parameter]:
    """The settings a dataset's loader takes (its keyword-only parameters), by name."""
    import importlib

    module, func = DATASETS[dataset][0].split(":")
    loader = getattr(importlib.import_module(module), func)
    return {name: p for name, p in inspect.signature(loader).parameters.items() if p.kind is p.KEYWORD_ONLY}


def _option_value(dataset: str, key: str, raw: str, default: object) -> object:
    """``raw`` as the type of the loader's default (strings stay verbatim; other values are JSON)."""
    if isinstance(default, str):
        return raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    kind = type(default)
    if kind in (bool, int, float) and not (type(value) is kind or (kind is float and type(value) is int)):
        want = "true or false" if kind is bool else f"a number ({kind.__name__})"
        raise TgirUserError(f"{dataset}: --option {key}={raw}: expected {want}")
    return value


def _load(dataset: str, root: str, split: str, options: tuple[str, ...]):
    """Load a split with ``-o`` settings checked against the loader's parameters (a TypeError from
    inside a loader is a bug or a malformed file, never reported as a bad option)."""
    from tgir.data.registry import load_split

    valid = loader_options(dataset)
    kwargs = {}
    for key, raw in _parse_options(options).items():
        if key not in valid:
            if not valid:
                raise TgirUserError(f"{dataset}: takes no --option, got {key!r}")
            raise unknown_choice(f"{dataset} --option", key, valid)
        kwargs[key] = _option_value(dataset, key, raw, valid[key].default)
    return load_split(dataset, root, split, **kwargs)


def dataset_options(split_default: str):
    """The options every dataset command shares; ``split_default`` is the split it reads unless told."""
    def apply(func):
        for opt in reversed([
            click.option("--dataset", required=True, type=click.Choice(sorted(DATASETS)), help="Dataset format."),
            click.option("--root", required=True, type=click.Path(), help="Dataset root folder."),
            click.option("--split", default=split_default, show_default=True, help="Split name."),
            click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
                         help="Loader setting, e.g. -o gallery=full-split (repeatable)."),
        ]):
            func = opt(func)
        return func

    return apply


@data.command("stats")
@dataset_options("test")
@click.option("--check-images/--no-check-images", default=False, show_default=True,
              help="Decode every image to find corrupt files.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(dataset: str, root: str, split: str, options: tuple[str, ...], check_images: bool,
          as_json: bool) -> None:
    """Load a dataset split and print its counts (optionally decoding every image)."""
    from tgir.data.images import load_image

    loaded = _load(dataset, root, split, options)
    if check_images:
        callback, close = progress_callback("decoding")
        try:
            for i, record in enumerate(loaded.images, 1):
                load_image(record.path)
                if i % 100 == 0 or i == len(loaded.images):
                    callback(i, len(loaded.images))
        finally:
            close()
    summary = loaded.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(" ".join(f"{k}={v}" for k, v in summary.items()))


@data.command("vocab")
@dataset_options("train")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="vocab.json to write (missing folders are created).")
@click.option("--min-count", default=1, show_default=True, help="Drop words seen fewer times.")
@click.option("--max-length", default=64, show_default=True, help="Longest token sequence kept.")
def vocab(dataset: str, root: str, split: str, options: tuple[str, ...], out_path: str, min_count: int,
          max_length: int) -> None:
    """Build a vocabulary from a split's query texts (the training split unless --split says otherwise)."""
    from collections import Counter

    from tgir.manifest import require_writable
    from tgir.vocab import SPECIALS, Vocabulary, tokenize

    out = require_writable(out_path)  # before loading, which can take a while
    loaded = _load(dataset, root, split, options)
    texts = [q.text for q in loaded.queries]
    v = Vocabulary.build(texts, min_count=min_count, max_length=max_length)
    if len(v) == len(SPECIALS):  # no word kept: the model could not read any text
        counts = Counter(t for text in texts for t in tokenize(text) if t not in SPECIALS)
        most = counts.most_common(1)
        top = f"the most frequent word, {most[0][0]!r}, appears {most[0][1]} times" if most else "it has no words"
        raise TgirUserError(f"--min-count {min_count} keeps no word of {dataset} {split} ({top}); lower it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        v.save(out)
    except OSError as err:
        raise TgirUserError(f"{out}: cannot write there ({err.strerror or err})") from None
    click.echo(f"{len(v)} tokens ({len(v) - len(SPECIALS)} words + {len(SPECIALS)} specials) written to {out_path}")
