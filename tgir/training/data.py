"""Training batches: triplets with tokenised texts, from images or from cached backbone features."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tgir.data.images import Preprocess, load_image
from tgir.data.records import Query, RetrievalSplit
from tgir.data.torch_datasets import ImageListDataset
from tgir.errors import TgirUserError
from tgir.vocab import Vocabulary


def hold_out(split: RetrievalSplit, fraction: float, seed: int) -> tuple[list[Query], list[Query]]:
    """Split a training split's queries into (train, validation) by reference image, so no
    validation reference is ever trained on. Deterministic for a seed."""
    refs = sorted({q.ref for q in split.queries})
    random.Random(f"holdout/{seed}").shuffle(refs)
    held = set(refs[: round(len(refs) * fraction)])
    train = [q for q in split.queries if q.target >= 0 and q.ref not in held]
    val = [q for q in split.queries if q.ref in held]
    return train, val


class TripletIndexDataset(Dataset):
    """Yields ``(ref index, text, target index)``; images are fetched by the collate function."""

    def __init__(self, queries: list[Query]) -> None:
        self.queries = queries

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i: int):
        q = self.queries[i]
        return q.ref, q.text, q.target, q.label


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size // group`` reference images with ``group`` queries each.

    Queries that share a reference image are each other's hardest negatives (their targets differ
    only by what the texts change), which random batches almost never contain. Deterministic for
    a generator seed; incomplete groups and batches are dropped, as drop_last does.
    """

    def __init__(self, queries: list[Query], batch_size: int, group: int, generator: torch.Generator) -> None:
        if group < 1 or batch_size % group:
            raise TgirUserError(f"group size {group} must divide batch size {batch_size}")
        self.by_ref: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            self.by_ref.setdefault(q.ref, []).append(i)
        self.batch_size, self.group, self.generator = batch_size, group, generator
        self.refs = sorted(self.by_ref)

    def _chunks(self) -> list[list[int]]:
        chunks = []
        for ref in self.refs:
            members = self.by_ref[ref]
            order = torch.randperm(len(members), generator=self.generator).tolist()
            chunks += [[members[j] for j in order[k:k + self.group]]
                       for k in range(0, len(order) - self.group + 1, self.group)]
        return [chunks[i] for i in torch.randperm(len(chunks), generator=self.generator).tolist()]

    def __iter__(self):
        chunks, per_batch = self._chunks(), self.batch_size // self.group
        for b in range(len(chunks) // per_batch):
            yield [i for chunk in chunks[b * per_batch:(b + 1) * per_batch] for i in chunk]

    def __len__(self) -> int:
        full = sum(len(m) // self.group for m in self.by_ref.values())
        return full // (self.batch_size // self.group)


class FeatureCache:
    """Backbone outputs of every image of a split, kept in float16 (for a frozen backbone)."""

    def __init__(self, levels: list[torch.Tensor]) -> None:
        self.levels = levels  # one [N, C, h, w] tensor per level

    @classmethod
    @torch.no_grad()
    def build(cls, backbone: torch.nn.Module, split: RetrievalSplit, preprocess: Preprocess, batch_size: int,
              device: str, progress: Callable[[int, int], None] | None = None) -> FeatureCache:
        backbone = backbone.eval().to(device)
        loader = DataLoader(ImageListDataset([r.path for r in split.images], preprocess), batch_size=batch_size)
        levels: list[torch.Tensor] | None = None
        for images, positions in loader:
            feats = backbone(images.to(device))
            if levels is None:
                levels = [torch.empty((len(split.images), *f.shape[1:]), dtype=torch.float16) for f in feats]
            for store, f in zip(levels, feats, strict=True):
                store[positions] = f.to(torch.float16).cpu()
            if progress:
                progress(int(positions[-1]) + 1, len(split.images))
        return cls(levels or [])

    @classmethod
    def load_or_build(cls, folder: str | Path, key: dict, *build_args, **build_kwargs) -> FeatureCache:
        """Reuse features saved under ``folder`` for the same ``key`` (backbone, input size, images),
        else build and save them. Saves minutes per run when a frozen backbone is reused."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = Path(folder) / f"features-{digest}.pt"
        if path.is_file():
            return cls(torch.load(path, weights_only=True))
        cache = cls.build(*build_args, **build_kwargs)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(cache.levels, tmp)
        tmp.replace(path)
        return cache

    def __getitem__(self, indices: torch.Tensor) -> list[torch.Tensor]:
        return [level[indices].float() for level in self.levels]


def make_collate(vocab: Vocabulary, split: RetrievalSplit, preprocess: Preprocess,
                 cache: FeatureCache | None):
    """Collate ``(ref, text, target)`` index triplets into model inputs.

    Returns a function giving ``(ref, ids [B, L], lengths [B], target, target labels [B])``, where
    ``ref`` and ``target`` are image batches ``[B, 3, H, W]`` or, with a cache, lists of feature maps.
    """

    def images(indices: list[int]):
        if cache is not None:
            return cache[torch.tensor(indices)]
        return torch.stack([torch.from_numpy(preprocess(load_image(split.images[i].path))) for i in indices])

    def collate(batch):
        refs, texts, targets, labels = zip(*batch, strict=True)
        ids, lengths = vocab.encode_batch(texts)
        return (images(list(refs)), torch.from_numpy(ids), torch.from_numpy(lengths), images(list(targets)),
                torch.tensor(labels))

    return collate
