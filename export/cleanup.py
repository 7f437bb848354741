"""Graph passes after export: what the exporter leaves that TensorRT's parser or a clean graph does
not want."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

_INT_RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255)}


def drop_noop_int_clips(model: onnx.ModelProto) -> int:
    """Remove ``Clip`` nodes that clamp a QuantizeLinear output to its dtype's full range.

    The dynamo exporter writes ``quantized_decomposed.quantize_per_channel`` as QuantizeLinear then
    such a Clip, which changes nothing and which TensorRT's parser rejects (Clip takes no int8).
    Works inside subgraphs too. Returns how many were removed.
    """
    return _drop(model.graph, {})


def _constant_values(graph: onnx.GraphProto, outer: dict) -> dict:
    values = dict(outer)
    values.update({i.name: numpy_helper.to_array(i) for i in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _drop(graph: onnx.GraphProto, outer: dict) -> int:
    values = _constant_values(graph, outer)
    producers = {o: n for n in graph.node for o in n.output}
    removed, rename = 0, {}
    for node in list(graph.node):
        src = producers.get(node.input[0]) if node.input else None
        if node.op_type != "Clip" or src is None or src.op_type != "QuantizeLinear" or len(node.input) != 3:
            continue
        lo, hi = values.get(node.input[1]), values.get(node.input[2])
        dtype = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}.get(
            getattr(lo, "dtype", None))
        if dtype is None or (int(lo), int(hi)) != _INT_RANGES[dtype]:
            continue
        if node.output[0] in {o.name for o in graph.output}:
            continue  # keep graph outputs' names; harmless and rare
        rename[node.output[0]] = node.input[0]
        graph.node.remove(node)
        removed += 1
    _rename(graph, rename)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                removed += _drop(attr.g, values)
    return removed


def _rename(graph: onnx.GraphProto, rename: dict) -> None:
    """Replace names read by ``graph``'s nodes, its subgraphs' nodes and its subgraphs' outputs."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g, rename)
    for out in graph.output:  # a subgraph may yield an outer Clip's output (a graph never its own: kept)
        if out.name in rename:
            out.name = rename[out.name]


def bind_lstm_lengths(model: onnx.ModelProto, lengths: str = "lengths") -> int:
    """Feed the graph input ``lengths`` to every forward ``LSTM`` as its ``sequence_lens``.

    The text graph takes texts padded to a fixed length and masks the padded steps afterwards, so the
    exported LSTM runs all of them. With ``sequence_lens`` ONNX Runtime stops each batch at its longest
    text (CSS texts have ~4 words of 32 steps: the text graph drops from 3.1 to 0.46 ms at batch 1)
    and the valid steps are bit-identical: a forward LSTM's step t depends only on steps <= t. A
    reverse or bidirectional LSTM would change (it would start at each text's end instead of at the
    padding), so those are left alone. Returns how many LSTMs were bound.
    """
    graph = model.graph
    source = next((i for i in graph.input if i.name == lengths), None)
    if source is None:
        return 0
    bound = 0
    for node in list(graph.node):
        direction = next((a.s for a in node.attribute if a.name == "direction"), b"forward")
        if node.op_type != "LSTM" or direction != b"forward" or (len(node.input) > 4 and node.input[4]):
            continue
        cast = f"{node.name or 'lstm'}_sequence_lens"
        inputs = [*node.input, *[""] * max(0, 5 - len(node.input))]
        inputs[4] = cast
        del node.input[:]
        node.input.extend(inputs)
        index = list(graph.node).index(node)
        graph.node.insert(index, onnx.helper.make_node("Cast", [lengths], [cast], to=TensorProto.INT32,
                                                       name=f"{cast}_cast"))
        bound += 1
    return bound
