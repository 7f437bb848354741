"""What a model's wrong answers are on CSS / CSS-2D: near misses or other scenes.

Recall says how often the top-1 image is the target; it does not say how far off the misses are.
CSS scenes are sets of objects on a 3x3 grid, so every top-1 answer can be compared with the
target object by object, cell by cell:

- ``hit``: the same scene (the protocol's hit: same scene label);
- ``1 cell``: one cell differs (a wrong attribute of the changed object: a near miss);
- ``2 cells``: two cells differ (typically another modification of the same reference);
- ``3+ cells``: three or more differ, i.e. a different scene: the query lost the reference.

Each operation is also split by whether its text names a grid cell (``add ... to top-left``,
``make middle-left circle green``) or picks the object by its attributes alone.

Usage::

    python -m tgir.benchmarks.css_errors --checkpoint trained/amc_dense_css2d.pt \\
        --checkpoint trained/tirg_css2d.pt --data /tmp/css2d_full [--split holdout] [--out F.json]

``--split holdout`` scores the training run's validation hold-out (what model choices may look
at); ``test`` is for reporting only.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
from tgir.benchmarks.machine import machine_facts

from tgir.cli.common import run_main
from tgir.data.records import RetrievalSplit
from tgir.data.registry import load_split
from tgir.errors import TgirUserError
from tgir.evaluate import gallery_positions
from tgir.training.checkpoint import model_from_checkpoint
from tgir.training.embed import embed_split
from tgir.training.loop import holdout_split

CLASSES = ("hit", "1 cell", "2 cells", "3+ cells")
CHUNK = 512
GRID_WORD = re.compile(r"\b(top|middle|bottom)-(left|center|right)\b")


def text_group(op: str, text: str) -> str:
    """``op`` split by whether the text names a grid cell (``make middle-left circle green``, an
    object found by where it is) or not (``make circle green``, found by its attributes alone)."""
    return f"{op}, {'cell named' if GRID_WORD.search(text) else 'no cell'}" if op else ""


def cell_contents(objects: Sequence[dict]) -> dict[tuple, tuple]:
    """One scene as ``{position: (shape, color, size)}`` (positions rounded: CSS stores floats)."""
    return {tuple(round(float(p), 3) for p in o["pos"]): (o["shape"], o["color"], o["size"]) for o in objects}


def cells_differing(a: Sequence[dict], b: Sequence[dict]) -> int:
    """Number of grid positions whose content (an object's attributes, or emptiness) differs."""
    ca, cb = cell_contents(a), cell_contents(b)
    return sum(ca.get(pos) != cb.get(pos) for pos in set(ca) | set(cb))


def classify(top1_images: np.ndarray, queries: Sequence, labels: Sequence[int],
             objects: Sequence[Sequence[dict]]) -> list[str]:
    """Class of every query's top-1 answer (``CLASSES``): hit by scene label, else cells differing."""
    out = []
    for q, image in zip(queries, top1_images, strict=True):
        if labels[image] == labels[q.target]:
            out.append("hit")
            continue
        n = cells_differing(objects[image], objects[q.target])
        out.append(CLASSES[min(n, 3)])
    return out


def top1(split: RetrievalSplit, query_emb: np.ndarray, gallery_emb: np.ndarray) -> np.ndarray:
    """Image index of each query's best gallery answer, its reference excluded (as the protocol)."""
    gallery, exclude = gallery_positions(split)
    best = np.empty(len(query_emb), np.int64)
    for start in range(0, len(query_emb), CHUNK):
        scores = query_emb[start:start + CHUNK] @ gallery_emb.T  # [C, G]
        ex = exclude[start:start + CHUNK]
        rows = np.flatnonzero(ex >= 0)
        scores[rows, ex[rows]] = -np.inf
        best[start:start + CHUNK] = gallery[scores.argmax(axis=1)]
    return best


def breakdown(classes: Sequence[str], ops: Sequence[str]) -> dict:
    """Percent of queries per class, overall and per operation."""
    def shares(items: list[str]) -> dict:
        count = Counter(items)
        return {c: round(100.0 * count[c] / len(items), 2) for c in CLASSES} | {"queries": len(items)}

    result = {"overall": shares(list(classes))}
    for op in sorted(set(ops) - {""}):
        result[op] = shares([c for c, o in zip(classes, ops, strict=True) if o == op])
    return result


def errors_of(checkpoint: str, data: str, split_name: str) -> dict:
    """Embed ``split_name`` ("test" or "holdout") with one checkpoint and classify its answers."""
    model, ckpt = model_from_checkpoint(checkpoint)
    if ckpt.run.train.dataset not in ("css", "css2d"):
        raise TgirUserError(f"{checkpoint} was trained on {ckpt.run.train.dataset!r}; this needs CSS or CSS-2D")
    if split_name == "holdout":
        split = holdout_split(ckpt.run.train, data)
    else:
        split = load_split(ckpt.run.train.dataset, data, "test")
    objects = split.extra["objects"]  # per image: the scene's objects, as the CSS file lists them
    labels = [r.label for r in split.images]
    query_emb, gallery_emb = embed_split(model, split, ckpt.vocab)
    best = top1(split, query_emb, gallery_emb)
    classes = classify(best, split.queries, labels, objects)
    by_text = breakdown(classes, [text_group(q.op or "", q.text) for q in split.queries])
    by_text.pop("overall")
    return {"checkpoint": checkpoint, "family": model.config.family,
            **breakdown(classes, [q.op or "" for q in split.queries]), **by_text}


def markdown(rows: Sequence[dict]) -> str:
    """One table: per checkpoint and operation, the share of each answer class."""
    lines = ["| checkpoint | op | " + " | ".join(CLASSES) + " |", "|---|---|" + "---|" * len(CLASSES)]
    for row in rows:
        for op, shares in ((k, v) for k, v in row.items() if isinstance(v, dict)):
            lines.append(f"| {row['checkpoint']} | {op} | " + " | ".join(f"{shares[c]:.1f}" for c in CLASSES) + " |")
    return "\n".join(lines)


@click.command()
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="A trained CSS / CSS-2D checkpoint (repeat to compare models).")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="CSS-2D (or CSS) root folder.")
@click.option("--split", "split_name", default="test", show_default=True, type=click.Choice(["test", "holdout"]))
@click.option("--out", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
def main(checkpoints, data, split_name, out) -> None:
    """Classify every query's top-1 answer: hit, near miss (1-2 cells differ) or another scene."""
    rows = [errors_of(c, data, split_name) for c in checkpoints]
    click.echo(markdown(rows))
    if out:
        result = {"split": split_name, "data": data, "models": rows, "machine": machine_facts(),
                  "date": time.strftime("%Y-%m-%d")}
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(run_main(main, None, prog_name="python -m tgir.benchmarks.css_errors"))
