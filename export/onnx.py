"""torch -> ONNX: three graphs per model (the router as ``If`` subgraphs or dense), written atomically
as a bundle directory with its manifest."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from tgir.export.cleanup import (
    bind_lstm_lengths,
    drop_noop_int_clips,
    fold_pads_into_quantized_convs,
    merge_duplicate_quantizers,
)
from tgir.export.graphs import graph_modules

from tgir.errors import TgirUserError
from tgir.manifest import GRAPHS, Manifest, contract_to_json, io_contract, sha256, staged_bundle
from tgir.models.base import RetrievalModel
from tgir.training.checkpoint import model_from_checkpoint
from tgir.training.embed import preprocess_for
from tgir.vocab import Vocabulary

OPSETS = range(18, 24)  # what the dynamo exporter emits and ONNX Runtime 1.2x+ runs
ROUTER_FORMS = ("if", "dense")
FOLD_LIMIT = 1 << 28  # elements: fold constant expressions of any size a model of ours holds


@dataclass(frozen=True)
class OnnxConfig:
    """How to export.

    Attributes:
        tau: AMC gate threshold baked into the graphs (None: the checkpoint's). 0 = dense paper model.
        router: ``"if"``: each expert inside an ONNX ``If`` on "some sample's gate >= tau";
            ``"dense"``: every expert computed, sub-threshold gates zeroed (same numbers, no control
            flow: TensorRT runs ``If`` conditionals about as slowly as both branches).
        opset: ONNX opset (18..23).
        max_batch: Largest batch of the dynamic batch axis.
        opt_batch: The batch TensorRT optimisation profiles tune for (recorded in the contract).
        text_length: Fixed padded text length of the text graph (texts are padded to it).
    """

    tau: float | None = None
    router: str = "if"
    opset: int = 18
    max_batch: int = 64
    opt_batch: int = 1
    text_length: int = 32

    def __post_init__(self) -> None:
        if self.router not in ROUTER_FORMS:
            raise TgirUserError(f"unknown router form {self.router!r}; valid choices: {', '.join(ROUTER_FORMS)}")
        if self.opset not in OPSETS:
            raise TgirUserError(f"opset {self.opset} out of range; valid: {OPSETS.start}..{OPSETS.stop - 1}")
        if self.max_batch < 2 or self.text_length < 1:
            raise TgirUserError("need max_batch >= 2 and text_length >= 1")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise TgirUserError(f"need 1 <= opt batch <= max batch, got {self.opt_batch} and {self.max_batch}")
        if self.tau is not None and not 0 <= self.tau < 1:
            raise TgirUserError(f"tau must be in [0, 1), got {self.tau}")


def configure_router(model: RetrievalModel, cfg: OnnxConfig) -> dict:
    """Apply the export's tau and router form to an AMC model; returns the manifest's router entry."""
    if model.config.family != "amc":
        if cfg.tau is not None:
            raise TgirUserError(f"--tau applies to AMC only; this checkpoint is {model.config.family!r}")
        return {}
    tau = model.config.router.tau if cfg.tau is None else cfg.tau
    router = model.set_router(always_run=cfg.router == "dense", tau=tau, conditional=cfg.router == "if" and tau > 0)
    form = "dense" if tau <= 0 else cfg.router
    return {"form": form, "tau": tau, "experts": list(router.experts), "layers": router.layers}


@contextlib.contextmanager
def quiet_exporter_log():
    """Silence the exporter's registration log ("torchvision is not installed. Skipping
    torchvision::nms", four lines per graph), which says nothing about our models."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _examples(model: RetrievalModel, text_length: int) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs (batch 2, so the batch axis is not specialised to 1)."""
    s = model.config.image_size
    images = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))
    ids = torch.full((2, text_length), 4, dtype=torch.int64)
    lengths = torch.tensor([text_length, 1], dtype=torch.int64)
    with torch.no_grad():
        _, tokens = model.encode_image(images)
        text = tuple(model.encode_text(ids, lengths))
    return {"image_encoder": (images,), "text_encoder": (ids, lengths), "composer": (tokens, *text)}


def _export_graph(module: torch.nn.Module, args: tuple, names: tuple[list[str], list[str]], path: Path,
                  cfg: OnnxConfig) -> None:
    batch = torch.export.Dim("batch", min=1, max=cfg.max_batch)
    with warnings.catch_warnings(), quiet_exporter_log():
        warnings.simplefilter("ignore")  # the exporter's chatter; failures still raise
        program = torch.onnx.export(module.eval(), args, dynamo=True, input_names=names[0], output_names=names[1],
                                    opset_version=cfg.opset, dynamic_shapes=tuple({0: batch} for _ in args),
                                    verbose=False)
    # The exporter's own pass leaves large constant sub-expressions (e.g. the LSTM's gate-reordering
    # slices of its weights) unfolded; fold them all so TensorRT and ORT get plain initialisers.
    onnxscript.optimizer.optimize(program.model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
    program.save(str(path))
    model = onnx.load(str(path))
    changed = drop_noop_int_clips(model) + bind_lstm_lengths(model)
    changed += fold_pads_into_quantized_convs(model) + merge_duplicate_quantizers(model)
    if changed:
        onnx.save(model, str(path))


def _versions() -> dict:
    import onnx
    import onnxscript

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def onnx_from_checkpoint(checkpoint: str | Path, out_dir: str | Path, cfg: OnnxConfig = OnnxConfig(),
                         overwrite: bool = False, progress: Callable[[str], None] | None = None) -> Manifest:
    """Export a checkpoint's three graphs to ONNX and write a bundle directory (see ``onnx_from_model``).

    Returns:
        The written manifest.
    """
    model, ckpt = model_from_checkpoint(checkpoint)
    source = {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": sha256(checkpoint)}
    return onnx_from_model(model, ckpt.vocab, out_dir, cfg, overwrite, progress, source)


def onnx_from_model(model: RetrievalModel, vocab: Vocabulary, out_dir: str | Path, cfg: OnnxConfig = OnnxConfig(),
                    overwrite: bool = False, progress: Callable[[str], None] | None = None,
                    source: dict | None = None, precision: str = "fp32", build: dict | None = None,
                    rewrite: Callable[[str, Path], None] | None = None) -> Manifest:
    """Export a model's three graphs to ONNX and write a bundle directory.

    The bundle is assembled in a temporary folder beside ``out_dir`` and renamed into place, so a
    failed export never leaves a half-written bundle.

    Args:
        source: Facts about where the model came from (checkpoint path and hash) for the manifest.
        precision: What the graphs compute in (``"fp32"``; ``"int8"`` for a Q/DQ model).
        build: Extra build facts for the manifest (e.g. calibration settings).
        rewrite: Called with each graph's name and ONNX file once it is exported, before the
            manifest is written; may rewrite the file in place, keeping its I/O contract (e.g.
            ``tgir.calib.lstm``'s int8 LSTM weights).

    Returns:
        The written manifest.
    """
    router = configure_router(model, cfg)
    with staged_bundle(out_dir, overwrite) as tmp:
        manifest = _write_bundle(model, vocab, cfg, router, tmp, progress,
                                 {"source": source or {}, "precision": precision, "build": build or {}}, rewrite)
    return manifest


def _write_bundle(model: RetrievalModel, vocab: Vocabulary, cfg: OnnxConfig, router: dict, folder: Path,
                  progress: Callable[[str], None] | None, facts: dict,
                  rewrite: Callable[[str, Path], None] | None = None) -> Manifest:
    contract = io_contract(model.config, cfg.max_batch, cfg.text_length, cfg.opt_batch)
    examples = _examples(model, cfg.text_length)
    graphs = contract_to_json(contract)
    for name, module in graph_modules(model).items():
        if progress:
            progress(name)
        spec = contract[name]
        names = ([t.name for t in spec.inputs], [t.name for t in spec.outputs])
        _export_graph(module, examples[name], names, folder / f"{name}.onnx", cfg)
        if rewrite:
            rewrite(name, folder / f"{name}.onnx")
        graphs[name]["file"] = f"{name}.onnx"
    vocab.save(folder / "vocab.json")
    tokenizer = {"vocab_file": "vocab.json", "max_length": cfg.text_length, **{
        k: v for k, v in vocab.to_dict().items() if k in ("rules", "specials", "pad_id")}}
    manifest = Manifest(
        model={"family": model.config.family, "config_digest": model.config.digest(),
               "config": model.config.to_dict(), **facts["source"]},
        graphs=graphs, preprocess=preprocess_for(model).to_dict(), tokenizer=tokenizer,
        precision=facts["precision"], backend="onnxruntime", router=router,
        build={"exporter": "torch.onnx (dynamo)", "opset": cfg.opset, **_versions(), **facts["build"]},
        files=dict.fromkeys([f"{g}.onnx" for g in GRAPHS] + ["vocab.json"], ""))
    manifest.save(folder)
    return manifest
