"""``tgir data``: generate CSS-2D, inspect datasets, build vocabularies."""

from __future__ import annotations

import json

import click

from tgir.cli.common import progress_callback
from tgir.data.registry import DATASETS
from tgir.errors import TgirUserError


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


def _parse_options(pairs: tuple[str, ...]) -> dict:
    """``key=value`` pairs to loader keyword arguments; values are JSON when they parse as JSON."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TgirUserError(f"--option {pair!r}: expected KEY=VALUE, e.g. gallery=full-split")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def _load(dataset: str, root: str, split: str, options: tuple[str, ...]):
    from tgir.data.registry import load_split

    kwargs = _parse_options(options)
    try:
        return load_split(dataset, root, split, **kwargs)
    except TypeError as err:  # an option the loader does not take
        raise TgirUserError(f"{dataset}: bad --option ({err})") from None


_dataset_options = [
    click.option("--dataset", required=True, type=click.Choice(sorted(DATASETS)), help="Dataset format."),
    click.option("--root", required=True, type=click.Path(), help="Dataset root folder."),
    click.option("--split", default="test", show_default=True, help="Split name."),
    click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
                 help="Loader setting, e.g. -o gallery=full-split (repeatable)."),
]


def dataset_options(func):
    for opt in reversed(_dataset_options):
        func = opt(func)
    return func


@data.command("stats")
@dataset_options
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
@dataset_options
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="vocab.json to write.")
@click.option("--min-count", default=1, show_default=True, help="Drop words seen fewer times.")
@click.option("--max-length", default=64, show_default=True, help="Longest token sequence kept.")
def vocab(dataset: str, root: str, split: str, options: tuple[str, ...], out_path: str, min_count: int,
          max_length: int) -> None:
    """Build a vocabulary from a split's query texts (use the training split)."""
    from tgir.vocab import Vocabulary

    loaded = _load(dataset, root, split, options)
    v = Vocabulary.build((q.text for q in loaded.queries), min_count=min_count, max_length=max_length)
    v.save(out_path)
    click.echo(f"{len(v)} tokens ({len(v) - 4} words + 4 specials) written to {out_path}")
