"""Retrieval protocols against hand-computed rankings, with ties, duplicates and exclusions."""

from __future__ import annotations

import numpy as np
import pytest

import tgir.evaluate as ev
from tgir.data.records import ImageRecord, Query, RetrievalSplit
from tgir.errors import TgirUserError


def _unit(*angles_deg):
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def test_ranks_hand_computed():
    # Gallery at 0, 10, 20, 30 and 10 degrees (index 4 ties with index 1).
    g = _unit(0, 10, 20, 30, 10)
    q = _unit(0, 0, 30)
    glab = np.array([0, 1, 2, 3, 1])
    # q0 wants label 2: order 0, 1, 4 (tie, after 1), 2 -> rank 3.
    # q1 wants label 1, reference 1 excluded: 0, 4 -> duplicate at 4 is a hit, rank 1.
    # q2 wants label 0 at 0 deg; order 3, 2, 1, 4, 0 -> rank 4.
    ranks = ev.first_hit_ranks(q, g, np.array([2, 1, 0]), glab, exclude=np.array([-1, 1, -1]))
    assert ranks.tolist() == [3, 1, 4]
    assert ev.recall_from_ranks(ranks, (1, 2, 4, 5)) == {"R@1": 0.0, "R@2": pytest.approx(100 / 3),
                                                        "R@4": pytest.approx(200 / 3), "R@5": 100.0}


def test_ties_keep_gallery_order():
    g = _unit(5, 5, 5, 5)
    ranks = ev.first_hit_ranks(_unit(5, 5), g, np.array([7, 9]), np.array([1, 7, 9, 7]), np.array([1, -1]))
    # q0: label 7 at 1 (excluded) and 3; ahead of 3: 0 and 2 -> rank 2. q1: label 9 at 2 -> rank 2.
    assert ranks.tolist() == [2, 2]


def test_no_hit_ranks_past_the_end():
    ranks = ev.first_hit_ranks(_unit(0), _unit(0, 1), np.array([5]), np.array([0, 1]))
    assert ranks.tolist() == [2]


def test_chunking_gives_the_same_answer(monkeypatch):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(300, 8)), rng.normal(size=(257, 8))
    qlab, glab = rng.integers(0, 40, 300), rng.integers(0, 40, 257)
    excl = rng.integers(-1, 257, 300)
    full = ev.first_hit_ranks(q, g, qlab, glab, excl)
    monkeypatch.setattr(ev, "CHUNK_ELEMENTS", 257 * 7)  # chunks of 7 queries
    assert (ev.first_hit_ranks(q, g, qlab, glab, excl) == full).all()
    # Against a brute-force stable sort.
    scores = q.astype(np.float32) @ g.astype(np.float32).T
    for i in range(300):
        s = scores[i].copy()
        if excl[i] >= 0:
            s[excl[i]] = -np.inf
        order = [j for j in np.argsort(-s, kind="stable") if j != excl[i]]
        hits = [r for r, j in enumerate(order) if glab[j] == qlab[i]]
        assert full[i] == (hits[0] if hits else 257)


def _split(dataset="css", extra=None):
    labels = [0, 1, 2, 1]
    images = [ImageRecord(f"{i}.png", str(i), lab, in_gallery=i != 3) for i, lab in enumerate(labels)]
    queries = [Query(0, "add x", 1, 1, "add"), Query(3, "remove y", 2, 2, "remove"),
               Query(1, "add z", 0, 0, "add")]
    return RetrievalSplit(dataset, "test", images, queries, ["a", "b", "c"], extra or {})


def test_evaluate_split_per_op_and_reference_outside_gallery():
    split = _split()
    g = _unit(0, 40, 80)  # gallery = images 0, 1, 2 (image 3 only serves as a reference)
    q = _unit(40, 75, 0)
    res = ev.evaluate_split(split, q, g, ks=(1, 2))
    # q0 (ref 0 excluded): 1 first -> hit at rank 0. q1 (ref 3 not in gallery): 2 first -> rank 0.
    # q2 (ref 1 excluded): wants label 0 at image 0 -> rank 0.
    assert res["R@1"] == 100.0 and res["queries"] == 3
    assert res["per_op"]["add"] == {"R@1": 100.0, "R@2": 100.0, "queries": 2}
    q2 = _unit(80, 0, 80)
    res = ev.evaluate_split(split, q2, g, ks=(1, 2))
    # q0 ref 0 excluded: order 2, 1 -> rank 1; q1: 0, then 1, 2... 2 at rank 2; q2: order 2, 0 -> rank 1.
    assert res["R@1"] == 0.0 and res["R@2"] == pytest.approx(200 / 3)


def test_mitstates_adjective_and_noun_recall():
    extra = {"label_adj": ["red", "old", "red"], "label_noun": ["car", "car", "hat"]}
    split = _split("mitstates", extra)
    res = ev.evaluate_split(split, _unit(80, 75, 80), _unit(0, 40, 80), ks=(1,))
    # Top-1 per query: q0 -> image 2 (red hat; wants old car), q1 -> image 2 (red hat = label 2, hit),
    # q2 (ref 1 excluded) -> image 2 (red hat; wants red car).
    assert res["R@1"] == pytest.approx(100 / 3)
    assert res["adjective"]["R@1"] == pytest.approx(200 / 3)  # q1, q2 match on "red"
    assert res["noun"]["R@1"] == pytest.approx(100 / 3)  # only q1 (hat)


def test_fashioniq_summary():
    s = ev.fashioniq_summary({"dress": {"R@10": 30, "R@50": 60}, "shirt": {"R@10": 20, "R@50": 50}})
    assert s == {"R@10": 25.0, "R@50": 55.0, "overall": 40.0}


def test_bad_inputs():
    split = _split()
    with pytest.raises(TgirUserError, match=r"query embeddings: expected shape \[3, D\]"):
        ev.evaluate_split(split, _unit(0, 1), _unit(0, 1, 2))
    with pytest.raises(TgirUserError, match="NaN"):
        ev.evaluate_split(split, np.full((3, 2), np.nan), _unit(0, 1, 2))
    with pytest.raises(TgirUserError, match="dimensions differ"):
        ev.first_hit_ranks(np.ones((1, 3)), np.ones((2, 2)), np.zeros(1), np.zeros(2))
    unknown = RetrievalSplit("fashioniq", "test", split.images, [Query(0, "t", -1, -1)], ["a"])
    with pytest.raises(TgirUserError, match="no known target"):
        ev.evaluate_split(unknown, _unit(0), _unit(0, 1, 2))
