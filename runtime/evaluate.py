"""Evaluate a bundle, through any runner, under a dataset's retrieval protocol (torch-free).

The same protocol as ``tgir eval --checkpoint`` (``tgir.evaluate.evaluate_split``): each needed
image is embedded once, reference tokens are kept only for images that queries refer to, and texts
go through the bundle's own tokenizer at its fixed length, exactly as a deployed app would call it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
from tgir.runtime.base import QueryTextWarning, Runner

from tgir.data.records import RetrievalSplit
from tgir.evaluate import evaluate_split


def embed_split_with(runner: Runner, split: RetrievalSplit, batch: int = 32,
                     progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(query_emb [Q, D], gallery_emb [G, D])`` of a split, in split order, computed by ``runner``."""
    batch = min(batch, runner.max_batch)
    gallery = split.gallery.tolist()
    refs = {q.ref for q in split.queries}
    needed = sorted(set(gallery) | refs)
    slot = {img: i for i, img in enumerate(needed)}
    total, done = len(needed) + len(split.queries), 0
    rows, tokens = [], {}
    whole = not runner.gives_tokens  # a runner that only composes whole queries re-encodes references
    for start in range(0, len(needed), batch):
        part = needed[start:start + batch]
        if whole:
            rows.append(runner.encode_images([split.images[i].path for i in part]))
        else:
            emb, tok = runner.encode_images([split.images[i].path for i in part], tokens=True)
            rows.append(emb)
            tokens.update({img: tok[j] for j, img in enumerate(part) if img in refs})
        done += len(part)
        if progress:
            progress(done, total)
    gallery_rows = np.concatenate(rows)[[slot[i] for i in gallery]]
    queries = []
    with warnings.catch_warnings():  # benchmark texts with unknown words or past the length are the protocol's
        warnings.simplefilter("ignore", QueryTextWarning)
        for start in range(0, len(split.queries), batch):
            qs = split.queries[start:start + batch]
            if whole:
                queries.append(runner.encode_queries([split.images[q.ref].path for q in qs], [q.text for q in qs]))
            else:
                ids, lengths = runner.tokenize([q.text for q in qs])
                queries.append(runner.compose(np.stack([tokens[q.ref] for q in qs]), ids, lengths))
            done += len(qs)
            if progress:
                progress(done, total)
    return np.concatenate(queries), gallery_rows


def evaluate_bundle(runner: Runner, split: RetrievalSplit, batch: int = 32,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Recall of the runner's bundle on ``split`` plus what was run and how long it took."""
    start = time.perf_counter()
    queries, gallery = embed_split_with(runner, split, batch, progress)
    result = evaluate_split(split, queries, gallery)
    m = runner.manifest
    result["bundle"] = {"folder": str(runner.folder), "family": m.model["family"], "precision": m.precision,
                        "backend": runner.backend, "router": m.router,
                        "quantization": m.build.get("quantization", {})}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result
