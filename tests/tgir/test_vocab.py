"""Vocabulary and tokenizer: the rules, special ids, unknown words, JSON round trip."""

from __future__ import annotations

import json

import pytest

from tgir.errors import TgirUserError
from tgir.vocab import AND, BOS, EOS, PAD, UNK, Vocabulary, tokenize


def test_tokenize_rules():
    assert tokenize("Make it RED, with long-sleeves!") == ["make", "it", "red", "with", "longsleeves"]
    assert tokenize("café  naïve") == ["caf", "nave"]  # non-ASCII characters dropped
    assert tokenize("<bos> is Red <AND> short <EOS>") == ["<BOS>", "is", "red", "<AND>", "short", "<EOS>"]
    assert tokenize("  ...  ") == []


def test_special_ids_and_encoding():
    v = Vocabulary.build(["red dress", "blue dress", "red shirt"])
    assert (UNK, AND, BOS, EOS, PAD) == (0, 1, 2, 3, 0)
    assert v.itos[:7] == ["<UNK>", "<AND>", "<BOS>", "<EOS>", "dress", "red", "blue"]
    assert v.encode("<BOS> Red <AND> shiny dress <EOS>") == [2, 5, 1, 0, 4, 3]
    assert v.encode("") == [UNK]  # never an empty sequence


def test_batch_padding_and_truncation():
    v = Vocabulary.build(["a b c d e"], max_length=3)
    ids, lengths = v.encode_batch(["a b c d e", "b", ""])
    assert ids.tolist() == [[4, 5, 6], [5, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 1]


def test_min_count_and_deterministic_order():
    texts = ["x y", "y z", "y x"]
    v = Vocabulary.build(texts, min_count=2)
    assert v.itos[4:] == ["y", "x"]
    assert Vocabulary.build(list(reversed(texts)), min_count=2).itos == v.itos


def test_round_trip(tmp_path):
    v = Vocabulary.build(["make it red", "add a circle"], max_length=12)
    path = tmp_path / "vocab.json"
    v.save(path)
    w = Vocabulary.load(path)
    assert w.itos == v.itos and w.max_length == 12
    assert w.encode("add red circle") == v.encode("add red circle")


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not valid JSON"),
    ('{"format": "other"}', "not a tgir vocabulary"),
    ('{"format": "tgir-vocab", "version": 99}', "vocabulary version 99"),
    ('{"format": "tgir-vocab", "version": 1, "specials": {"<UNK>": 1}}', "special ids differ"),
    ('{"format": "tgir-vocab", "version": 1, "specials": {"<UNK>": 0, "<AND>": 1, "<BOS>": 2, '
     '"<EOS>": 3}, "words": [1]}', "'words' must be a list of strings"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(TgirUserError, match=message):
        Vocabulary.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(TgirUserError, match="vocabulary file not found"):
        Vocabulary.load(tmp_path / "none.json")


def test_saved_rules_are_explicit(tmp_path):
    Vocabulary.build(["a"]).save(tmp_path / "v.json")
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["rules"]["lowercase"] and data["pad_id"] == 0 and data["words"] == ["a"]
