"""The forks' layer types (pynetbuilder/kinds/forks.py), each as its fork's C++ computes
it: SegNet's and PSPNet's BN, SegNet's unpooling Upsample (and this build's MaxUnPool,
the same loop), PSPNet/DeepLab's Interp, ShuffleNet's ShuffleChannel, Fast R-CNN's
ROIPooling, SENet's Axpy, the MobileNet ports' depthwise convolutions, YOLOv2's
Reorg and the CRNN ports' ContinuationIndicator.  YOLOv2's Region has no emitter (see
:func:`region`).

The forks' own settings are read through the dialect schema
(:func:`pynetbuilder.dialects.schema.dialect_view`).  Where a fork computes indices or
weights in float32 (Interp, ROIPooling) they are computed here in float32 the same way,
so the outputs agree to the last bit or nearly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape, spatial
from pynetbuilder.pytorch.emit_conv import Convolution


def _view(layer: Any) -> Any:
    from pynetbuilder.dialects.schema import dialect_view

    return dialect_view(layer)


def _legacy4(layer: Any, shape: Shape) -> tuple[int, int, int, int]:
    """Caffe's num/channels/height/width of a blob of at most 4 axes."""
    if len(shape) > 4:
        raise EmitError(f"{layer.type} layer {layer.name!r}: takes at most 4 axes, got {shape}")
    n, c, h, w = (tuple(shape) + (1, 1, 1, 1))[:4]
    return n, c, h, w


# ------------------------------------------------------------------------------ BN


class SegNetBN(CaffeLayer):
    """SegNet's BN (alexgkendall/caffe-segnet src/caffe/layers/bn_layer.cpp,
    ``BNLayer::Forward_cpu``): blobs scale and shift, 1 x C x 1 x 1.

    ``bn_mode: INFERENCE``: ``x * scale + shift`` (the statistics folded into the two
    blobs by SegNet's compute_bn_statistics.py).  ``LEARN`` (the default, in every
    phase: the layer does not look at the phase): the batch's statistics, the mean over
    H x W then over N, the variance as ``E(x^2) - E(x)^2``, ``var_eps_`` 1e-9:
    ``(x - mean) / sqrt(var + 1e-9) * scale + shift``."""

    blob_names = ("scale", "shift")
    EPS = 1e-9

    def __init__(self, legacy: tuple[int, int, int, int], learn: bool) -> None:
        super().__init__()
        view = (1, legacy[1], 1, 1)
        self.scale = torch.nn.Parameter(torch.ones(view))
        self.shift = torch.nn.Parameter(torch.zeros(view))
        self.legacy, self.learn = legacy, learn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(self.legacy)
        if self.learn:
            mean = x.mean((2, 3), keepdim=True).mean(0, keepdim=True)
            square = (x * x).mean((2, 3), keepdim=True).mean(0, keepdim=True)
            var = square - mean * mean
            x = (x - mean) / torch.sqrt(var + self.EPS)
        return (x * self.scale + self.shift).reshape(shape)


class PSPNetBN(CaffeLayer):
    """PSPNet's BN (hszhao/PSPNet src/caffe/layers/bn_layer.cpp at c479f4f,
    ``BNLayer::Forward_cpu``; this build's BNParameter): blobs slope, bias, moving mean
    and moving variance, each 1 x C x 1 x 1.

    TEST phase or ``frozen``: the moving statistics.  TRAIN (not frozen): the batch's
    mean and biased variance (of ``x - mean``, over H x W then N), and the moving blobs
    become ``(1 - momentum) * batch + momentum * blob``.  Then ``(x - mean) * (var +
    eps)^-1/2 * slope + bias``."""

    blob_names = ("slope", "bias", "mean", "variance")

    def __init__(self, legacy: tuple[int, int, int, int], eps: float, momentum: float,
                 moving: bool, update: bool) -> None:
        super().__init__()
        view = (1, legacy[1], 1, 1)
        self.slope = torch.nn.Parameter(torch.ones(view))
        self.bias = torch.nn.Parameter(torch.zeros(view))
        self.register_buffer("mean", torch.zeros(view))
        self.register_buffer("variance", torch.ones(view))
        f32 = np.float32
        self.legacy, self.eps = legacy, float(f32(eps))
        self.momentum, self.keep = float(f32(momentum)), float(f32(1) - f32(momentum))
        self.moving, self.update = moving, update

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(self.legacy)
        if self.moving:
            centred = x - self.mean
            var = self.variance
        else:
            mean = x.mean((2, 3), keepdim=True).mean(0, keepdim=True)
            centred = x - mean
            var = (centred * centred).mean((2, 3), keepdim=True).mean(0, keepdim=True)
            if self.update:
                with torch.no_grad():
                    self.mean.mul_(self.momentum).add_(self.keep * mean)
                    self.variance.mul_(self.momentum).add_(self.keep * var)
        y = centred * torch.pow(var + self.eps, -0.5)
        return (y * self.slope + self.bias).reshape(shape)


def bn(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    """SegNet's BN when the layer sets one of SegNet's fields, else PSPNet's (the
    registry's rule draws the same line: :func:`pynetbuilder.kinds.forks.is_segnet_bn`)."""
    from pynetbuilder.kinds.forks import is_segnet_bn

    legacy = _legacy4(layer, bottoms[0])
    p = _view(layer).bn_param
    if is_segnet_bn(layer):
        return SegNetBN(legacy, p.bn_mode == p.LEARN)
    train = phase == "train"
    return PSPNetBN(legacy, p.eps, p.momentum, moving=p.frozen or not train,
                    update=train and not p.frozen)


# ------------------------------------------------------------------------ unpooling


class Unpool(CaffeLayer):
    """Max unpooling with the pooling mask (caffe-segnet upsample_layer.cpp,
    ``UpsampleLayer::Forward_cpu``; this build's maxunpool_layer.cpp runs the same loop):
    the top starts at 0 and, plane by plane, ``top[mask[i]] = bottom[i]`` for i in
    order (``static_cast<int>`` of the mask), so where two inputs name one place the
    later one stays.  An index past the top's plane is Caffe's LOG(FATAL): an index
    error here."""

    def __init__(self, out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.out_hw = out_hw

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        plane = self.out_hw[0] * self.out_hw[1]
        idx = mask.reshape(n, c, -1).to(torch.int64)  # truncates toward 0, as the cast
        order = torch.arange(idx.shape[-1], device=x.device).expand_as(idx)
        # for each top place, the last input index writing it (-1: none)
        last = torch.full((n, c, plane), -1, dtype=torch.int64, device=x.device)
        last = last.scatter_reduce(2, idx, order, "amax", include_self=True)
        values = x.reshape(n, c, -1).gather(2, last.clamp(min=0))
        top = torch.where(last >= 0, values, torch.zeros_like(values))
        return top.reshape(n, c, *self.out_hw)


def segnet_upsample(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str
                    ) -> CaffeLayer:
    """SegNet's Upsample (two bottoms: the values and the pooling mask)."""
    if len(bottoms) != 2 or len(bottoms[0]) != 4:
        raise EmitError(f"Upsample layer {layer.name!r}: SegNet's unpooling takes an "
                        "N,C,H,W input and its pooling mask")
    return Unpool(tuple(tops[0][2:]))


def max_unpool(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    """This build's MaxUnPool (``dst_h`` x ``dst_w``; the loop of SegNet's Upsample)."""
    return segnet_upsample(layer, bottoms, tops, phase)


# --------------------------------------------------------------------------- Interp


def _interp_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray]:
    """Per output index along one axis, as caffe_cpu_interp2 computes them in float32:
    the source index, the step to the next one (0 on the last), and the two weights."""
    f32 = np.float32
    ratio = f32(size_in - 1) / f32(size_out - 1) if size_out > 1 else f32(0)
    pos = (ratio * np.arange(size_out, dtype=f32)).astype(f32)
    index = pos.astype(np.int64)  # int() of a non-negative float
    step = (index < size_in - 1).astype(np.int64)
    far = (pos - index.astype(f32)).astype(f32)
    near = (f32(1) - far).astype(f32)
    return index, step, near, far


class Interp(CaffeLayer):
    """PSPNet / DeepLab-v2's Interp (interp_layer.cpp, ``InterpLayer::Forward_cpu``, and
    src/caffe/util/interp.cpp, ``caffe_cpu_interp2``): the input cropped by ``-pad_beg``
    rows and columns at the start (``pad_beg`` for both axes, as the C++ passes it) to
    ``H + pad_beg + pad_end`` x ``W + pad_beg + pad_end``, then bilinear with the
    corners aligned: source position ``(in - 1) / (out - 1) * i`` in float32, weights
    ``1 - frac`` and ``frac``, ``h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 *
    p11)``; a plain copy when the sizes are equal."""

    def __init__(self, crop: tuple[int, int, int], out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.start, self.h_in, self.w_in = crop
        self.copy = (self.h_in, self.w_in) == tuple(out_hw)
        if not self.copy:
            hi, hs, h0, h1 = _interp_axis(self.h_in, out_hw[0])
            wi, ws, w0, w1 = _interp_axis(self.w_in, out_hw[1])
            for name, value in (("hi", hi), ("hj", hi + hs), ("wi", wi), ("wj", wi + ws)):
                self.register_buffer(name, torch.from_numpy(value), persistent=False)
            for name, value in (("h0", h0[:, None]), ("h1", h1[:, None]), ("w0", w0),
                                ("w1", w1)):
                self.register_buffer(name, torch.from_numpy(value.copy()), persistent=False)

    def forward(self, x: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
        s = self.start
        x = x[:, :, s:s + self.h_in, s:s + self.w_in]
        if self.copy:
            return x.clone()
        top, bottom = x.index_select(2, self.hi), x.index_select(2, self.hj)
        p00, p01 = top.index_select(3, self.wi), top.index_select(3, self.wj)
        p10, p11 = bottom.index_select(3, self.wi), bottom.index_select(3, self.wj)
        return (self.h0 * (self.w0 * p00 + self.w1 * p01)
                + self.h1 * (self.w0 * p10 + self.w1 * p11))


def interp(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = _view(layer).interp_param
    b = bottoms[0]
    if len(b) != 4:
        raise EmitError(f"Interp layer {layer.name!r}: needs an N,C,H,W input, got {b}")
    h_in, w_in = b[2] + p.pad_beg + p.pad_end, b[3] + p.pad_beg + p.pad_end
    return Interp((-p.pad_beg, h_in, w_in), tuple(tops[0][2:]))


# ------------------------------------------------------------------- ShuffleChannel


class ShuffleChannel(CaffeLayer):
    """ShuffleNet's ShuffleChannel (farmingyard/ShuffleNet shuffle_channel_layer.cpp,
    ``Resize_cpu``): channel ``i * C/g + j`` goes to ``j * g + i`` (C as g x C/g,
    transposed)."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = x.reshape(n, self.group, c // self.group, -1).transpose(1, 2)
        return y.reshape(x.shape)


def shuffle_channel(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str
                    ) -> CaffeLayer:
    return ShuffleChannel(_view(layer).shuffle_channel_param.group)


# ----------------------------------------------------------------------- ROIPooling


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's ``round`` (halves away from zero; torch.round rounds them to even), exact:
    the fraction ``|v| - floor(|v|)`` of a float is exact (ONNX has no trunc)."""
    size = v.abs()
    whole = torch.floor(size)
    return torch.sign(v) * (whole + (size - whole >= 0.5).to(v.dtype))


class ROIPooling(CaffeLayer):
    """Fast R-CNN's ROIPooling (rbgirshick/caffe-fast-rcnn roi_pooling_layer.cpp,
    ``ROIPoolingLayer::Forward_cpu``).  A roi ``[batch, x1, y1, x2, y2]``: batch by
    ``int()``, the corners times ``spatial_scale`` (float32) rounded half away from
    zero, size ``max(end - start + 1, 1)``, bin size = size / pooled (float32); bin
    ``ph`` covers ``floor(ph * bin) .. ceil((ph + 1) * bin)`` plus the start, clipped to
    the map; the max over it, or 0 for an empty bin.

    The bins are masks over the map (one per output row and column), so the module has
    no Python control flow that depends on the rois' values."""

    def __init__(self, pooled: tuple[int, int], scale: float, hw: tuple[int, int]) -> None:
        super().__init__()
        self.pooled, self.hw = pooled, hw
        self.register_buffer("scale", torch.tensor(float(np.float32(scale))), persistent=False)
        self.register_buffer("low", torch.tensor(-math.inf), persistent=False)

    def _bins(self, start: torch.Tensor, end: torch.Tensor, pooled: int, size: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, pooled, size) mask of each bin, and (R, pooled) whether it is empty."""
        extent = torch.clamp(end - start + 1, min=1).to(torch.float32)
        bin_size = extent / float(pooled)
        steps = torch.arange(pooled, dtype=torch.float32, device=start.device)
        lo = torch.floor(steps * bin_size[:, None]).to(torch.int64) + start[:, None]
        hi = torch.ceil((steps + 1) * bin_size[:, None]).to(torch.int64) + start[:, None]
        lo, hi = lo.clamp(0, size), hi.clamp(0, size)
        where = torch.arange(size, device=start.device)
        mask = (where >= lo[..., None]) & (where < hi[..., None])
        return mask, hi <= lo

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        rois = rois.reshape(-1, 5)
        corner = _round_half_away(rois[:, 1:] * self.scale).to(torch.int64)
        rows, empty_h = self._bins(corner[:, 1], corner[:, 3], self.pooled[0], self.hw[0])
        cols, empty_w = self._bins(corner[:, 0], corner[:, 2], self.pooled[1], self.hw[1])
        maps = x.index_select(0, rois[:, 0].to(torch.int64))  # R, C, H, W
        low = self.low.to(x.dtype)
        per_col = torch.stack([torch.where(cols[:, j, None, None, :], maps, low).amax(3)
                               for j in range(self.pooled[1])], -1)  # R, C, H, PW
        out = torch.stack([torch.where(rows[:, i, None, :, None], per_col, low).amax(2)
                           for i in range(self.pooled[0])], 2)  # R, C, PH, PW
        empty = empty_h[:, :, None] | empty_w[:, None, :]
        return torch.where(empty[:, None], torch.zeros_like(out), out)


def roi_pooling(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str
                ) -> CaffeLayer:
    p = _view(layer).roi_pooling_param
    if len(bottoms[0]) != 4:
        raise EmitError(f"ROIPooling layer {layer.name!r}: needs an N,C,H,W feature map")
    return ROIPooling((p.pooled_h, p.pooled_w), p.spatial_scale, tuple(bottoms[0][2:]))


# ----------------------------------------------------------------------------- Axpy


class Axpy(CaffeLayer):
    """SENet's Axpy (hujie-frank/SENet src/caffe/layers/axpy_layer.cpp,
    ``AxpyLayer::Forward_cpu``): ``top = a * x + y``, bottoms (a, x, y), one factor of
    ``a`` (N x C) per channel of x."""

    def __init__(self, view: tuple[int, ...]) -> None:
        super().__init__()
        self.view = view

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(y, a.reshape(self.view), x)


def axpy(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    x = bottoms[1]
    return Axpy(tuple(x[:2]) + (1,) * (len(x) - 2))


# ------------------------------------------------------------------------ depthwise


def depthwise(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    """The MobileNet ports' depthwise convolutions: ConvolutionDepthwise (conv_dw_layer.cpp
    of the ShuffleNet/MobileNet ports, ``ConvolutionDepthwiseLayer::Forward_cpu``: one
    k_h x k_w filter per input channel, weights C x 1 x k_h x k_w, bias C, output
    channels C) and yonghenglh6's DepthwiseConvolution (a ConvolutionLayer whose group
    is the input's channels).  Both are a grouped convolution, group = channels, with
    the shape the registry's rule gives."""
    p = layer.convolution_param
    b = bottoms[0]
    if len(b) != 4:
        raise EmitError(f"{layer.type} layer {layer.name!r}: needs an N,C,H,W input, got {b}")
    channels, out = b[1], tops[0][1]
    kernel = spatial(p, "kernel", 0, 2)
    weight = (out, 1, *kernel)
    return Convolution(weight, p.bias_term, spatial(p, "stride", 1, 2),
                       spatial(p, "pad", 0, 2), spatial(p, "dilation", 1, 2), channels, False)


# ---------------------------------------------------------------------------- Reorg


class Reorg(CaffeLayer):
    """YOLOv2's Reorg as the Caffe ports compute it (reorg_layer.hpp, ``reorg_cpu``, a
    copy of darknet's; ``Forward_cpu`` passes ``reverse`` as its ``forward`` flag).

    ``reverse: false`` (the passthrough layer): ``out[b_index] = in[t_index]`` where
    ``b_index`` walks the output with the *input's* dimensions C x H x W and ``t_index``
    reads the input as if it were C/s^2 x sH x sW: darknet's quirk, not the clean
    space-to-depth (channel ``c = off * C/s^2 + c2``, ``off = i * s + j``, takes
    row ``h * s + i``, column ``w * s + j`` of that reading).  ``reverse: true``: the
    inverse mapping written the other way, a depth-to-space of the input."""

    def __init__(self, stride: int, reverse: bool) -> None:
        super().__init__()
        self.stride, self.reverse = stride, reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.stride
        t = c // (s * s)
        if self.reverse:
            y = x.reshape(n, s, s, t, h, w).permute(0, 3, 4, 1, 5, 2)
            return y.reshape(n, t, h * s, w * s)
        y = x.reshape(n, t, h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * s * s, h // s, w // s)


def reorg(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = _view(layer).reorg_param
    if len(bottoms[0]) != 4:
        raise EmitError(f"Reorg layer {layer.name!r}: needs an N,C,H,W input")
    return Reorg(p.stride, p.reverse)


def region(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    """YOLOv2's Region: no emitter.  The ports that read ``region_param`` (classes,
    coords, boxes_of_each_grid, softmax) compute darknet's flatten, a logistic on each
    box's objectness and, when the member ``softmax_`` is set, a softmax over its
    classes; but their ``LayerSetUp`` never sets ``softmax_`` from the prototxt (it is
    left uninitialised) and their GPU kernel assumes 85 values per box, so what the
    layer computes is not fixed by the net; other ports read other settings and have
    two tops.  Nothing documents one computation to reproduce."""
    raise EmitError(f"layer {layer.name!r} of type 'Region' (YOLOv2 ports) has no PyTorch "
                    "emitter: the ports' Region computes a softmax over the classes or not "
                    "depending on a member their code never initialises (and assumes 85 "
                    "values per box on the GPU), so its output is not defined by the "
                    "prototxt; take the net's output before it (the conv layer feeding it)")



# ------------------------------------------------------------------ ContinuationIndicator


class ContinuationIndicator(CaffeLayer):
    """The CRNN ports' ContinuationIndicator (dlunion/CC4.0
    src/caffe/layers/continuation_indicator_layer.cpp, ``Forward_cpu``): a
    ``time_step x batch`` blob, 0 at the first time step and 1 after it (the sequence
    continues), whatever its input holds.  A constant: kept as a buffer."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        indicator = torch.ones(shape)
        indicator[0] = 0
        self.register_buffer("indicator", indicator, persistent=False)

    def forward(self, *bottoms: torch.Tensor) -> torch.Tensor:
        return self.indicator


def continuation_indicator(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str
                           ) -> CaffeLayer:
    return ContinuationIndicator(tops[0])
