"""Embedding a split with a model (gallery once, queries from cached reference tokens) and
evaluating it, for one model or an ensemble."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from tgir.data.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from tgir.data.records import RetrievalSplit
from tgir.data.torch_datasets import ImageListDataset
from tgir.errors import TgirUserError
from tgir.evaluate import evaluate_split
from tgir.models.base import RetrievalModel, l2norm
from tgir.vocab import Vocabulary

Progress = Callable[[int, int], None]


def preprocess_for(model: RetrievalModel) -> Preprocess:
    """The preprocessing contract of a model: square resize to its input size, ImageNet statistics."""
    return Preprocess(size=model.config.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@torch.no_grad()
def embed_split(model: RetrievalModel, split: RetrievalSplit, vocab: Vocabulary, batch_size: int = 64,
                device: str = "cpu", workers: int = 0, progress: Progress | None = None,
                features: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
                gates_out: list[torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed a split's gallery and queries.

    Each needed image is encoded once; reference tokens are kept only for images that queries
    refer to, so a large gallery does not hold every token grid in memory.

    Args:
        features: Optional lookup from image indices to cached backbone features (training with a
            frozen backbone); images are then not decoded at all.
        gates_out: AMC only: receives each query batch's effective gates ``[B, layers, experts]``.

    Returns:
        ``(query_emb [Q, D], gallery_emb [G, D])`` float32, L2-normalised, in split order.
    """
    model = model.eval().to(device)
    gallery = split.gallery.tolist()
    refs = sorted({q.ref for q in split.queries})
    needed = sorted(set(gallery) | set(refs))
    slot = {img: i for i, img in enumerate(needed)}
    is_ref = {r: True for r in refs}
    if features is None:
        loader = DataLoader(ImageListDataset([split.images[i].path for i in needed], preprocess_for(model)),
                            batch_size=batch_size, num_workers=workers)
    else:
        index = torch.tensor(needed)
        loader = [(features(index[i:i + batch_size]), torch.arange(i, min(i + batch_size, len(needed))))
                  for i in range(0, len(needed), batch_size)]
    gallery_rows = np.zeros((len(needed), model.config.embed_dim), np.float32)
    tokens: dict[int, torch.Tensor] = {}
    total, done = len(needed) + len(split.queries), 0
    for images, positions in loader:
        images = [f.to(device) for f in images] if isinstance(images, list) else images.to(device)
        emb, tok = model.encode_image(images)
        gallery_rows[positions.numpy()] = emb.float().cpu().numpy()
        for row, pos in enumerate(positions.tolist()):
            if is_ref.get(needed[pos]):
                tokens[needed[pos]] = tok[row].cpu()
        done += len(positions)
        if progress:
            progress(done, total)
    queries = np.zeros((len(split.queries), model.config.embed_dim), np.float32)
    for start in range(0, len(split.queries), batch_size):
        batch = split.queries[start:start + batch_size]
        ids, lengths = vocab.encode_batch([q.text for q in batch])
        ref_tokens = torch.stack([tokens[q.ref] for q in batch]).to(device)
        text = model.encode_text(torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device))
        if gates_out is not None and hasattr(model, "compose_with_gates"):
            query, _, gates = model.compose_with_gates(ref_tokens, *text)
            gates_out.append(torch.stack(gates, dim=1).cpu())  # [B, layers, experts]
        else:
            query = model.compose(ref_tokens, *text)
        queries[start:start + len(batch)] = query.float().cpu().numpy()
        done += len(batch)
        if progress:
            progress(done, total)
    return queries, gallery_rows[[slot[i] for i in gallery]]


@torch.no_grad()
def tau_sweep(model: RetrievalModel, split: RetrievalSplit, vocab: Vocabulary, taus: Sequence[float],
              batch_size: int = 64, device: str = "cpu") -> list[dict]:
    """AMC: recall and expert skip rates at several gate thresholds. Images are embedded once (tau
    only affects the composer), then queries are composed once per tau.

    Returns:
        One ``{"tau", "R@K"..., "skip_rate"}`` entry per tau, in the given order.
    """
    if model.config.family != "amc":
        raise TgirUserError(f"a tau sweep applies to AMC only; this model is {model.config.family!r}")
    _, gallery = embed_split(model, dataclasses.replace(split, queries=[]), vocab, batch_size, device)
    refs = sorted({q.ref for q in split.queries})
    ref_split = dataclasses.replace(split, images=[split.images[i] for i in refs], queries=[])
    _, tokens = _ref_tokens(model, ref_split, batch_size, device)
    slot = {r: i for i, r in enumerate(refs)}
    ids, lengths = vocab.encode_batch([q.text for q in split.queries])
    (s,) = model.encode_text(torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device))
    ref_tokens = tokens[[slot[q.ref] for q in split.queries]].to(device)
    results = []
    for tau in taus:
        model.set_router(tau=tau, conditional=False)
        query, _, gates = model.compose_with_gates(ref_tokens, s)
        result = evaluate_split(split, query.float().cpu().numpy(), gallery)
        result["skip_rate"] = skip_rates([torch.stack(gates, 1).cpu()], model.config.router.experts)
        results.append({"tau": tau, **result})
    return results


def _ref_tokens(model: RetrievalModel, images: RetrievalSplit, batch_size: int, device: str
                ) -> tuple[np.ndarray, torch.Tensor]:
    loader = DataLoader(ImageListDataset([r.path for r in images.images], preprocess_for(model)),
                        batch_size=batch_size)
    embs, toks = [], []
    for batch, _ in loader:
        emb, tok = model.encode_image(batch.to(device))
        embs.append(emb.cpu())
        toks.append(tok.cpu())
    return torch.cat(embs).numpy(), torch.cat(toks)


def skip_rates(gates: list[torch.Tensor], experts: tuple[str, ...]) -> dict:
    """Share of expert executions skipped when each query runs alone (batch 1).

    With a threshold, a sub-threshold gate is exactly 0 and a lone query skips that expert, so the
    skip rate is the share of zero effective gates. Values are the same whatever batch computed them.

    Returns:
        ``{"layer1": {"nin": 0.0, "gtn": 0.12, "crn": 0.41}, ..., "overall": {...per expert...}}``.
    """
    g = torch.cat(gates)  # [Q, layers, experts]
    skipped = (g == 0).float()
    out = {f"layer{i + 1}": {e: round(float(skipped[:, i, j].mean()), 4) for j, e in enumerate(experts)}
           for i in range(g.shape[1])}
    out["overall"] = {e: round(float(skipped[:, :, j].mean()), 4) for j, e in enumerate(experts)}
    return out


def ensemble(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate L2-normalised embeddings of several models and re-normalise (= mean cosine)."""
    joined = torch.from_numpy(np.concatenate(list(embeddings), axis=1))
    return l2norm(joined).numpy()


def evaluate_models(models: Sequence[tuple[RetrievalModel, Vocabulary]], split: RetrievalSplit,
                    batch_size: int = 64, device: str = "cpu", progress: Progress | None = None) -> dict:
    """Evaluate one model, or an ensemble of several, on a split under its dataset's protocol."""
    gates: list[list[torch.Tensor]] = [[] for _ in models]
    pairs = [embed_split(m, split, v, batch_size, device, progress=progress, gates_out=g)
             for (m, v), g in zip(models, gates, strict=True)]
    if len(pairs) == 1:
        result = evaluate_split(split, *pairs[0])
    else:
        result = evaluate_split(split, ensemble([q for q, _ in pairs]), ensemble([g for _, g in pairs]))
    routing = [{"tau": m.config.router.tau, "skip_rate": skip_rates(g, m.config.router.experts)}
               for (m, _), g in zip(models, gates, strict=True) if g]
    if routing:
        result["routing"] = routing if len(routing) > 1 else routing[0]
    return result
