"""Element-wise layers: ReLU and its relatives, PReLU, ELU, Sigmoid, TanH, AbsVal,
Power, Exp, Log, BNLL, Threshold, ReLU6, HardSwish, HardSigmoid, Dropout."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from pynetbuilder.pytorch.base import CaffeLayer, Shape


class Elementwise(CaffeLayer):
    """A parameter-free element-wise function (``fn`` a plain function of one tensor)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _Leaky:
    def __init__(self, slope: float) -> None:
        self.slope = slope

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return nnf.leaky_relu(x, self.slope)


class _Affine:
    """``fn(scale * x + shift)``, skipping what is the identity, then ``* outer``."""

    def __init__(self, fn: Callable, scale: float, shift: float, outer: float = 1.0) -> None:
        self.fn, self.scale, self.shift, self.outer = fn, scale, shift, outer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = x * self.scale
        if self.shift != 0.0:
            x = x + self.shift
        y = self.fn(x)
        return y * self.outer if self.outer != 1.0 else y


class _Pow:
    def __init__(self, power: float) -> None:
        self.power = power

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.power == 1.0 else torch.pow(x, self.power)


class _Const:
    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


class _Clamp:
    """ReLU6: ``min(max(x, 0) + slope * min(x, 0), threshold)``."""

    def __init__(self, slope: float, threshold: float) -> None:
        self.slope, self.threshold = slope, threshold

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = nnf.leaky_relu(x, self.slope) if self.slope else nnf.relu(x)
        return torch.clamp(y, max=self.threshold)


class _Threshold:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.t).to(x.dtype)


class _HardSigmoid:
    def __init__(self, alpha: float, beta: float) -> None:
        self.alpha, self.beta = alpha, beta

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.alpha + self.beta, 0.0, 1.0)


def _bnll(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` as ``max(x, 0) + log1p(exp(-|x|))`` (no overflow either side)."""
    return nnf.relu(x) + torch.log1p(torch.exp(-torch.abs(x)))


def _hardswish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


def relu(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    slope = layer.relu_param.negative_slope
    return Elementwise(_Leaky(slope) if slope else nnf.relu)


def relu6(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.relu6_param
    return Elementwise(_Clamp(p.negative_slope, p.threshold))


def sigmoid(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Elementwise(torch.sigmoid)


def tanh(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Elementwise(torch.tanh)


def absval(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Elementwise(torch.abs)


def bnll(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Elementwise(_bnll)


def hardswish(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Elementwise(_hardswish)


def hardsigmoid(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.hardsigmoid_param
    return Elementwise(_HardSigmoid(p.alpha, p.beta))


def elu(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    alpha = layer.elu_param.alpha
    return Elementwise(lambda x: nnf.elu(x, alpha))


def threshold(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Elementwise(_Threshold(layer.threshold_param.threshold))


def power(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.power_param
    if p.scale * p.power == 0:  # Caffe: a constant (1 for power 0, shift^power else)
        return Elementwise(_Const(1.0 if p.power == 0 else math.pow(p.shift, p.power)))
    return Elementwise(_Affine(_Pow(p.power), p.scale, p.shift))


def exp(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.exp_param
    log_base = 1.0 if p.base == -1 else math.log(p.base)
    inner = log_base * p.scale
    outer = 1.0 if p.shift == 0 else (math.exp(p.shift) if p.base == -1
                                       else math.pow(p.base, p.shift))
    return Elementwise(_Affine(torch.exp, inner, 0.0, outer))


def log(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.log_param
    base_scale = 1.0 if p.base == -1 else 1.0 / math.log(p.base)
    return Elementwise(_Affine(torch.log, p.scale, p.shift, base_scale))


class PReLU(CaffeLayer):
    """``max(x, 0) + a * min(x, 0)``, ``a`` per channel (axis 1) or one shared value."""

    blob_names = ("weight",)

    def __init__(self, shape: Shape, view: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full(shape, 0.25))
        self.view = view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nnf.relu(x) + self.weight.reshape(self.view) * torch.clamp(x, max=0.0)


def prelu(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    b = bottoms[0]
    if layer.prelu_param.channel_shared:
        return PReLU((), (1,) * len(b))
    return PReLU((b[1],), (1, b[1]) + (1,) * (len(b) - 2))


class Dropout(CaffeLayer):
    """TRAIN: ``x * mask / (1 - ratio)``, mask ~ Bernoulli(1 - ratio); TEST: identity.

    Fast R-CNN's ``scale_train: false`` (rbgirshick/caffe-fast-rcnn dropout_layer.cpp,
    ``DropoutLayer::Forward_cpu``) moves the scaling to TEST: TRAIN ``x * mask``, TEST
    ``x * (1 / scale_)`` with ``scale_ = 1 / (1 - ratio)`` stored as a float.

    ``noise``: when set (a callable ``(layer module, shape) -> mask``), the mask comes
    from it instead of PyTorch's generator (verification replays Caffe's draws)."""

    def __init__(self, ratio: float, train: bool, scale_train: bool = True) -> None:
        super().__init__()
        self.ratio, self.train_phase = ratio, train
        self.scale = 1.0 / (1.0 - ratio) if ratio < 1.0 else 0.0
        self.scale_train = scale_train
        # Caffe's float scale_, and 1. / scale_ rounded to float by caffe_scal<float>
        self.test_factor = float(np.float32(1.0 / float(np.float32(self.scale)))) \
            if self.scale else 0.0
        self.noise: Callable | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.train_phase:
            return x if self.scale_train else x * self.test_factor
        if self.noise is not None:
            mask = self.noise(self, tuple(x.shape)).to(x.dtype)
            return x * (mask * self.scale) if self.scale_train else x * mask
        if not self.scale_train:
            return x * torch.bernoulli(torch.full_like(x, 1.0 - self.ratio))
        return nnf.dropout(x, self.ratio, True)


def dropout(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    from pynetbuilder.dialects.schema import dialect_view

    scale_train = dialect_view(layer).dropout_param.scale_train  # Fast R-CNN's field
    return Dropout(layer.dropout_param.dropout_ratio, phase == "train", scale_train)
