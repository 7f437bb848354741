"""The text graph's LSTM gets the text lengths as sequence_lens: fewer steps, identical numbers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from tgir.export.cleanup import bind_lstm_lengths


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_exported_text_graph_binds_lengths_and_keeps_its_numbers(tiny_amc_bundle):
    model = onnx.load(str(tiny_amc_bundle / "text_encoder.onnx"))
    lstm = [n for n in model.graph.node if n.op_type == "LSTM"]
    assert len(lstm) == 1 and len(lstm[0].input) >= 5 and lstm[0].input[4]
    cast = next(n for n in model.graph.node if n.output[0] == lstm[0].input[4])
    assert cast.op_type == "Cast" and list(cast.input) == ["lengths"]
    assert bind_lstm_lengths(model) == 0  # already bound: idempotent

    unbound = onnx.ModelProto()
    unbound.CopyFrom(model)
    node = next(n for n in unbound.graph.node if n.op_type == "LSTM")
    node.input[4] = ""  # every padded step computed, as exported by torch
    rng = np.random.default_rng(0)
    length = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    lengths = np.array([1, length, 3, 2], np.int64)
    ids = np.zeros((4, length), np.int64)
    for row, n in zip(ids, lengths, strict=True):
        row[:n] = rng.integers(4, 10, n)
    feeds = {"ids": ids, "lengths": lengths}
    for got, want in zip(_session(model).run(None, feeds), _session(unbound).run(None, feeds), strict=True):
        assert np.array_equal(got, want)


def test_reverse_lstms_and_graphs_without_lengths_are_left_alone(tiny_amc_bundle):
    model = onnx.load(str(tiny_amc_bundle / "text_encoder.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    node.input[4] = ""
    next(a for a in node.attribute if a.name == "direction").s = b"reverse"
    assert bind_lstm_lengths(model) == 0
    assert bind_lstm_lengths(model, lengths="no_such_input") == 0
