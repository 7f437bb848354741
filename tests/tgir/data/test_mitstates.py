"""MIT-States loader: folder parsing, the TIRG test-noun split, query enumeration, labels, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tgir.data.mitstates import TEST_NOUNS, load_mitstates
from tgir.data.registry import load_split
from tgir.errors import TgirUserError

# folder -> image files. castle and tomato are TIRG test nouns; car and bike are not.
LAYOUT = {
    "ancient castle": ["b.jpg", "a.jpg", "notes.txt"],  # unsorted on purpose; .txt is ignored
    "broken castle": ["c.jpg"],
    "old castle": ["d.jpg"],
    "adj castle": ["h.jpg"],  # adjective "adj": skipped
    "castle": ["i.jpg"],  # no space: skipped
    "ripe tomato": ["e.jpg"],
    "unripe tomato": ["g.jpg", "f.jpg"],
    "new bike": ["l.jpg"],  # only one adjective for "bike": no queries
    "new car": ["k.jpg"],
    "old car": ["j1.jpg", "j2.jpg"],
}


def build(root: Path, layout: dict[str, list[str]]) -> Path:
    """Write ``images/<folder>/<file>`` with tiny real JPEGs (other files as plain text)."""
    for folder, files in layout.items():
        (root / "images" / folder).mkdir(parents=True)
        for name in files:
            path = root / "images" / folder / name
            if name.endswith(".jpg"):
                Image.new("RGB", (4, 4), (30, 90, 200)).save(path, "JPEG")
            else:
                path.write_text("not an image")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build(tmp_path, LAYOUT)


def user_error(func, *args, **kwargs) -> str:
    with pytest.raises(TgirUserError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_test_nouns_are_tirgs_49():
    assert len(TEST_NOUNS) == 49 and len(set(TEST_NOUNS)) == 49
    assert TEST_NOUNS[0] == "armor" and TEST_NOUNS[-1] == "wool"
    assert list(TEST_NOUNS) == sorted(TEST_NOUNS)  # TIRG's list is alphabetical
    assert {"castle", "tomato", "persimmon", "lightning"} <= set(TEST_NOUNS)
    assert "car" not in TEST_NOUNS and "bike" not in TEST_NOUNS


def test_test_split_images_labels_and_queries(root: Path):
    split = load_mitstates(root, "test")
    assert [im.name for im in split.images] == [
        "ancient castle/a.jpg", "ancient castle/b.jpg", "broken castle/c.jpg", "old castle/d.jpg",
        "ripe tomato/e.jpg", "unripe tomato/f.jpg", "unripe tomato/g.jpg"]
    assert split.images[0].path == root / "images" / "ancient castle" / "a.jpg"
    assert split.label_names == ["ancient castle", "broken castle", "old castle", "ripe tomato",
                                 "unripe tomato"]
    assert [im.label for im in split.images] == [0, 0, 1, 2, 3, 4, 4]
    assert split.extra == {"label_adj": ["ancient", "broken", "old", "ripe", "unripe"],
                           "label_noun": ["castle", "castle", "castle", "tomato", "tomato"]}
    assert split.gallery.tolist() == list(range(7))
    # 4 castle images x 2 other adjectives + 3 tomato images x 1 = 11 queries.
    got = [(q.ref, q.text, q.target, q.label) for q in split.queries]
    assert got == [
        (0, "broken", -1, 1), (0, "old", -1, 2),
        (1, "broken", -1, 1), (1, "old", -1, 2),
        (2, "ancient", -1, 0), (2, "old", -1, 2),
        (3, "ancient", -1, 0), (3, "broken", -1, 1),
        (4, "unripe", -1, 4),
        (5, "ripe", -1, 3), (6, "ripe", -1, 3),
    ]


def test_train_split_images_and_queries(root: Path):
    split = load_mitstates(root, "train", seed=5)
    assert [im.name for im in split.images] == ["new bike/l.jpg", "new car/k.jpg", "old car/j1.jpg",
                                                "old car/j2.jpg"]
    assert split.label_names == ["new bike", "new car", "old car"]
    assert [im.label for im in split.images] == [0, 1, 2, 2]
    assert split.extra == {"label_adj": ["new", "new", "old"], "label_noun": ["bike", "car", "car"],
                           "seed": 5}
    got = [(q.ref, q.text, q.label) for q in split.queries]
    assert got == [(1, "old", 2), (2, "new", 1), (3, "new", 1)]
    targets = [q.target for q in split.queries]
    assert targets[0] in (2, 3) and targets[1:] == [1, 1]


def test_train_targets_are_deterministic_per_seed(root: Path):
    def first_target(seed: int) -> int:
        return load_mitstates(root, "train", seed=seed).queries[0].target

    assert [first_target(4)] * 3 == [first_target(4) for _ in range(3)]
    assert {first_target(s) for s in range(20)} == {2, 3}


def test_registry_loads_mitstates(root: Path):
    split = load_split("mitstates", root, "test")
    assert len(split.images) == 7 and len(split.queries) == 11


def test_unknown_split(root: Path):
    msg = user_error(load_mitstates, root, "val")
    assert msg == "unknown split 'val' for mitstates; valid choices: train, test"


def test_missing_root(tmp_path: Path):
    msg = user_error(load_mitstates, tmp_path / "nope", "test")
    assert msg.startswith(f"{tmp_path / 'nope'}: MIT-States root not found")


def test_missing_images_folder(tmp_path: Path):
    msg = user_error(load_mitstates, tmp_path, "test")
    assert msg == f"{tmp_path / 'images'}: image folder not found (expected images/<adj> <noun>/*.jpg)"


def test_no_valid_class_folders(tmp_path: Path):
    build(tmp_path, {"castle": ["a.jpg"], "adj castle": ["b.jpg"]})
    msg = user_error(load_mitstates, tmp_path, "train")
    assert msg.startswith(f"{tmp_path / 'images'}: no class folders found")
    assert "'<adjective> <noun>'" in msg


def test_three_word_folder(tmp_path: Path):
    build(tmp_path, {"very old castle": ["a.jpg"], "new castle": ["b.jpg"]})
    msg = user_error(load_mitstates, tmp_path, "test")
    assert msg == (f"{tmp_path / 'images' / 'very old castle'}: class folder name has 3 words "
                   "(expected '<adjective> <noun>')")


def test_no_images_for_split(tmp_path: Path):
    build(tmp_path, {"old car": ["a.jpg"], "new car": ["b.jpg"]})
    msg = user_error(load_mitstates, tmp_path, "test")
    assert msg.startswith(f"{tmp_path / 'images'}: no .jpg images for the test split")
    assert len(load_mitstates(tmp_path, "train").images) == 2
