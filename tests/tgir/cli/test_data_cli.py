"""``tgir data``: the README's main command, statistics, and user errors (exit 1, one line)."""

from __future__ import annotations

import json
import shutil

import pytest

from tgir.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_css2d_command_prints_statistics(tmp_path, capsys):
    code, out, _ = run(capsys, "data", "css2d", "--out", str(tmp_path / "d"), "--scale", "0.01")
    assert code == 0
    assert "test:    190 images,    180 queries" in out
    assert (tmp_path / "d" / "images" / "css_train_000189.png").is_file()


def test_css2d_128px_json(tmp_path, capsys):
    code, out, _ = run(capsys, "data", "css2d", "--out", str(tmp_path), "--scale", "0.001", "--size", "128",
                       "--json")
    assert code == 0
    assert json.loads(out)["train"]["images"] == 19
    meta = json.loads((tmp_path / "css2d_config.json").read_text())
    assert meta["config"]["size"] == 128


def test_stats_and_vocab(tiny_css2d, tmp_path, capsys):
    code, out, _ = run(capsys, "data", "stats", "--dataset", "css2d", "--root", str(tiny_css2d), "--split",
                       "test", "--check-images", "--json")
    assert code == 0 and json.loads(out)["queries"] == 180
    code, out, _ = run(capsys, "data", "vocab", "--dataset", "css", "--root", str(tiny_css2d), "--split",
                       "train", "--out", str(tmp_path / "v.json"))
    assert code == 0
    words = json.loads((tmp_path / "v.json").read_text())["words"]
    assert {"add", "remove", "make", "red", "topleft"} <= set(words)


def test_vocab_defaults_to_train_and_refuses_an_empty_vocabulary(tiny_css2d, tmp_path, capsys):
    from tgir.data.registry import load_split
    from tgir.vocab import Vocabulary

    out = tmp_path / "new" / "dir" / "v.json"  # missing folders are created
    code, _, _ = run(capsys, "data", "vocab", "--dataset", "css2d", "--root", str(tiny_css2d), "--out", str(out))
    assert code == 0
    train = Vocabulary.build(q.text for q in load_split("css2d", tiny_css2d, "train").queries)
    assert json.loads(out.read_text())["words"] == train.to_dict()["words"]
    code, _, err = run(capsys, "data", "vocab", "--dataset", "css2d", "--root", str(tiny_css2d),
                       "--out", str(tmp_path / "v0.json"), "--min-count", "100000")
    _assert_one_line_error(code, err, "--min-count 100000 keeps no word", "appears")
    assert not (tmp_path / "v0.json").exists()


@pytest.mark.parametrize("command", ["vocab", "css2d"])
def test_unwritable_output(tiny_css2d, tmp_path, capsys, command):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where a folder should be: unwritable whoever runs the test
    out = blocker / "sub" / ("v.json" if command == "vocab" else "d")
    args = (["vocab", "--dataset", "css2d", "--root", str(tiny_css2d)] if command == "vocab"
            else ["css2d", "--scale", "0.001"])
    code, _, err = run(capsys, "data", *args, "--out", str(out))
    _assert_one_line_error(code, err, str(out), "cannot write there")


def _assert_one_line_error(code, err, *fragments):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tgir: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_root(tmp_path, capsys):
    code, _, err = run(capsys, "data", "stats", "--dataset", "css", "--root", str(tmp_path / "no"))
    _assert_one_line_error(code, err, str(tmp_path / "no"), "expected")


def test_unknown_split(tiny_css2d, capsys):
    code, _, err = run(capsys, "data", "stats", "--dataset", "css", "--root", str(tiny_css2d),
                       "--split", "dev")
    _assert_one_line_error(code, err, "'dev'", "train, test")


def test_corrupt_image(tiny_css2d, tmp_path, capsys):
    root = tmp_path / "c"
    shutil.copytree(tiny_css2d, root)
    (root / "images" / "css_test_000007.png").write_bytes(b"not a png")
    code, _, err = run(capsys, "data", "stats", "--dataset", "css", "--root", str(root), "--check-images")
    _assert_one_line_error(code, err, "css_test_000007.png", "cannot decode image")


def test_bad_option(tiny_css2d, capsys):
    code, _, err = run(capsys, "data", "stats", "--dataset", "css", "--root", str(tiny_css2d), "-o", "x")
    _assert_one_line_error(code, err, "KEY=VALUE")
    code, _, err = run(capsys, "data", "stats", "--dataset", "css", "--root", str(tiny_css2d),
                       "-o", "bogus=1")
    _assert_one_line_error(code, err, "unknown css --option 'bogus'", "valid choices: 'prefer_json', 'image_dir'")
    code, _, err = run(capsys, "data", "stats", "--dataset", "css", "--root", str(tiny_css2d),
                       "-o", "prefer-json=maybe")
    _assert_one_line_error(code, err, "prefer_json=maybe", "true or false")
    code, out, _ = run(capsys, "data", "stats", "--dataset", "css", "--root", str(tiny_css2d),
                       "-o", "prefer-json=false", "--json")  # reads the pickle: same counts
    assert code == 0 and json.loads(out)["queries"] == 180


@pytest.mark.parametrize(("key", "value", "fragments"), [
    ("mods", 5, ("css2d.json['test']['mods']", "expected a list of modifications")),
    ("labels", None, ("css2d.json['test']['labels']", "integer labels")),
    ("objects_img", {"a": 1}, ("css2d.json['test']['objects_img']", "list of scenes")),
])
def test_malformed_dataset_names_the_file_read(tiny_css2d, tmp_path, capsys, key, value, fragments):
    root = tmp_path / "copy"
    shutil.copytree(tiny_css2d, root)
    data = json.loads((root / "css2d.json").read_text())
    data["test"][key] = value
    (root / "css2d.json").write_text(json.dumps(data))
    code, _, err = run(capsys, "data", "stats", "--dataset", "css2d", "--root", str(root))
    _assert_one_line_error(code, err, *fragments)
    assert "--option" not in err and ".dup.npy" not in err


def test_bad_scale_and_existing_output(tmp_path, capsys):
    code, _, err = run(capsys, "data", "css2d", "--out", str(tmp_path), "--scale", "-1")
    _assert_one_line_error(code, err, "scale must be > 0")
    for scale in ("inf", "nan"):
        code, _, err = run(capsys, "data", "css2d", "--out", str(tmp_path / "d5"), "--scale", scale)
        _assert_one_line_error(code, err, "scale must be > 0 and finite")
    assert not (tmp_path / "d5").exists()  # refused before creating anything
    assert run(capsys, "data", "css2d", "--out", str(tmp_path), "--scale", "0.001")[0] == 0
    code, _, err = run(capsys, "data", "css2d", "--out", str(tmp_path), "--scale", "0.001")
    _assert_one_line_error(code, err, "--overwrite")


def test_unknown_dataset_is_a_usage_error(capsys):
    code, _, err = run(capsys, "data", "stats", "--dataset", "nope", "--root", ".")
    assert code == 2 and "'nope' is not one of" in err


def test_debug_shows_traceback(tmp_path):
    from tgir.errors import TgirUserError

    with pytest.raises(TgirUserError):
        main(["--debug", "data", "stats", "--dataset", "css", "--root", str(tmp_path / "no")])


def _fashioniq(root, captions):
    from PIL import Image

    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    (root / "captions" / "cap.dress.val.json").write_text(json.dumps(captions))
    (root / "image_splits" / "split.dress.val.json").write_text(json.dumps(["A", "B"]))
    (root / "images").mkdir()
    for asin in "AB":
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "images" / f"{asin}.jpg", "JPEG")
    return root


def test_corrupt_jpeg(tmp_path, capsys):
    root = _fashioniq(tmp_path / "fiq", [{"candidate": "A", "target": "B", "captions": ["red", "long"]}])
    jpeg = root / "images" / "B.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:120])  # truncated JPEG
    code, _, err = run(capsys, "data", "stats", "--dataset", "fashioniq", "--root", str(root),
                       "--split", "val",
                       "--check-images")
    _assert_one_line_error(code, err, "B.jpg", "cannot decode image")


def test_empty_caption(tmp_path, capsys):
    root = _fashioniq(tmp_path / "fiq", [{"candidate": "A", "target": "B", "captions": [" ", ""]}])
    code, _, err = run(capsys, "data", "stats", "--dataset", "fashioniq", "--root", str(root),
                       "--split", "val")
    _assert_one_line_error(code, err, "cap.dress.val.json[0]", "empty")


def test_wrong_layout(tmp_path, capsys):
    (tmp_path / "shoes").mkdir()
    code, _, err = run(capsys, "data", "stats", "--dataset", "shoes", "--root", str(tmp_path / "shoes"))
    _assert_one_line_error(code, err, "relative_captions_shoes.json", "expected")


def test_fashioniq_option_reaches_the_loader(tmp_path, capsys):
    root = _fashioniq(tmp_path / "fiq", [{"candidate": "A", "target": "B", "captions": ["red", "long"]}])
    code, out, _ = run(capsys, "data", "stats", "--dataset", "fashioniq", "--root", str(root),
                       "--split", "val",
                       "-o", "gallery=full-split", "--json")
    assert code == 0 and json.loads(out)["gallery"] == 2
    code, _, err = run(capsys, "data", "stats", "--dataset", "fashioniq", "--root", str(root),
                       "--split", "val",
                       "-o", "gallery=everything")
    _assert_one_line_error(code, err, "'everything'", "full-split")
