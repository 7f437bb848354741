"""MIT-States under TIRG's protocol (google/tirg, ``datasets.py``, class ``MITStates``).

Layout under the root: ``images/<adj> <noun>/*.jpg``. Folders without a space, or whose adjective is
the literal ``adj`` (MIT-States' "no state" folders), are skipped, as TIRG does. The split is by noun:
the 49 nouns of ``TEST_NOUNS`` (copied verbatim from TIRG) are the test split, all others train.
A label is an "adj noun" class; the query text is the target adjective.
"""

from __future__ import annotations

import random
from pathlib import Path

from tgir.data.records import ImageRecord, LabelIndex, Query, RetrievalSplit, check_split, require_dir
from tgir.errors import TgirUserError

SPLITS = ("train", "test")

# TIRG's fixed list of test nouns (datasets.py, MITStates.__init__); 49 entries.
TEST_NOUNS = (
    "armor", "bracelet", "bush", "camera", "candy", "castle",
    "ceramic", "cheese", "clock", "clothes", "coffee", "fan", "fig",
    "fish", "foam", "forest", "fruit", "furniture", "garden", "gate",
    "glass", "horse", "island", "laptop", "lead", "lightning",
    "mirror", "orange", "paint", "persimmon", "plastic", "plate",
    "potato", "road", "rubber", "sand", "shell", "sky", "smoke",
    "steel", "stream", "table", "tea", "tomato", "vacuum", "wax",
    "wheel", "window", "wool",
)


def _class_folders(images_dir: Path) -> list[tuple[str, str, Path]]:
    """List the valid ``(adj, noun, folder)`` classes, sorted by folder name for determinism."""
    classes = []
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        if " " not in folder.name:
            continue
        words = folder.name.split()
        if len(words) != 2:
            # TIRG's `adj, noun = f.split()` fails here too; say why instead of a traceback.
            raise TgirUserError(f"{folder}: class folder name has {len(words)} words "
                                f"(expected '<adjective> <noun>')")
        adj, noun = words
        if adj == "adj":
            continue
        classes.append((adj, noun, folder))
    if not classes:
        raise TgirUserError(f"{images_dir}: no class folders found (expected folders named "
                            f"'<adjective> <noun>' holding .jpg files, e.g. 'ancient castle/')")
    return classes


def _queries(adj_noun: list[tuple[str, str]], label_of: dict,
             split: str, seed: int) -> list[Query]:
    """Each image x each other adjective of its noun; train ones also get a seeded target image."""
    noun2adjs: dict[str, list[str]] = {}
    class2imgs: dict[tuple[str, str], list[int]] = {}
    for i, (adj, noun) in enumerate(adj_noun):
        adjs = noun2adjs.setdefault(noun, [])
        if adj not in adjs:
            adjs.append(adj)
        class2imgs.setdefault((adj, noun), []).append(i)
    rng = random.Random(seed)
    queries = []
    for i, (adj, noun) in enumerate(adj_noun):
        for target_adj in noun2adjs[noun]:
            if target_adj == adj:
                continue
            key = (target_adj, noun)
            # Test targets are classes (TIRG compares captions); train needs one concrete image.
            target = rng.choice(class2imgs[key]) if split == "train" else -1
            queries.append(Query(ref=i, text=target_adj, target=target, label=label_of[key]))
    return queries


def load_mitstates(root: str | Path, split: str, *, seed: int = 0) -> RetrievalSplit:
    """Load one split of MIT-States with TIRG's queries.

    Args:
        root: Folder holding ``images/<adj> <noun>/*.jpg``.
        split: ``"train"`` (nouns not in ``TEST_NOUNS``) or ``"test"`` (nouns in it).
        seed: Seed of the train target draw (see below); ignored for test.

    Returns:
        The split, images ordered by sorted folder then sorted file name, all in the gallery. Labels
        are "adj noun" classes; ``extra["label_adj"][k]`` and ``extra["label_noun"][k]`` give label
        ``k``'s adjective and noun (for adjective-only / noun-only recall). Queries: each image x each
        other adjective of its noun (adjectives in order of first appearance), text = that adjective,
        label = the "target_adj noun" class. Test queries have ``target=-1`` (the target is a class).
        TIRG samples train targets on the fly; here each train query's target is one image of the
        target class drawn in query order by ``random.Random(seed)``. Files not ending in ``jpg`` are
        ignored (TIRG asserts there are none).

    Raises:
        TgirUserError: Unknown split, missing root or ``images/`` folder, no valid class folder, a
            class folder name of more than two words, or no images at all for the split.
    """
    check_split(split, SPLITS, "mitstates")
    root = require_dir(Path(root), "MIT-States root", "a folder holding images/<adj> <noun>/*.jpg")
    images_dir = require_dir(root / "images", "image folder", "images/<adj> <noun>/*.jpg")
    test_nouns = set(TEST_NOUNS)
    index = LabelIndex()
    images: list[ImageRecord] = []
    adj_noun: list[tuple[str, str]] = []
    for adj, noun, folder in _class_folders(images_dir):
        if (noun in test_nouns) != (split == "test"):
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith("jpg"))
        for path in files:
            label = index((adj, noun), f"{adj} {noun}")
            images.append(ImageRecord(path, f"{folder.name}/{path.name}", label))
            adj_noun.append((adj, noun))
    if not images:
        nouns = "the 49 TIRG test nouns" if split == "test" else "nouns outside the 49 TIRG test nouns"
        raise TgirUserError(f"{images_dir}: no .jpg images for the {split} split (expected folders "
                            f"'<adjective> <noun>' with {nouns})")
    # LabelIndex assigns ids in key order, so its keys list the classes by label id.
    label_adj = [adj for adj, _ in index.ids]
    label_noun = [noun for _, noun in index.ids]
    queries = _queries(adj_noun, index.ids, split, seed)
    extra = {"label_adj": label_adj, "label_noun": label_noun}
    if split == "train":
        extra["seed"] = seed
    return RetrievalSplit("mitstates", split, images, queries, index.names, extra=extra)
