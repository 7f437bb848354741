"""Fold each BatchNorm into the convolution that feeds it, before quantization.

A Q/DQ graph keeps ``DequantizeLinear -> Conv -> BatchNormalization -> Q``: ONNX Runtime and
TensorRT fuse a quantized Conv only when its output goes straight to the next QuantizeLinear, and
cannot fold a BatchNorm into weights that come out of a DequantizeLinear. Left unfolded, every such
Conv runs in fp32 on dequantized weights with extra Q/DQ work around it (measured: the 64-px
EfficientNet-Lite0 image encoder ran 5x slower in INT8 than in FP32 on ORT CPU). Folding first is
the standard post-training-quantization step; it is exact for BatchNorm in eval mode, and the weight
scales are then observed on the folded weights, which is what the runtimes compute with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def conv_bn_pairs(model: nn.Module, run: Callable[[], None]) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` for every ``nn.BatchNorm2d`` whose input is the output of an
    ``nn.Conv2d``, found by running the model once (``run``). A BatchNorm fed by anything else, or a
    conv feeding two BatchNorms, is left alone."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id(conv output) -> conv name (tensor kept alive)
    found: dict[str, str] = {}
    readers: dict[str, set[str]] = {}  # conv name -> the BatchNorms that read its output
    hooks = []

    def after_conv(name: str):
        return lambda module, args, out: produced.__setitem__(id(out), (name, out))

    def before_bn(name: str):
        def hook(module, args) -> None:
            conv = produced.get(id(args[0]))
            if conv is not None and conv[1] is args[0]:
                found[name] = conv[0]
                readers.setdefault(conv[0], set()).add(name)
        return hook

    for name, module in model.named_modules():
        if type(module) is nn.Conv2d:
            hooks.append(module.register_forward_hook(after_conv(name)))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_pre_hook(before_bn(name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return sorted((conv, bn) for bn, conv in found.items() if len(readers[conv]) == 1)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn``'s running statistics and affine transform into ``conv``'s weight and bias, in place."""
    scale = torch.rsqrt(bn.running_var + bn.eps)  # [C]
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)  # [C]
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = conv.bias * scale + shift if conv.bias is not None else shift
    conv.bias = nn.Parameter(bias.clone())


def fold_batchnorms(model: nn.Module, run: Callable[[], None]) -> list[str]:
    """Fold every BatchNorm that directly follows a conv (see ``conv_bn_pairs``) and replace it with
    ``nn.Identity``; the model must be in eval mode. Returns the folded BatchNorms' names."""
    if model.training:
        raise ValueError("fold BatchNorms of a model in eval mode (training mode uses batch statistics)")
    modules = dict(model.named_modules())
    pairs = conv_bn_pairs(model, run)
    for conv_name, bn_name in pairs:
        fold_conv_bn(modules[conv_name], modules[bn_name])
        parent_name, _, child = bn_name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, nn.Identity())
    return [bn for _, bn in pairs]
