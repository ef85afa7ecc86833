"""Convolution, Deconvolution and InnerProduct (weights in Caffe's blob layout), and
Im2col."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape, caffe_axis, param, spatial

_CONV = {1: nnf.conv1d, 2: nnf.conv2d, 3: nnf.conv3d}
_DECONV = {1: nnf.conv_transpose1d, 2: nnf.conv_transpose2d, 3: nnf.conv_transpose3d}


class Convolution(CaffeLayer):
    def __init__(self, weight: Shape, bias: bool, stride, pad, dilation, group: int,
                 transposed: bool) -> None:
        super().__init__()
        fan_in = math.prod(weight[1:]) if not transposed else math.prod(weight[1:]) * group
        self.weight = param(weight, fan_in)
        out = weight[1] * group if transposed else weight[0]
        self.bias = param((out,), fan_in) if bias else None
        self.blob_names = ("weight", "bias") if bias else ("weight",)
        self.stride, self.pad, self.dilation, self.group = stride, pad, dilation, group
        self.transposed = transposed
        nd = len(weight) - 2
        self.fn = (_DECONV if transposed else _CONV)[nd]

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return self.fn(x, self.weight, self.bias, self.stride, self.pad, 0, self.group,
                           self.dilation)
        return self.fn(x, self.weight, self.bias, self.stride, self.pad, self.dilation,
                       self.group)

    def forward(self, *xs: torch.Tensor):
        if len(xs) == 1:
            return self._one(xs[0])
        return tuple(self._one(x) for x in xs)


def _geometry(layer: Any, bottom: Shape) -> tuple:
    p = layer.convolution_param
    nd = len(bottom) - 2
    if nd not in _CONV:
        raise EmitError(f"{layer.type} layer {layer.name!r}: {nd}-d spatial input is not supported")
    if p.axis != 1:
        raise EmitError(f"{layer.type} layer {layer.name!r}: convolution_param.axis {p.axis} "
                        "is not supported (channels must be axis 1)")
    kernel = spatial(p, "kernel", 0, nd)
    return (nd, kernel, spatial(p, "stride", 1, nd), spatial(p, "pad", 0, nd),
            spatial(p, "dilation", 1, nd))


def convolution(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.convolution_param
    nd, kernel, stride, pad, dilation = _geometry(layer, bottoms[0])
    weight = (p.num_output, bottoms[0][1] // p.group, *kernel)
    return Convolution(weight, p.bias_term, stride, pad, dilation, p.group, False)


def deconvolution(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.convolution_param
    nd, kernel, stride, pad, dilation = _geometry(layer, bottoms[0])
    weight = (bottoms[0][1], p.num_output // p.group, *kernel)
    return Convolution(weight, p.bias_term, stride, pad, dilation, p.group, True)


class InnerProduct(CaffeLayer):
    """``ndim``: the input's number of axes, known when the net is analysed (so the
    forward holds no control flow on the tensor: torch.fx traces it)."""

    def __init__(self, axis: int, k: int, n: int, bias: bool, transpose: bool,
                 ndim: int) -> None:
        super().__init__()
        self.weight = param((k, n) if transpose else (n, k), k)
        self.bias = param((n,), k) if bias else None
        self.blob_names = ("weight", "bias") if bias else ("weight",)
        self.axis, self.transpose = axis, transpose
        self.flatten = axis < ndim - 1
        self.unsqueeze = axis == ndim  # K = 1 past the last axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            x = x.flatten(self.axis)
        if self.unsqueeze:
            x = x.unsqueeze(-1)
        if self.transpose:
            y = x @ self.weight
            return y + self.bias if self.bias is not None else y
        return nnf.linear(x, self.weight, self.bias)


def inner_product(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.inner_product_param
    b = bottoms[0]
    axis = caffe_axis(p.axis, len(b))
    k = math.prod(b[axis:])
    return InnerProduct(axis, k, p.num_output, p.bias_term, p.transpose, len(b))


class Im2col(CaffeLayer):
    """``im2col_layer.cpp``: each window of the zero-padded input as a column, channel
    by channel and kernel position by position (``c * prod(kernel) + k``), over the
    output's spatial grid; the axes before ``convolution_param.axis`` are items.  Its
    gradient adds each column back where it came from (``col2im``), as autograd of the
    pad, window and slice views does."""

    def __init__(self, items: Shape, kernel: Shape, stride: Shape, pad: Shape,
                 dilation: Shape, top: Shape) -> None:
        super().__init__()
        self.items, self.kernel, self.stride = items, kernel, stride
        self.dilation, self.top = dilation, top
        self.pads = [p for pd in reversed(pad) for p in (pd, pd)]  # last axis first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel)
        y = x.reshape(self.items)  # items x channels x spatial
        if any(self.pads):
            y = nnf.pad(y, self.pads)
        for i, (k, s, d) in enumerate(zip(self.kernel, self.stride, self.dilation)):
            y = y.unfold(2 + i, d * (k - 1) + 1, s)  # each window's extent, last
        y = y[(..., *(slice(None, None, d) for d in self.dilation))]
        # items x channels x out... x kernel...  ->  items x channels x kernel... x out...
        order = (0, 1, *range(2 + nd, 2 + 2 * nd), *range(2, 2 + nd))
        return y.permute(order).reshape(self.top)


def im2col(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.convolution_param
    b = bottoms[0]
    axis = caffe_axis(p.axis, len(b))
    nd = len(b) - axis - 1
    items = (math.prod(b[:axis]), *b[axis:])
    return Im2col(items, spatial(p, "kernel", 0, nd), spatial(p, "stride", 1, nd),
                  spatial(p, "pad", 0, nd), spatial(p, "dilation", 1, nd), tuple(tops[0]))
