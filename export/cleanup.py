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
    removed += sum(_drop(sub, values) for sub in _subgraphs(graph))
    return removed


def _subgraphs(graph: onnx.GraphProto):
    """The graphs held by ``graph``'s nodes (``If`` branches, ``Loop`` bodies), one level down."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield attr.g


def _forget_shapes(graph: onnx.GraphProto, names: set) -> None:
    """Drop recorded shapes of tensors a pass changed, so no stale ``value_info`` contradicts them."""
    for info in [v for v in graph.value_info if v.name in names]:
        graph.value_info.remove(info)


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


def fold_pads_into_quantized_convs(model: onnx.ModelProto) -> int:
    """Rewrite ``Pad(0) -> QuantizeLinear -> DequantizeLinear -> Conv`` as ``Q -> DQ -> Conv`` with the
    Conv's own ``pads`` grown by the Pad's.

    EfficientNet's TF-"same" padding is an explicit zero ``Pad`` before each strided depthwise conv;
    in a float graph the ONNX optimiser folds it into the Conv, but a Q/DQ pair in between hides it,
    and the Pad then separates the previous conv's output from its QuantizeLinear: ONNX Runtime
    cannot run either conv as a QLinearConv (measured: 12 of 34 convs stayed fp32, and the INT8 image
    encoder was 2x slower than FP32). Exact: zero quantizes to the zero point, which dequantizes to
    zero, and quantized convs pad with the zero point. Works inside subgraphs. Returns how many.
    """
    return _fold_pads(model.graph, {})


def _fold_pads(graph: onnx.GraphProto, outer: dict) -> int:
    values = _constant_values(graph, outer)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = 0
    for pad in list(graph.node):
        chain = _pad_chain(pad, consumers, outputs)
        spatial = _zero_pad_amounts(pad, values) if chain else None
        if spatial is None:
            continue
        quant, conv = chain
        attrs = {a.name: a for a in conv.attribute}
        rank = len(spatial) // 2
        old = list(attrs["pads"].ints) if "pads" in attrs else [0] * (2 * rank)
        new = [a + b for a, b in zip(old, spatial, strict=True)]
        if "pads" in attrs:
            conv.attribute.remove(attrs["pads"])
        conv.attribute.append(onnx.helper.make_attribute("pads", new))
        quant.input[0] = pad.input[0]
        graph.node.remove(pad)
        _forget_shapes(graph, {quant.output[0], *(n.output[0] for n in consumers[quant.output[0]])})  # unpadded
        folded += 1
    folded += sum(_fold_pads(sub, values) for sub in _subgraphs(graph))
    return folded


def _pad_chain(pad: onnx.NodeProto, consumers: dict, outputs: set) -> tuple | None:
    """``(QuantizeLinear, Conv)`` when ``pad`` feeds exactly one Q -> one DQ -> the data input of one
    Conv without ``auto_pad``; else None."""
    if pad.op_type != "Pad" or pad.output[0] in outputs:
        return None
    quant = _sole_reader(pad, "QuantizeLinear", consumers, outputs)
    dequant = quant and _sole_reader(quant, "DequantizeLinear", consumers, outputs)
    conv = dequant and _sole_reader(dequant, "Conv", consumers, set())
    if conv is None or conv.input[0] != dequant.output[0]:
        return None
    auto_pad = next((a.s for a in conv.attribute if a.name == "auto_pad"), b"NOTSET")
    return (quant, conv) if auto_pad == b"NOTSET" else None


def _sole_reader(node: onnx.NodeProto, op: str, consumers: dict, outputs: set) -> onnx.NodeProto | None:
    """The only node that reads ``node``'s output, when it is an ``op`` whose output is not a graph output."""
    readers = consumers.get(node.output[0], [])
    if len(readers) != 1 or readers[0].op_type != op or readers[0].output[0] in outputs:
        return None
    return readers[0]


def _zero_pad_amounts(pad: onnx.NodeProto, values: dict) -> list[int] | None:
    """The Conv-style ``pads`` (spatial begins, then ends) of a constant zero Pad that leaves the batch
    and channel axes alone; None for anything else."""
    mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
    pads = values.get(pad.input[1]) if len(pad.input) > 1 else None
    fill = values.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
    axes = len(pad.input) > 3 and pad.input[3]
    if mode != b"constant" or pads is None or fill is None or np.any(fill != 0) or axes:
        return None
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    rank = len(pads) // 2
    begins, ends = pads[:rank], pads[rank:]
    if rank < 3 or any(begins[:2]) or any(ends[:2]) or min(pads) < 0:
        return None
    return begins[2:] + ends[2:]


def merge_duplicate_quantizers(model: onnx.ModelProto) -> int:
    """Make QuantizeLinear nodes that read the same tensor with equal scale, zero point and attributes
    one node (its DequantizeLinear consumers are merged the same way).

    Calibration gives a residual block's skip input and its first conv's input the same quantizer
    (they are one tensor, observed alike); written twice, the tensor would have two Q -> DQ paths, and
    ONNX Runtime fuses a conv into a QLinearConv only when its output feeds QuantizeLinear nodes alone
    with one quantization. Exact. Works inside subgraphs. Returns how many nodes were removed.
    """
    return _merge_quantizers(model.graph, {})


def _merge_quantizers(graph: onnx.GraphProto, outer: dict) -> int:
    values = _constant_values(graph, outer)
    outputs = {o.name for o in graph.output}
    removed = 0
    for op in ("QuantizeLinear", "DequantizeLinear"):  # DQs of merged Qs become duplicates in turn
        kept: dict[tuple, str] = {}
        rename: dict[str, str] = {}
        for node in list(graph.node):
            key = _quantizer_key(node, op, values) if node.output[0] not in outputs else None
            if key is None:
                continue
            if key in kept:
                rename[node.output[0]] = kept[key]
                graph.node.remove(node)
                removed += 1
            else:
                kept[key] = node.output[0]
        _rename(graph, rename)
        _forget_shapes(graph, set(rename))
    removed += sum(_merge_quantizers(sub, values) for sub in _subgraphs(graph))
    return removed


def _quantizer_key(node: onnx.NodeProto, op: str, values: dict) -> tuple | None:
    """What makes two (de)quantizers equal: op, input tensor, constant scale/zero point (values, dtype
    and shape) and attributes; None when a parameter is not a constant."""
    if node.op_type != op or len(node.output) != 1:
        return None
    params = []
    for name in node.input[1:]:
        if not name:
            continue
        value = values.get(name)
        if value is None:
            return None
        value = np.asarray(value)
        params.append((value.dtype.str, value.shape, value.tobytes()))
    attrs = tuple(sorted((a.name, onnx.helper.get_attribute_value(a)) for a in node.attribute))
    return (op, node.domain, node.input[0], tuple(params), repr(attrs))
