"""This build's resampling extras (brocolli-caffe 9.0.2, src/caffe/layers): PixelShuffle,
Resize and BilinearInterpolate.  (Unsqueeze, a copy into a new shape, is
:func:`pynetbuilder.pytorch.emit_shape.reshape`.)

Resize and BilinearInterpolate compute their sampling positions and weights from the
sizes alone, in float32 as the C++ does; they are computed here once, the same way,
and kept as constant buffers, so the module gathers the same four neighbours and adds
the same products in the same order: the outputs agree with Caffe's to the last bit.
Caffe's Backward of PixelShuffle, BilinearInterpolate and Unsqueeze is empty (it
leaves the input's gradient untouched): the registry marks them NO_BACKWARD (verify
compares no gradient through them), and the module keeps autograd's gradient of the
forward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape

F32 = np.float32


def _legacy4(layer: Any, shape: Shape) -> tuple[int, int, int, int]:
    """Caffe's num/channels/height/width of a blob (``Blob::LegacyShape``: at most 4
    axes, 1 past its last), the 4-axis view Resize and BilinearInterpolate read."""
    if len(shape) > 4:
        raise EmitError(f"{layer.type} layer {layer.name!r}: takes at most 4 axes, got "
                        f"{tuple(shape)}")
    n, c, h, w = (tuple(shape) + (1, 1, 1, 1))[:4]
    return n, c, h, w


def _buffer(module: torch.nn.Module, name: str, value: np.ndarray) -> None:
    module.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value)),
                           persistent=False)


# ---------------------------------------------------------------------- PixelShuffle


class PixelShuffle(CaffeLayer):
    """``PixelShuffleLayer::Forward_cpu``: top channel ``p``, row ``i r + sh``, column
    ``j r + sw`` is bottom channel ``p r^2 + sh r + sw`` at ``(i, j)`` (torch's
    pixel_shuffle order).  Channels past ``(C / r^2) r^2`` are never read (Caffe checks
    only that r divides C)."""

    def __init__(self, factor: int, channels: int) -> None:
        super().__init__()
        self.factor, self.channels = factor, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nnf.pixel_shuffle(x[:, : self.channels], self.factor)


def pixel_shuffle(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str
                  ) -> CaffeLayer:
    if len(bottoms[0]) != 4:  # Forward_cpu reads shape(2), shape(3) and offset(n, c, h, w)
        raise EmitError(f"PixelShuffle layer {layer.name!r}: needs a 4-axis N,C,H,W input "
                        f"(Caffe's forward reads four), got {tuple(bottoms[0])}")
    r = layer.pixelshuffle_param.upscale_factor
    return PixelShuffle(r, tops[0][1] * r * r)


# ---------------------------------------------------------------------------- Resize


def resize_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One axis of ``BiLinearResizeMat_cpu`` (src/caffe/util/util_img.cpp), float32:
    position ``f = i * (src / dst)``, lower neighbour ``floor(f)``, weights
    ``|1 - frac|`` and ``|frac|``, and whether the upper neighbour is inside."""
    scale = F32(src) / F32(dst)
    f = np.arange(dst, dtype=F32) * scale
    low = np.floor(f)
    frac = f - low
    return low.astype(np.int64), np.abs(F32(1) - frac), np.abs(frac), low + 1 < src


class Resize(CaffeLayer):
    """``ResizeLayer::Forward_cpu`` (resize_layer.cpp, ``ResizeBlob_cpu``): each output
    is ``w1 x[p] + w2 x[p + 1] + w3 x[p + W] + w4 x[p + W + 1]`` summed in that order,
    a neighbour past the last row or column left out (its weight is not given to the
    others: the last rows and columns of an enlargement fade towards 0).  Its Backward
    adds the same weights' products into the input's gradient (autograd's, here)."""

    def __init__(self, src: tuple[int, int, int, int], dst: tuple[int, int]) -> None:
        super().__init__()
        self.src, self.out = src, dst
        width = src[3]
        h0, wh0, wh1, h_in = resize_taps(src[2], dst[0])
        w0, ww0, ww1, w_in = resize_taps(width, dst[1])
        base = h0[:, None] * width + w0[None, :]
        right, below = w_in[None, :], h_in[:, None]
        corner = right & below
        locs = [base, np.where(right, base + 1, base), np.where(below, base + width, base),
                np.where(corner, base + width + 1, base)]
        zero = F32(0)
        weights = [wh0[:, None] * ww0[None, :],
                   np.where(right, wh0[:, None] * ww1[None, :], zero),
                   np.where(below, wh1[:, None] * ww0[None, :], zero),
                   np.where(corner, wh1[:, None] * ww1[None, :], zero)]
        _buffer(self, "locs", np.stack(locs).reshape(-1))
        _buffer(self, "weights", np.stack(weights).astype(F32).reshape(4, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = self.src[0], self.src[1]
        taps = x.reshape(n, c, -1).index_select(2, self.locs).reshape(n, c, 4, -1)
        w = self.weights.to(x.dtype)
        y = w[0] * taps[:, :, 0]
        for k in range(1, 4):
            y = y + w[k] * taps[:, :, k]
        return y.reshape(n, c, *self.out)


def resize(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Resize(_legacy4(layer, bottoms[0]), (tops[0][2], tops[0][3]))


# --------------------------------------------------------------- BilinearInterpolate


def bilinear_axis(src: int, dst: int, align_corners: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One axis of ``BilinearInterpolateLayer::Forward_cpu``: the source position
    (``src / dst * (i + 0.5) - 0.5``, its product and difference in double, stored as
    float; aligned, ``(src - 1) / (dst - 1) * i`` in float), clipped to ``[0, src - 1]``;
    neighbours ``lo = floor`` clipped to ``[0, src - 2]`` and ``lo + 1``; weights
    ``hi - pos`` and ``pos - lo`` (float).  For ``src`` 1, ``lo`` is -1 with weight 0
    (Caffe reads, and multiplies by 0, the value before the first row or column, outside
    the image): index 0 is read instead."""
    i = np.arange(dst, dtype=F32)
    if align_corners:
        pos = F32(src - 1) / F32(dst - 1) * i
    else:
        ratio = np.float64(F32(src) / F32(dst))
        pos = (ratio * (i.astype(np.float64) + 0.5) - 0.5).astype(F32)
    pos = np.where(pos > F32(src - 1), F32(src - 1), pos)
    pos = np.where(pos < 0, F32(0), pos).astype(F32)
    lo = np.minimum(np.maximum(np.floor(pos).astype(np.int64), 0), src - 2)
    hi = lo + 1
    return np.maximum(lo, 0), hi, hi.astype(F32) - pos, pos - lo.astype(F32)


class BilinearInterpolate(CaffeLayer):
    """``BilinearInterpolateLayer::Forward_cpu`` (bilinear_interpolate_layer.cpp):
    ``r0 = a q00 + b q01``, ``r1 = a q10 + b q11``, ``top = c r0 + d r1`` with the
    weights of :func:`bilinear_axis` (a, b along the width, c, d along the height)."""

    def __init__(self, src: tuple[int, int, int, int], dst: tuple[int, int],
                 align_corners: bool) -> None:
        super().__init__()
        self.src = src
        for axis, s, d in (("h", src[2], dst[0]), ("w", src[3], dst[1])):
            lo, hi, near, far = bilinear_axis(s, d, align_corners)
            _buffer(self, f"{axis}_lo", lo)
            _buffer(self, f"{axis}_hi", hi)
            shape = (-1, 1) if axis == "h" else (1, -1)
            _buffer(self, f"{axis}_near", near.reshape(shape))
            _buffer(self, f"{axis}_far", far.reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(self.src)
        top, bottom = x.index_select(2, self.h_lo), x.index_select(2, self.h_hi)
        a, b = self.w_near.to(x.dtype), self.w_far.to(x.dtype)
        r0 = a * top.index_select(3, self.w_lo) + b * top.index_select(3, self.w_hi)
        r1 = a * bottom.index_select(3, self.w_lo) + b * bottom.index_select(3, self.w_hi)
        return self.h_near.to(x.dtype) * r0 + self.h_far.to(x.dtype) * r1


def bilinear_interpolate(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str
                         ) -> CaffeLayer:
    dst = (tops[0][2], tops[0][3])
    align = layer.bilinear_interpolate_param.align_corners
    if align and 1 in dst:
        raise EmitError(f"BilinearInterpolate layer {layer.name!r}: align_corners with an "
                        f"output of size {dst[0]} x {dst[1]} divides by zero in Caffe "
                        "((src - 1) / (dst - 1)): its output is NaN")
    return BilinearInterpolate(_legacy4(layer, bottoms[0]), dst, align)
