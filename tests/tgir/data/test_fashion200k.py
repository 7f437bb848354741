"""Fashion200k loader: TIRG caption processing, query texts, test pairing, train pairs, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tgir.data.fashion200k import (
    get_different_word,
    load_fashion200k,
    parent_caption_index,
    post_process_caption,
)
from tgir.data.registry import load_split
from tgir.errors import TgirUserError

# category -> rows (image path, raw description), per split.
TEST_ROWS = {
    "dress": [("women/dresses/a/1.jpeg", "black mini dress"),
              ("women/dresses/a/2.jpeg", "red mini dress"),
              ("women/dresses/a/3.jpeg", "black mini dress")],
    "jacket": [("women/jackets/b/4.jpeg", "blue denim jacket.")],
    "pants": [("women/pants/c/5.jpeg", " grey & white pants ")],
    "skirt": [],
    "top": [("women/tops/d/6.jpeg", "white top?")],
}
TEST_QUERY_LINES = [
    "women/dresses/a/1.jpeg women/dresses/a/2.jpeg",
    "women/dresses/a/2.jpeg women/dresses/a/3.jpeg",
    "",  # blank lines are skipped
    "women/dresses/a/1.jpeg women/dresses/a/3.jpeg",
    "women/pants/c/5.jpeg women/tops/d/6.jpeg",
]
TRAIN_ROWS = {
    "dress": [("women/dresses/t/0.jpeg", "black mini dress"),
              ("women/dresses/t/1.jpeg", "red mini dress"),
              ("women/dresses/t/2.jpeg", "black mini dress"),
              ("women/dresses/t/3.jpeg", "blue maxi dress")],
    "jacket": [("women/jackets/t/4.jpeg", "blue denim jacket")],
    "pants": [],
    "skirt": [],
    "top": [("women/tops/t/5.jpeg", "white top"),
            ("women/tops/t/6.jpeg", "white shirt")],
}


def write_split(root: Path, split: str, rows: dict[str, list[tuple[str, str]]]) -> None:
    """Write label files in the real tab-separated format and a tiny JPEG per listed image."""
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for cat, cat_rows in rows.items():
        lines = [f"{path}\t0.{i + 1}\t{desc}\n" for i, (path, desc) in enumerate(cat_rows)]
        (root / "labels" / f"{cat}_{split}_detect_all.txt").write_text("".join(lines))
        for path, _ in cat_rows:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (200, 30, 30)).save(root / path, "JPEG")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_split(tmp_path, "test", TEST_ROWS)
    write_split(tmp_path, "train", TRAIN_ROWS)
    (tmp_path / "test_queries.txt").write_text("\n".join(TEST_QUERY_LINES) + "\n")
    return tmp_path


def user_error(func, *args, **kwargs) -> str:
    with pytest.raises(TgirUserError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_post_process_caption_spells_out_punctuation():
    assert post_process_caption(" a.b?c&d*e \n") == "adotmarkbquestionmarkcandmarkdstarmarke"


def test_get_different_word_first_differing_words_and_quirks():
    assert get_different_word("black mini dress", "red mini dress") == (
        "black", "red", "replace black with red")
    assert get_different_word("a b c", "c d a") == ("b", "d", "replace b with d")
    # No differing word: TIRG's loop variable keeps the last word.
    assert get_different_word("black mini dress", "black mini dress") == (
        "dress", "dress", "replace dress with dress")
    assert get_different_word("white top", "white cotton top") == ("top", "cotton", "replace top with cotton")


def test_parent_caption_index_uses_substring_removal():
    caption2imgids, parents = parent_caption_index(["tan tank", "red dress", "tan tank"])
    assert caption2imgids == {"tan tank": [0, 2], "red dress": [1]}
    # "tan" is removed from inside "tank" too, as TIRG's str.replace does.
    assert parents == {"k": ["tan tank"], "tan": ["tan tank"], "dress": ["red dress"], "red": ["red dress"]}


def test_test_split_images_labels_and_queries(root: Path):
    split = load_fashion200k(root, "test")
    assert split.dataset == "fashion200k" and split.split == "test"
    assert [im.name for im in split.images] == [
        "women/dresses/a/1.jpeg", "women/dresses/a/2.jpeg", "women/dresses/a/3.jpeg",
        "women/jackets/b/4.jpeg", "women/pants/c/5.jpeg", "women/tops/d/6.jpeg"]
    assert split.images[3].path == root / "women/jackets/b/4.jpeg"
    assert split.label_names == ["black mini dress", "red mini dress", "blue denim jacketdotmark",
                                 "grey andmark white pants", "white topquestionmark"]
    assert [im.label for im in split.images] == [0, 1, 0, 2, 3, 4]
    assert split.gallery.tolist() == [0, 1, 2, 3, 4, 5]
    got = [(q.ref, q.text, q.target, q.label) for q in split.queries]
    assert got == [
        (0, "replace black with red", 1, 1),
        (1, "replace red with black", 2, 0),
        (0, "replace dress with dress", 2, 0),
        (4, "replace grey with topquestionmark", 5, 4),
    ]
    assert split.summary() == {"dataset": "fashion200k", "split": "test", "images": 6, "gallery": 6,
                               "queries": 4, "labels": 5}


def test_train_split_pairs_one_query_per_modifiable_image(root: Path):
    split = load_fashion200k(root, "train", seed=3)
    assert len(split.images) == 7
    assert split.label_names == ["black mini dress", "red mini dress", "blue maxi dress",
                                 "blue denim jacket", "white top", "white shirt"]
    assert [im.label for im in split.images] == [0, 1, 0, 2, 3, 4, 5]
    # Modifiable: siblings under parent "mini dress" (images 0, 1, 2) and "white" (5, 6).
    assert [q.ref for q in split.queries] == [0, 1, 2, 5, 6]
    texts = [q.text for q in split.queries]
    assert texts == ["replace black with red", "replace red with black", "replace black with red",
                     "replace top with shirt", "replace shirt with top"]
    targets = [q.target for q in split.queries]
    assert targets[0] == 1 and targets[2] == 1 and targets[3] == 6 and targets[4] == 5
    assert targets[1] in (0, 2)
    assert [q.label for q in split.queries] == [1, 0, 1, 5, 4]
    assert split.extra == {"seed": 3}


def test_train_targets_are_deterministic_per_seed(root: Path):
    def targets(seed: int) -> list[int]:
        return [q.target for q in load_fashion200k(root, "train", seed=seed).queries]

    assert targets(7) == targets(7)
    # Image 1 ("red mini dress") has two images with the sibling caption: both must be drawn.
    assert {targets(s)[1] for s in range(20)} == {0, 2}


def test_registry_loads_fashion200k(root: Path):
    split = load_split("fashion200k", root, "test", check_images=False)
    assert len(split.images) == 6 and len(split.queries) == 4


def test_unknown_split(root: Path):
    msg = user_error(load_fashion200k, root, "val")
    assert msg == "unknown split 'val' for fashion200k; valid choices: train, test"


def test_missing_root(tmp_path: Path):
    msg = user_error(load_fashion200k, tmp_path / "nope", "test")
    assert msg.startswith(f"{tmp_path / 'nope'}: Fashion200k root not found")


def test_missing_label_file(root: Path):
    (root / "labels" / "skirt_test_detect_all.txt").unlink()
    msg = user_error(load_fashion200k, root, "test")
    assert msg.startswith(f"{root / 'labels' / 'skirt_test_detect_all.txt'}: file not found")
    assert "image path, detection score, description" in msg


def test_wrong_column_count(root: Path):
    path = root / "labels" / "jacket_test_detect_all.txt"
    path.write_text("women/jackets/b/4.jpeg\t0.5\tblue jacket\nwomen/jackets/b/9.jpeg\tblue jacket\n")
    msg = user_error(load_fashion200k, root, "test")
    assert msg == (f"{path}:2: expected 3 tab-separated columns "
                   "(image path, detection score, description), found 2")


def test_empty_description(root: Path):
    path = root / "labels" / "top_train_detect_all.txt"
    path.write_text("women/tops/t/5.jpeg\t0.5\t  \n")
    msg = user_error(load_fashion200k, root, "train")
    assert msg.startswith(f"{path}:1: empty description")


def test_test_query_with_unknown_path(root: Path):
    path = root / "test_queries.txt"
    path.write_text("women/dresses/a/1.jpeg women/dresses/a/2.jpeg\nwomen/dresses/a/1.jpeg women/x.jpeg\n")
    msg = user_error(load_fashion200k, root, "test")
    assert msg.startswith(f"{path}:2: 'women/x.jpeg' is not a test image")


def test_test_query_with_wrong_field_count(root: Path):
    path = root / "test_queries.txt"
    path.write_text("women/dresses/a/1.jpeg\n")
    msg = user_error(load_fashion200k, root, "test")
    assert msg == f"{path}:1: expected 2 whitespace-separated image paths (source target), found 1 fields"


def test_missing_test_queries_file(root: Path):
    (root / "test_queries.txt").unlink()
    msg = user_error(load_fashion200k, root, "test")
    assert msg.startswith(f"{root / 'test_queries.txt'}: file not found")


def test_missing_image_file(root: Path):
    (root / "women/tops/d/6.jpeg").unlink()
    msg = user_error(load_fashion200k, root, "test")
    assert msg == f"{root / 'women/tops/d/6.jpeg'}: image file not found (1 of 6 test images missing)"
    assert len(load_fashion200k(root, "test", check_images=False).images) == 6
