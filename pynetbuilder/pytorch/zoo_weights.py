"""State dicts of well-known PyTorch implementations <-> our modules' Caffe blobs.

A small explicit table per family says which of their tensors is which of our
blobs (checked shape by shape):

- ``torchvision_resnet``: torchvision's ``resnet18`` ... ``resnet152`` <->
  ``resnet_imagenet`` (``stride_in_3x3 true`` for the bottleneck nets, torchvision's
  "v1.5", so the two compute the same function);
- ``torchvision_vgg``: ``vgg16``, ``vgg19``, ``alexnet`` <-> ``vgg16``, ``vgg19``,
  ``alexnet`` (convolutions in order, then the fully connected layers);
- ``torchvision_squeezenet``: ``squeezenet1_0`` / ``1_1`` <-> ``squeezenet``;
- ``timm_mobilenetv1``: timm's ``mobilenetv1_100`` <-> ``mobilenet`` (same
  parameters; timm's activation is ReLU6, ours ReLU, so the functions differ);
- ``timm_tresnet``: timm's ``tresnet_m`` / ``_l`` / ``_xl`` <-> ``tresnet`` (the SE
  block's 1x1 convolutions are our InnerProducts: same numbers, another shape).

A BatchNorm of theirs (weight, bias, running mean, running variance) is our
BatchNorm (mean, variance, scale factor 1) plus the Scale after it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from pynetbuilder.errors import UsageError

LAYOUTS = ("torchvision_resnet", "torchvision_vgg", "torchvision_squeezenet",
           "timm_mobilenetv1", "timm_tresnet")


class StateDictError(UsageError):
    """A state dict that does not fit (one line: the missing, extra or misshapen keys)."""


class Unit(NamedTuple):
    ours: str  # our layer: a Convolution/InnerProduct, or a BatchNorm (its Scale follows)
    theirs: str  # their module prefix
    kind: str  # "weight" (weight and bias if either has one), "fc1x1" (their 1x1 conv) or "bn"


def detect(keys: Any) -> str | None:
    """Which layout a state dict has, from its keys (None: not one we know)."""
    keys = set(keys)
    if "conv1.weight" in keys and any(k.startswith("layer1.0.") for k in keys):
        return "torchvision_resnet"
    if any(re.fullmatch(r"features\.\d+\.squeeze\.weight", k) for k in keys):
        return "torchvision_squeezenet"
    if "features.0.weight" in keys and any(k.startswith("classifier.") for k in keys):
        return "torchvision_vgg"
    if "conv_stem.weight" in keys and any(k.startswith("blocks.0.0.conv_dw") for k in keys):
        return "timm_mobilenetv1"
    if "body.conv1.conv.weight" in keys and "head.fc.weight" in keys:
        return "timm_tresnet"
    return None


def _indices(keys: Any, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.fullmatch(pattern, k))})


def units(layout: str, module: Any, keys: Any) -> list[Unit]:
    """The table for ``layout`` on ``module`` (whose layer names it reads) and ``keys``."""
    layers = module.layer_modules
    kinds = {name: type(m).__name__ for name, m in layers.items()}
    out: list[Unit] = []

    def conv_bn(ours: str, theirs: str, bn: str) -> None:
        out.append(Unit(ours, theirs, "weight"))
        if f"{ours}_bn" in layers:
            out.append(Unit(f"{ours}_bn", bn, "bn"))

    if layout == "torchvision_resnet":
        conv_bn("conv1", "conv1", "bn1")
        for name in layers:
            m = re.fullmatch(r"stage(\d+)_block(\d+)_branch(1|2a|2b|2c)", name)
            if not m:
                continue
            prefix = f"layer{m.group(1)}.{int(m.group(2)) - 1}"
            if m.group(3) == "1":
                conv_bn(name, f"{prefix}.downsample.0", f"{prefix}.downsample.1")
            else:
                i = "abc".index(m.group(3)[1]) + 1
                conv_bn(name, f"{prefix}.conv{i}", f"{prefix}.bn{i}")
        out.append(Unit("fc_classifier", "fc", "weight"))
    elif layout == "torchvision_vgg":
        convs = [n for n, k in kinds.items() if k == "Convolution"]
        fcs = [n for n, k in kinds.items() if k == "InnerProduct"]
        theirs_c = _indices(keys, r"features\.(\d+)\.weight")
        theirs_f = _indices(keys, r"classifier\.(\d+)\.weight")
        if len(convs) != len(theirs_c) or len(fcs) != len(theirs_f):
            raise StateDictError(
                f"the state dict has {len(theirs_c)} convolutions and {len(theirs_f)} linear "
                f"layers, net {module.net_name!r} {len(convs)} and {len(fcs)}")
        out += [Unit(o, f"features.{t}", "weight") for o, t in zip(convs, theirs_c)]
        out += [Unit(o, f"classifier.{t}", "weight") for o, t in zip(fcs, theirs_f)]
    elif layout == "torchvision_squeezenet":
        out.append(Unit("conv1", "features.0", "weight"))
        fires = _indices(keys, r"features\.(\d+)\.squeeze\.weight")
        for k, t in enumerate(fires, start=2):
            for ours, theirs in (("squeeze1x1", "squeeze"), ("expand1x1", "expand1x1"),
                                 ("expand3x3", "expand3x3")):
                out.append(Unit(f"fire{k}_{ours}", f"features.{t}.{theirs}", "weight"))
        out.append(Unit("conv10", "classifier.1", "weight"))
    elif layout == "timm_mobilenetv1":
        conv_bn("conv1", "conv_stem", "bn1")
        blocks = [n[:-3] for n in layers if re.fullmatch(r"stage\d+_block\d+_dw", n)]
        theirs = sorted({tuple(map(int, m.groups())) for k in keys
                         if (m := re.fullmatch(r"blocks\.(\d+)\.(\d+)\.conv_dw\.weight", k))})
        if len(blocks) != len(theirs):
            raise StateDictError(f"the state dict has {len(theirs)} depthwise blocks, net "
                                 f"{module.net_name!r} {len(blocks)}")
        for ours, (i, j) in zip(blocks, theirs):
            conv_bn(f"{ours}_dw", f"blocks.{i}.{j}.conv_dw", f"blocks.{i}.{j}.bn1")
            conv_bn(f"{ours}_pw", f"blocks.{i}.{j}.conv_pw", f"blocks.{i}.{j}.bn2")
        out.append(Unit("fc", "classifier", "weight"))
    elif layout == "timm_tresnet":
        conv_bn("conv1", "body.conv1.conv", "body.conv1.bn")
        for name in layers:
            m = re.fullmatch(r"stage(\d+)_block(\d+)_(conv\d|down|se_fc\d)", name)
            if not m:
                continue
            prefix = f"body.layer{m.group(1)}.{int(m.group(2)) - 1}"
            part = m.group(3)
            if part.startswith("se_"):
                out.append(Unit(name, f"{prefix}.se.{part[3:]}", "fc1x1"))
            else:
                inner = f"{prefix}.{part}" if part != "down" else f"{prefix}.downsample.1"
                conv_bn(name, f"{inner}.conv", f"{inner}.bn")
        out.append(Unit("fc", "head.fc", "weight"))
    else:
        raise StateDictError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    missing = [u.ours for u in out if u.ours not in layers]
    if missing:
        raise StateDictError(f"net {module.net_name!r} has no layer {missing[0]!r}, which the "
                             f"{layout} table needs (is it the matching family and depth?)")
    return out


def _scale_of(module: Any, bn_layer: str) -> Any:
    return module.layer_modules[bn_layer[: -len("_bn")] + "_scale"]


def load_state_dict(module: Any, state: Mapping[str, torch.Tensor], layout: str) -> None:
    """Their state dict into our module: every key used, every blob filled, all checked
    before anything is copied."""
    table = units(layout, module, state.keys())
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    used: set[str] = set()
    problems: list[str] = []

    def take(ours: torch.Tensor | None, key: str, transform=None) -> None:
        if key not in state:
            problems.append(f"missing key {key!r}")
            return
        used.add(key)
        value = state[key].detach().to(torch.float32)
        if transform is not None:
            value = transform(value)
        if ours is None or tuple(ours.shape) != tuple(value.shape):
            problems.append(f"{key!r} is {tuple(value.shape)}, ours "
                            f"{None if ours is None else tuple(ours.shape)}")
            return
        pairs.append((ours, value))

    for unit in table:
        layer = module.layer_modules[unit.ours]
        if unit.kind == "fc1x1":
            take(layer.weight, f"{unit.theirs}.weight", lambda v: v.reshape(v.shape[0], -1))
            take(layer.bias, f"{unit.theirs}.bias")
        elif unit.kind == "weight":
            take(layer.weight, f"{unit.theirs}.weight")
            bias_key = f"{unit.theirs}.bias"
            if getattr(layer, "bias", None) is not None or bias_key in state:
                take(getattr(layer, "bias", None), bias_key)
        else:
            scale = _scale_of(module, unit.ours)
            take(layer.mean, f"{unit.theirs}.running_mean")
            take(layer.variance, f"{unit.theirs}.running_var")
            take(scale.weight, f"{unit.theirs}.weight")
            take(scale.bias, f"{unit.theirs}.bias")
            used.add(f"{unit.theirs}.num_batches_tracked")
            pairs.append((layer.scale_factor, torch.ones(1)))
    extra = sorted(k for k in state if k not in used)
    if extra:
        problems.append(f"extra keys {', '.join(map(repr, extra[:3]))}"
                        + (f" (and {len(extra) - 3} more)" if len(extra) > 3 else ""))
    if problems:
        raise StateDictError(f"the {layout} state dict does not fit net {module.net_name!r}: "
                             + "; ".join(problems[:5]))
    with torch.no_grad():
        for ours, value in pairs:
            ours.copy_(value)


def state_dict(module: Any, layout: str, keys: Any = None) -> dict[str, torch.Tensor]:
    """Our module's blobs as their state dict (``keys``: their keys, for the layouts
    whose table reads numbering from them: VGG/AlexNet, SqueezeNet, MobileNet)."""
    table = units(layout, module, keys if keys is not None else _default_keys(layout, module))
    out: dict[str, torch.Tensor] = {}
    for unit in table:
        layer = module.layer_modules[unit.ours]
        if unit.kind == "fc1x1":
            out[f"{unit.theirs}.weight"] = layer.weight.detach().clone()[:, :, None, None]
            out[f"{unit.theirs}.bias"] = layer.bias.detach().clone()
        elif unit.kind == "weight":
            out[f"{unit.theirs}.weight"] = layer.weight.detach().clone()
            if getattr(layer, "bias", None) is not None:
                out[f"{unit.theirs}.bias"] = layer.bias.detach().clone()
        else:
            scale = _scale_of(module, unit.ours)
            s = layer.scale_factor.detach()
            inv = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
            out[f"{unit.theirs}.weight"] = scale.weight.detach().clone()
            out[f"{unit.theirs}.bias"] = scale.bias.detach().clone()
            out[f"{unit.theirs}.running_mean"] = layer.mean.detach() * inv
            out[f"{unit.theirs}.running_var"] = layer.variance.detach() * inv
            out[f"{unit.theirs}.num_batches_tracked"] = torch.tensor(0)
    return out


def _default_keys(layout: str, module: Any) -> list[str]:
    """Their numbering when no keys are given: torchvision's VGG-16/19, AlexNet and
    SqueezeNet sequences and timm's MobileNet v1 stages, rebuilt from our layer list."""
    layers = module.layer_modules
    if layout in ("torchvision_resnet", "timm_tresnet"):
        return ["layer1.0.x"]
    if layout == "torchvision_vgg":
        convs = [n for n, m in layers.items() if type(m).__name__ == "Convolution"]
        if len(convs) == 5:  # AlexNet: features 0, 3, 6, 8, 10; classifier 1, 4, 6
            return ([f"features.{i}.weight" for i in (0, 3, 6, 8, 10)]
                    + [f"classifier.{i}.weight" for i in (1, 4, 6)])
        keys, i = [], 0
        for name in convs:  # conv, ReLU, and a max pool after each stage's last conv
            if keys and name.endswith("_conv1"):
                i += 1
            keys.append(f"features.{i}.weight")
            i += 2
        return keys + [f"classifier.{i}.weight" for i in (0, 3, 6)]
    if layout == "torchvision_squeezenet":
        v10 = layers["conv1"].weight.shape[-1] == 7
        fires = (3, 4, 5, 7, 8, 9, 10, 12) if v10 else (3, 4, 6, 7, 9, 10, 11, 12)
        return [f"features.{i}.squeeze.weight" for i in fires]
    per_stage = [int(m.group(1)) for n in layers
                 if (m := re.fullmatch(r"stage(\d+)_block\d+_dw", n))]
    keys, count = [], {}
    for s in per_stage:
        count[s] = count.get(s, 0) + 1
        keys.append(f"blocks.{s - 1}.{count[s] - 1}.conv_dw.weight")
    return keys
