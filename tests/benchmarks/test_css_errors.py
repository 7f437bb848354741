"""The CSS-2D error classes of ``tgir.benchmarks.css_errors``: which grid cells an answer changes,
each query's operation and text group, and that the hit share is recall at 1."""

from __future__ import annotations

import numpy as np
import pytest


def _obj(x, y, shape="circle", color="red", size="small"):
    return {"shape": shape, "color": color, "size": size, "pos": [x, y]}


def test_cells_differing_counts_changed_added_and_removed_cells():
    from tgir.benchmarks.css_errors import cells_differing

    a = [_obj(0.5, 0.5), _obj(1 / 6, 1 / 6, shape="triangle")]
    assert cells_differing(a, list(reversed(a))) == 0  # order does not matter
    assert cells_differing(a, [_obj(0.5, 0.5, color="blue"), a[1]]) == 1  # one attribute changed
    assert cells_differing(a, a[:1]) == 1  # one object removed
    assert cells_differing(a, [*a, _obj(5 / 6, 5 / 6)]) == 1  # one added
    assert cells_differing(a, [_obj(5 / 6, 0.5), _obj(1 / 6, 5 / 6)]) == 4


def test_classify_and_breakdown_by_operation():
    from tgir.benchmarks.css_errors import breakdown, classify

    from tgir.data.records import Query

    objects = [[_obj(0.5, 0.5)], [_obj(0.5, 0.5), _obj(1 / 6, 1 / 6)], [_obj(0.5, 0.5, color="blue")],
               [_obj(1 / 6, 0.5), _obj(5 / 6, 0.5), _obj(0.5, 5 / 6)]]
    labels = [0, 1, 2, 3]
    queries = [Query(0, "add", 1, 1, "add"), Query(0, "make", 2, 2, "make"), Query(0, "add", 1, 1, "add"),
               Query(0, "make", 2, 2, "make")]
    top_images = np.array([1, 1, 3, 0])  # hit, 2 cells off, another scene, 1 cell off
    classes = classify(top_images, queries, labels, objects)
    assert classes == ["hit", "2 cells", "3+ cells", "1 cell"]
    result = breakdown(classes, [q.op for q in queries])
    assert result["overall"] == {"hit": 25.0, "1 cell": 25.0, "2 cells": 25.0, "3+ cells": 25.0, "queries": 4}
    assert result["add"]["hit"] == 50.0 and result["add"]["3+ cells"] == 50.0
    assert result["make"]["2 cells"] == 50.0 and result["make"]["1 cell"] == 50.0


def test_text_group_names_the_grid_cell_when_the_text_does():
    from tgir.benchmarks.css_errors import text_group

    assert text_group("make", "make middle-left large circle green") == "make, cell named"
    assert text_group("add", "add large object to top-left") == "add, cell named"
    assert text_group("make", "make blue object small") == "make, no cell"
    assert text_group("remove", "remove bottom-center cyan object") == "remove, cell named"
    assert text_group("make", "make top circle green") == "make, no cell"  # a row alone is not a cell
    assert text_group("", "anything at top-left") == ""  # datasets without operations


def test_css_errors_hit_share_is_recall_at_1(tiny_amc_bundle, tiny_css2d):
    from tgir.benchmarks.css_errors import CLASSES, errors_of

    from tgir.data.registry import load_split
    from tgir.evaluate import evaluate_split
    from tgir.training.checkpoint import model_from_checkpoint
    from tgir.training.embed import embed_split

    checkpoint = str(tiny_amc_bundle.parent / "m.pt")
    result = errors_of(checkpoint, str(tiny_css2d), "test")
    assert sum(result["overall"][c] for c in CLASSES) == pytest.approx(100.0, abs=0.05)
    model, ckpt = model_from_checkpoint(checkpoint)
    split = load_split("css2d", tiny_css2d, "test")
    recall = evaluate_split(split, *embed_split(model, split, ckpt.vocab))
    assert result["overall"]["hit"] == pytest.approx(recall["R@1"], abs=0.01)
    assert result["overall"]["queries"] == len(split.queries)
