"""torch ``Dataset`` views over a ``RetrievalSplit``: queries, gallery and training triplets."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from tgir.data.images import Preprocess, load_image
from tgir.data.records import RetrievalSplit


class _SplitDataset(Dataset):
    def __init__(self, split: RetrievalSplit, transform: Preprocess) -> None:
        self.split = split
        self.transform = transform

    def _image(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.transform(load_image(self.split.images[index].path)))


class QueryDataset(_SplitDataset):
    """Yields ``(reference image [3,H,W], text, target id)`` per query.

    The target id indexes ``split.images``; it is -1 when the target is a class rather than one
    image (MIT-States test) or unknown (FashionIQ test captions).
    """

    def __len__(self) -> int:
        return len(self.split.queries)

    def __getitem__(self, i: int):
        q = self.split.queries[i]
        return self._image(q.ref), q.text, q.target


class GalleryDataset(_SplitDataset):
    """Yields ``(image [3,H,W], image id)`` for each gallery image; ids index ``split.images``."""

    def __init__(self, split: RetrievalSplit, transform: Preprocess) -> None:
        super().__init__(split, transform)
        self.indices = split.gallery.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        return self._image(index), index


class TripletDataset(_SplitDataset):
    """Training view: ``(reference image, text, target image)`` for queries with a target image."""

    def __init__(self, split: RetrievalSplit, transform: Preprocess) -> None:
        super().__init__(split, transform)
        self.queries = [q for q in split.queries if q.target >= 0]

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i: int):
        q = self.queries[i]
        return self._image(q.ref), q.text, self._image(q.target)


class ImageListDataset(Dataset):
    """Yields ``(image [3,H,W], position)`` for a list of image paths (used to embed catalogues)."""

    def __init__(self, paths, transform: Preprocess) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.transform(load_image(self.paths[i]))), i
