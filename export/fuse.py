"""One ``query_encoder`` graph from a bundle's three graphs: a whole query in one session call.

A query at batch 1 runs the image encoder, the text encoder and the composer; through three sessions
it pays three calls, three output copies and three rounds of input checks. Merged into one ONNX graph
the query path loses that overhead while the three graphs stay for gallery encoding, TensorRT and the
C runtime. Measured (INT8 AMC bundle, ONNX Runtime CPU, one thread, batch 1; benchmarks/RESULTS.md):
raw session calls on one query 1.61 ms (three) vs 1.46 ms (fused); ``tgir bench`` query compose over
a mix of queries 2.13 vs 2.07 ms, a small gain beside that table's run-to-run noise.

The fused graph is written beside the three as ``query_encoder.onnx`` and listed under the manifest's
``build["fused"]`` (not ``graphs``: every backend must run ``graphs``; a fused entry point is an
optional shortcut a runner may take). It is made from the bundle's final graphs (FP32, FP16 or
INT8 Q/DQ alike), so it computes the same function; ``build-engine`` checks that at verify time.

Names: every tensor of each source graph is prefixed with its graph's name (inside ``If`` branches
too: ``onnx.compose.add_prefix`` leaves the outer-scope names that branches read unrenamed), then the
fused graph's inputs and output take back their contract names (``images``, ``ids``, ``lengths``,
``query``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import compose

from tgir.errors import TgirUserError
from tgir.manifest import FUSED_QUERY, GRAPHS, Manifest


def query_graph_from_bundle(folder: str | Path, manifest: Manifest) -> dict:
    """Write ``query_encoder.onnx`` into a bundle and record it in ``manifest.build["fused"]``.

    Call before ``manifest.save`` (the file joins the checksummed files).

    Returns:
        The fused graph's entry: ``{"file", "inputs", "outputs", "dynamic", "from"}`` where ``from``
        maps each source graph to its file's SHA-256 at fusion time.

    Raises:
        TgirUserError: The bundle lacks one of the three graphs, or a composer input has no producer.
    """
    folder = Path(folder)
    missing = [g for g in GRAPHS if g not in manifest.graphs]
    if missing:
        raise TgirUserError(f"{folder}: cannot fuse a query graph without the {', '.join(missing)} graph(s)")
    specs = {g: manifest.graphs[g] for g in GRAPHS}
    models = {g: onnx.load(str(folder / specs[g]["file"])) for g in GRAPHS}
    for name, model in models.items():
        _rename(model.graph, _prefixed(f"{name}/"))
    produced = {t["name"]: g for g in ("image_encoder", "text_encoder") for t in specs[g]["outputs"]}
    links = []
    for t in specs["composer"]["inputs"]:
        if t["name"] not in produced:
            raise TgirUserError(f"{folder}: composer input {t['name']!r} is no output of the encoders; "
                                "the bundle's contract is inconsistent")
        links.append((f"{produced[t['name']]}/{t['name']}", f"composer/{t['name']}"))
    encoders = compose.merge_models(models["image_encoder"], models["text_encoder"], io_map=[])
    fused = compose.merge_models(encoders, models["composer"], io_map=links, outputs=["composer/query"],
                                 doc_string="tgir query_encoder: image_encoder + text_encoder + composer")
    contract = {v.name: v.name.split("/", 1)[1] for v in [*fused.graph.input, *fused.graph.output]}
    _rename(fused.graph, lambda tensor: contract.get(tensor, tensor))  # back to the contract's names
    onnx.checker.check_model(fused)
    file = f"{FUSED_QUERY}.onnx"
    onnx.save(fused, str(folder / file))
    entry = {"file": file,
             "inputs": [*specs["image_encoder"]["inputs"], *specs["text_encoder"]["inputs"]],
             "outputs": [t for t in specs["composer"]["outputs"] if t["name"] == "query"],
             "dynamic": specs["composer"]["dynamic"],
             "from": {g: manifest.files.get(specs[g]["file"], "") for g in GRAPHS}}
    manifest.build.setdefault("fused", {})[FUSED_QUERY] = entry
    manifest.files[file] = ""
    return entry


def _prefixed(prefix: str) -> Callable[[str], str]:
    return lambda name: prefix + name if name else name  # "" marks an omitted optional input


def _rename(graph: onnx.GraphProto, rename: Callable[[str], str]) -> None:
    """Apply ``rename`` to every tensor and node name of ``graph`` and of its subgraphs (names are
    global in ONNX exports, so renaming all scopes alike keeps the branches' outer-scope references
    intact)."""
    for t in graph.initializer:
        t.name = rename(t.name)
    for t in graph.sparse_initializer:
        t.values.name, t.indices.name = rename(t.values.name), rename(t.indices.name)
    for v in [*graph.input, *graph.output, *graph.value_info]:
        v.name = rename(v.name)
    for node in graph.node:
        node.name = rename(node.name)
        node.input[:] = [rename(x) for x in node.input]
        node.output[:] = [rename(x) for x in node.output]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else []) + list(attr.graphs):
                _rename(sub, rename)
