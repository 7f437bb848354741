"""Fashion200k under TIRG's protocol (google/tirg, ``datasets.py``, class ``Fashion200k``).

Layout under the root::

    labels/{dress,jacket,pants,skirt,top}_{split}_detect_all.txt   path \\t detection score \\t description
    <path>                                                          the images, relative to the root
    test_queries.txt                                                "source_path target_path" (test split)

Descriptions are post-processed exactly as TIRG does (see ``post_process_caption``); images with the
same post-processed description share a label, so a hit is an identical description. Query texts are
``replace X with Y`` built by ``get_different_word``, quirks included, so texts match TIRG's.
"""

from __future__ import annotations

import random
from pathlib import Path

from tgir.data.records import (
    ImageRecord,
    LabelIndex,
    Query,
    RetrievalSplit,
    check_split,
    require_dir,
    require_file,
)
from tgir.errors import TgirUserError

SPLITS = ("train", "test")
CATEGORIES = ("dress", "jacket", "pants", "skirt", "top")
TEST_QUERIES = "test_queries.txt"


def post_process_caption(text: str) -> str:
    """Normalise a description the way TIRG does, so captions and labels match its vocabulary.

    Args:
        text: The raw description column.

    Returns:
        The stripped text with ``.``, ``?``, ``&`` and ``*`` spelled out as ``dotmark``,
        ``questionmark``, ``andmark`` and ``starmark``.
    """
    return (text.strip().replace(".", "dotmark").replace("?", "questionmark")
            .replace("&", "andmark").replace("*", "starmark"))


def get_different_word(source_caption: str, target_caption: str) -> tuple[str, str, str]:
    """TIRG's modification text: the first source word missing from the target, and vice versa.

    Reproduced with its quirk: when every word of one caption occurs in the other, the loop runs out
    and that caption's *last* word is used (TIRG relies on Python keeping the loop variable).

    Args:
        source_caption: The reference image's (post-processed) description; must be non-empty.
        target_caption: The target image's (post-processed) description; must be non-empty.

    Returns:
        ``(source_word, target_word, "replace <source_word> with <target_word>")``.
    """
    source_words, target_words = source_caption.split(), target_caption.split()
    source_word = next((w for w in source_words if w not in target_words), source_words[-1])
    target_word = next((w for w in target_words if w not in source_words), target_words[-1])
    return source_word, target_word, f"replace {source_word} with {target_word}"


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise TgirUserError(f"{path}: not UTF-8 text ({err})") from None


def _read_label_file(path: Path) -> list[tuple[str, str]]:
    """Parse one ``*_detect_all.txt`` file into ``(image path, post-processed caption)`` rows."""
    rows = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue  # tolerate blank lines (e.g. a trailing one); TIRG would crash on them
        cols = line.split("\t")
        if len(cols) != 3:
            raise TgirUserError(f"{path}:{lineno}: expected 3 tab-separated columns "
                                f"(image path, detection score, description), found {len(cols)}")
        if not cols[0].strip():
            raise TgirUserError(f"{path}:{lineno}: empty image path (expected a path relative to the root)")
        caption = post_process_caption(cols[2])
        if not caption:
            raise TgirUserError(f"{path}:{lineno}: empty description (expected the product description)")
        rows.append((cols[0].strip(), caption))
    return rows


def _test_queries(root: Path, names: list[str], captions: list[str], labels: list[int]) -> list[Query]:
    """Pair the lines of ``test_queries.txt`` as TIRG does; text = first differing words."""
    path = require_file(root / TEST_QUERIES, "lines 'source_path target_path' for the test queries")
    # Later duplicates win, as in TIRG's file2imgid dict.
    index = {name: i for i, name in enumerate(names)}
    queries = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TgirUserError(f"{path}:{lineno}: expected 2 whitespace-separated image paths "
                                f"(source target), found {len(parts)} fields")
        for part in parts:
            if part not in index:
                raise TgirUserError(f"{path}:{lineno}: {part!r} is not a test image "
                                    f"(expected a path listed in labels/*_test_detect_all.txt)")
        src, dst = index[parts[0]], index[parts[1]]
        _, _, text = get_different_word(captions[src], captions[dst])
        queries.append(Query(ref=src, text=text, target=dst, label=labels[dst]))
    return queries


def parent_caption_index(captions: list[str]) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """TIRG's caption index: captions -> images, and parent captions -> their child captions.

    A parent is a caption with one word removed, computed exactly as TIRG does: ``str.replace``
    removes every occurrence of the word *as a substring*, then double spaces are collapsed. Captions
    sharing a parent are (usually) one word apart; that is what makes a training pair.

    Args:
        captions: Post-processed caption of each image, in image order.

    Returns:
        ``(caption2imgids, parent2children)``, both in order of first appearance.
    """
    caption2imgids: dict[str, list[int]] = {}
    for i, c in enumerate(captions):
        caption2imgids.setdefault(c, []).append(i)
    parent2children: dict[str, list[str]] = {}
    for c in caption2imgids:
        for w in c.split():
            p = c.replace(w, "").replace("  ", " ").strip()
            children = parent2children.setdefault(p, [])
            if c not in children:
                children.append(c)
    return caption2imgids, parent2children


def _train_queries(captions: list[str], labels: list[int], seed: int) -> list[Query]:
    """One query per modifiable image, target drawn with TIRG's sampling steps from a seeded RNG.

    TIRG draws a fresh target every epoch; a fixed split needs fixed pairs, so each modifiable image
    (one whose caption shares a parent with another caption) gets exactly one target, drawn in image
    order by ``random.Random(seed)``: a parent of the image, a sibling caption other than its own,
    then an image with that caption.
    """
    caption2imgids, parent2children = parent_caption_index(captions)
    parents_of: dict[int, list[str]] = {}
    for p, children in parent2children.items():
        if len(children) >= 2:
            for c in children:
                for i in caption2imgids[c]:
                    parents_of.setdefault(i, []).append(p)
    rng = random.Random(seed)
    queries = []
    for i in sorted(parents_of):
        while True:  # terminates: every listed parent has a child other than this image's caption
            c = rng.choice(parent2children[rng.choice(parents_of[i])])
            if c != captions[i]:
                break
        j = rng.choice(caption2imgids[c])
        _, _, text = get_different_word(captions[i], captions[j])
        queries.append(Query(ref=i, text=text, target=j, label=labels[j]))
    return queries


def load_fashion200k(root: str | Path, split: str, *, seed: int = 0,
                     check_images: bool = True) -> RetrievalSplit:
    """Load one split of Fashion200k with TIRG's queries.

    Args:
        root: Folder holding ``labels/`` and the image folders (and ``test_queries.txt`` for test).
        split: ``"train"`` or ``"test"``.
        seed: Seed of the train target draw (see below); ignored for test.
        check_images: Check that every listed image file exists (one ``stat`` per image).

    Returns:
        The split; every image is in the gallery (evaluation excludes a query's own reference).
        Label files are read in the order dress, jacket, pants, skirt, top. Test queries are the lines
        of ``test_queries.txt`` (target = the named image, label = its description). Train queries:
        TIRG samples a random target on the fly; here each image whose caption has a one-word-apart
        sibling gets exactly one query, its target drawn deterministically by ``random.Random(seed)``
        following TIRG's steps (parent caption, sibling caption, image). Text: ``replace X with Y``.

    Raises:
        TgirUserError: Unknown split, missing root/label file/``test_queries.txt``/image, a line with
            the wrong number of columns, an empty description, or a test query naming an unknown image.
    """
    check_split(split, SPLITS, "fashion200k")
    root = require_dir(Path(root), "Fashion200k root", "a folder holding labels/ and the image folders")
    label_dir = require_dir(root / "labels", "label folder", f"labels/<category>_{split}_detect_all.txt")
    rows: list[tuple[str, str]] = []
    for cat in CATEGORIES:
        path = require_file(label_dir / f"{cat}_{split}_detect_all.txt",
                            "tab-separated lines: image path, detection score, description")
        rows.extend(_read_label_file(path))
    if not rows:
        raise TgirUserError(f"{label_dir}: the {split} label files list no images")
    index = LabelIndex()
    names = [name for name, _ in rows]
    captions = [caption for _, caption in rows]
    labels = [index(c) for c in captions]
    images = [ImageRecord(root / name, name, lab) for name, lab in zip(names, labels, strict=True)]
    if check_images:
        missing = [r.path for r in images if not r.path.is_file()]
        if missing:
            raise TgirUserError(f"{missing[0]}: image file not found "
                                f"({len(missing)} of {len(images)} {split} images missing)")
    if split == "test":
        queries = _test_queries(root, names, captions, labels)
        extra: dict = {}
    else:
        queries = _train_queries(captions, labels, seed)
        extra = {"seed": seed}
    return RetrievalSplit("fashion200k", split, images, queries, index.names, extra=extra)
