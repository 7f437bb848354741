"""Retrieval protocols: Recall@K for each dataset, exactly as published, computed in chunks.

Ranking is by dot product of L2-normalised embeddings, best first; equal scores keep gallery order
(the lower gallery index ranks first), so results are deterministic with ties. A query's own
reference image is never ranked. A hit at K: one of the top K images carries the query's label
(duplicates of the target count). Nothing builds a dense queries x gallery matrix: queries are
scored in chunks sized to a fixed memory budget. Torch-free (numpy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tgir.data.records import RetrievalSplit
from tgir.errors import TgirUserError

# The K values each protocol reports (see specs/datasets.md).
PROTOCOL_KS: dict[str, tuple[int, ...]] = {
    "css": (1, 5, 10, 50),
    "fashioniq": (10, 50),
    "shoes": (1, 10, 50),
    "fashion200k": (1, 10, 50),
    "mitstates": (1, 5, 10),
}
CHUNK_ELEMENTS = 1 << 24  # scores held at once: 16M float32 = 64 MiB


def _check_embeddings(name: str, emb: np.ndarray, rows: int | None = None) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or (rows is not None and emb.shape[0] != rows):
        want = f"[{rows}, D]" if rows is not None else "[N, D]"
        raise TgirUserError(f"{name}: expected shape {want}, got {list(emb.shape)}")
    if not np.isfinite(emb).all():
        raise TgirUserError(f"{name}: contains NaN or infinite values")
    return emb


def first_hit_ranks(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """0-based rank of the best-ranked hit of every query.

    Args:
        query_emb: ``[Q, D]`` query embeddings.
        gallery_emb: ``[G, D]`` gallery embeddings.
        query_labels: ``[Q]`` label a hit must carry.
        gallery_labels: ``[G]`` label of each gallery image.
        exclude: ``[Q]`` gallery position never ranked for that query (its reference), -1 for none.

    Returns:
        ``[Q]`` int64 ranks; ``G`` where a query has no hit in the gallery at all.
    """
    q = _check_embeddings("query embeddings", query_emb)
    g = _check_embeddings("gallery embeddings", gallery_emb)
    if q.shape[1] != g.shape[1]:
        raise TgirUserError(f"query and gallery dimensions differ: {q.shape[1]} vs {g.shape[1]}")
    qlab, glab = np.asarray(query_labels), np.asarray(gallery_labels)
    if qlab.shape != (len(q),) or glab.shape != (len(g),):
        raise TgirUserError(f"labels must be [Q]={len(q)} and [G]={len(g)}, got {qlab.shape}, {glab.shape}")
    excl = np.full(len(q), -1, np.int64) if exclude is None else np.asarray(exclude, np.int64)
    n_gallery = len(g)
    ranks = np.empty(len(q), np.int64)
    chunk = max(1, CHUNK_ELEMENTS // max(n_gallery, 1))
    position = np.arange(n_gallery)
    for start in range(0, len(q), chunk):
        stop = min(start + chunk, len(q))
        rows = np.arange(stop - start)
        scores = q[start:stop] @ g.T  # [C, G]
        hit = qlab[start:stop, None] == glab[None, :]  # [C, G]
        ex = excl[start:stop]
        has_ex = ex >= 0
        scores[rows[has_ex], ex[has_ex]] = -np.inf
        hit[rows[has_ex], ex[has_ex]] = False
        best = np.where(hit, scores, -np.inf).max(axis=1, initial=-np.inf)  # [C]
        at_best = hit & (scores == best[:, None])
        first = np.argmax(at_best, axis=1)  # lowest gallery index among the best-scoring hits
        above = (scores > best[:, None]).sum(axis=1)
        tied_before = ((scores == best[:, None]) & (position[None, :] < first[:, None])).sum(axis=1)
        ranks[start:stop] = np.where(hit.any(axis=1), above + tied_before, n_gallery)
    return ranks


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K in percent for each K: the share of queries whose first hit ranks below K."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        raise TgirUserError("no queries to evaluate")
    return {f"R@{k}": float(100.0 * np.mean(ranks < k)) for k in ks}


def gallery_positions(split: RetrievalSplit) -> tuple[np.ndarray, np.ndarray]:
    """The split's gallery (image indices) and, per query, its reference image's position in it
    (-1 when the reference is not in the gallery): the one answer the protocol never ranks."""
    gallery = split.gallery
    pos_of = np.full(len(split.images), -1, np.int64)
    pos_of[gallery] = np.arange(len(gallery))
    return gallery, pos_of[split.query_refs()]


def evaluate_split(
    split: RetrievalSplit,
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    ks: Sequence[int] | None = None,
) -> dict:
    """Evaluate embeddings of a loaded split under its dataset's protocol.

    Args:
        split: The split the embeddings were computed on.
        query_emb: ``[Q, D]``, one row per ``split.queries`` entry, in order.
        gallery_emb: ``[G, D]``, one row per ``split.gallery`` entry, in order.
        ks: K values; default: the protocol's (``PROTOCOL_KS``).

    Returns:
        ``{"R@K": percent, ..., "queries": Q}``, plus ``"per_op"`` (per operation, when queries
        have one, e.g. CSS's add/remove/make) and, for MIT-States, ``"adjective"`` and ``"noun"``
        recalls (hit = same adjective / same noun).
    """
    ks = tuple(ks or PROTOCOL_KS.get(split.dataset, (1, 5, 10, 50)))
    qlab = split.query_labels()
    if (qlab < 0).any():
        raise TgirUserError(f"{split.dataset} {split.split}: some queries have no known target "
                           "(e.g. FashionIQ test); evaluate on a split with targets")
    q = _check_embeddings("query embeddings", query_emb, len(split.queries))
    gallery, exclude = gallery_positions(split)
    g = _check_embeddings("gallery embeddings", gallery_emb, len(gallery))
    glab = split.gallery_labels()

    def recall(map_label: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> tuple[dict, np.ndarray]:
        ranks = first_hit_ranks(q, g, map_label(qlab), map_label(glab), exclude)
        return recall_from_ranks(ranks, ks), ranks

    result, ranks = recall()
    result["queries"] = len(q)
    ops = np.array([qq.op for qq in split.queries])
    if any(ops.tolist()):
        result["per_op"] = {op: {**recall_from_ranks(ranks[ops == op], ks), "queries": int((ops == op).sum())}
                            for op in sorted(set(ops.tolist()))}
    for part, key in (("adjective", "label_adj"), ("noun", "label_noun")):
        names = split.extra.get(key)  # label id -> its adjective / noun (MIT-States)
        if names is not None:
            ids = np.unique(np.asarray(names), return_inverse=True)[1]
            result[part] = recall(lambda lab, ids=ids: ids[lab])[0]
    return result


def fashioniq_summary(per_category: dict[str, dict]) -> dict:
    """FashionIQ's headline numbers from per-category results holding ``R@10`` and ``R@50``.

    Returns:
        ``{"R@10": mean over categories, "R@50": mean, "overall": (R@10 + R@50) / 2}``.
    """
    if not per_category:
        raise TgirUserError("no FashionIQ categories to summarise")
    r10 = float(np.mean([r["R@10"] for r in per_category.values()]))
    r50 = float(np.mean([r["R@50"] for r in per_category.values()]))
    return {"R@10": r10, "R@50": r50, "overall": (r10 + r50) / 2}
