"""Layers that combine, split, move or copy blobs: Eltwise, Concat, Slice, Split,
Flatten, Reshape, Crop, Permute, Upsample, Silence, Tile, and ArgMax, Softmax,
Reduction, PriorBox, Parameter, BatchReindex."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape, caffe_axis, param


class Eltwise(CaffeLayer):
    """SUM (``sum coeff_i * x_i``), PROD or MAX of the bottoms."""

    def __init__(self, op: str, coeffs: tuple[float, ...]) -> None:
        super().__init__()
        self.op, self.coeffs = op, coeffs
        self.plain = all(c == 1.0 for c in coeffs)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.op == "PROD":
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y = y * x
            return y
        if self.op == "MAX":
            y = torch.maximum(xs[0], xs[1])
            for x in xs[2:]:
                y = torch.maximum(y, x)
            return y
        if self.plain:
            y = xs[0] + xs[1]
            for x in xs[2:]:
                y = y + x
            return y
        y = xs[0] * self.coeffs[0]
        for x, c in zip(xs[1:], self.coeffs[1:]):
            y = torch.add(y, x, alpha=c) if c != 1.0 else y + x
        return y


def eltwise(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.eltwise_param
    op = p.EltwiseOp.Name(p.operation)
    if len(bottoms) < 2:
        raise EmitError(f"Eltwise layer {layer.name!r} needs at least two inputs")
    coeffs = tuple(p.coeff) if p.coeff else (1.0,) * len(bottoms)
    if op != "SUM" and p.coeff:
        raise EmitError(f"Eltwise layer {layer.name!r}: coefficients apply to SUM only")
    return Eltwise(op, coeffs)


class Concat(CaffeLayer):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return xs[0] if len(xs) == 1 else torch.cat(xs, self.axis)


def concat(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis
    return Concat(caffe_axis(axis, len(bottoms[0])))


class Slice(CaffeLayer):
    def __init__(self, axis: int, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.axis, self.sizes = axis, sizes

    def forward(self, x: torch.Tensor):
        parts = torch.split(x, self.sizes, self.axis)
        return parts[0] if len(parts) == 1 else tuple(parts)


def slice_(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.slice_param
    axis = caffe_axis(p.slice_dim if p.HasField("slice_dim") else p.axis, len(bottoms[0]))
    return Slice(axis, tuple(t[axis] for t in tops))


class Split(CaffeLayer):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor):
        return x if self.n == 1 else (x,) * self.n


def split(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Split(len(layer.top))


class Reshape(CaffeLayer):
    """Flatten, Reshape (the analysed top shape) and any other pure view change."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.shape)


def reshape(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Reshape(tops[0])


class Crop(CaffeLayer):
    def __init__(self, index: tuple[slice, ...]) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return x[self.index]


def crop(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.crop_param
    a, ref = bottoms[0], bottoms[1]
    axis = caffe_axis(p.axis, len(a))
    index = []
    for i in range(len(a)):
        if i < axis:
            index.append(slice(None))
            continue
        off = 0
        if len(p.offset) == 1:
            off = p.offset[0]
        elif len(p.offset) > 1:
            off = p.offset[i - axis]
        if a[i] - off < ref[i]:
            raise EmitError(f"Crop layer {layer.name!r}: offset {off} leaves axis {i} of {a} "
                            f"shorter than {ref[i]}")
        index.append(slice(off, off + ref[i]))
    return Crop(tuple(index))


class Permute(CaffeLayer):
    def __init__(self, order: tuple[int, ...]) -> None:
        super().__init__()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order).contiguous()


def permute(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    n = len(bottoms[0])
    order = list(layer.permute_param.order)
    order += [i for i in range(n) if i not in order]
    return Permute(tuple(order))


class Upsample(CaffeLayer):
    """Nearest-neighbour by an integer factor on the last one (NCW) or two axes (this
    build's Upsample; the YOLOv3 ports' is the same: ChenYingpeng/caffe-yolov3
    caffe_layers/upsample_layer/upsample_layer.cu, ``translate_idx`` divides the top's
    row and column by the scale)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.repeat_interleave(self.scale, -1)
        return y.repeat_interleave(self.scale, -2) if x.dim() == 4 else y


def upsample(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    """This build's (and YOLO's) Upsample, or SegNet's unpooling with a mask (the
    registry's rule tells them apart: :func:`pynetbuilder.kinds.forks.is_segnet_upsample`)."""
    from pynetbuilder.kinds.forks import is_segnet_upsample

    if is_segnet_upsample(layer):
        from pynetbuilder.pytorch.emit_forks import segnet_upsample

        return segnet_upsample(layer, bottoms, tops, phase)
    p = layer.upsample_param
    if len(bottoms[0]) not in (3, 4):
        raise EmitError(f"Upsample layer {layer.name!r}: needs a 3- or 4-axis input")
    return Upsample(p.scale)


class Silence(CaffeLayer):
    def forward(self, *xs: torch.Tensor) -> tuple:
        return ()


def silence(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Silence()


class Softmax(CaffeLayer):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, self.axis)


def softmax(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Softmax(caffe_axis(layer.softmax_param.axis, len(bottoms[0])))


class ArgMax(CaffeLayer):
    """Caffe's ArgMax: the top_k indices (and values with ``out_max_val``) along ``axis``,
    or over all of C,H,W per sample when no axis is given (then N,1|2,top_k)."""

    def __init__(self, top_k: int, out_max_val: bool, axis: int | None, shape: Shape) -> None:
        super().__init__()
        self.top_k, self.out_max_val, self.axis, self.shape = top_k, out_max_val, axis, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            values, idx = torch.topk(x.flatten(1), self.top_k, 1)
            out = torch.stack([idx.to(x.dtype), values], 1) if self.out_max_val else \
                idx.to(x.dtype).unsqueeze(1)
            return out.reshape(self.shape)
        values, idx = torch.topk(x, self.top_k, self.axis)
        return values if self.out_max_val else idx.to(x.dtype)


def argmax(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.argmax_param
    axis = caffe_axis(p.axis, len(bottoms[0])) if p.HasField("axis") else None
    return ArgMax(p.top_k, p.out_max_val, axis, tops[0])


class Constant(CaffeLayer):
    """A blob that depends only on shapes (PriorBox), computed when the module is built."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value, persistent=False)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.value


def prior_box(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    """SSD's prior boxes as this Caffe computes them (min sizes truncated to int)."""
    p = layer.prior_box_param
    f32 = np.float32
    ars = [1.0]
    for ar in p.aspect_ratio:
        if all(abs(ar - a) >= 1e-6 for a in ars):
            ars.append(float(f32(ar)))
            if p.flip:
                ars.append(float(f32(1.0 / ar)))
    lh, lw = bottoms[0][2], bottoms[0][3]
    if p.HasField("img_h") or p.HasField("img_w"):
        img_h, img_w = p.img_h, p.img_w
    elif p.HasField("img_size"):
        img_h = img_w = p.img_size
    else:
        img_h, img_w = bottoms[1][2], bottoms[1][3]
    if p.HasField("step_h") or p.HasField("step_w"):
        step_h, step_w = f32(p.step_h), f32(p.step_w)
    elif p.HasField("step"):
        step_h = step_w = f32(p.step)
    else:
        step_w, step_h = f32(f32(img_w) / f32(lw)), f32(f32(img_h) / f32(lh))
    off = f32(p.offset)
    boxes: list[float] = []
    for h in range(lh):
        for w in range(lw):
            cx, cy = f32(f32(w + off) * step_w), f32(f32(h + off) * step_h)

            def box(bw: float, bh: float, cx=cx, cy=cy) -> None:
                bw, bh = float(f32(bw)), float(f32(bh))
                boxes.extend([(float(cx) - bw / 2.0) / img_w, (float(cy) - bh / 2.0) / img_h,
                              (float(cx) + bw / 2.0) / img_w, (float(cy) + bh / 2.0) / img_h])

            for s, min_size in enumerate(p.min_size):
                m = int(min_size)
                box(m, m)
                if p.max_size:
                    side = math.sqrt(m * int(p.max_size[s]))
                    box(side, side)
                for ar in ars:
                    if abs(ar - 1.0) < 1e-6:
                        continue
                    box(m * math.sqrt(ar), m / math.sqrt(ar))
    coords = np.asarray(boxes, dtype=np.float32)
    if p.clip:
        coords = np.clip(coords, 0.0, 1.0)
    variances = list(p.variance) or [0.1]
    var = np.resize(np.asarray(variances, dtype=np.float32), coords.size) if len(variances) > 1 \
        else np.full(coords.size, variances[0], dtype=np.float32)
    value = torch.from_numpy(np.stack([coords, var])[None].copy())
    if tuple(value.shape) != tuple(tops[0]):
        raise EmitError(f"PriorBox layer {layer.name!r}: computed {tuple(value.shape)}, "
                        f"analysed {tops[0]}")
    return Constant(value)


class Pad(CaffeLayer):
    def __init__(self, pads: tuple[int, int, int, int], mode: str, value: float) -> None:
        super().__init__()
        self.pads, self.mode, self.value = pads, mode, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return nnf.pad(x, self.pads, value=self.value)
        return nnf.pad(x, self.pads, mode=self.mode)


def pad(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.pad_param
    pads = (p.pad_l, p.pad_r, p.pad_u, p.pad_d)
    mode = p.PadType.Name(p.pad_type).lower()
    if len(bottoms[0]) != 4:
        raise EmitError(f"Pad layer {layer.name!r}: needs an N,C,H,W input")
    if mode != "constant" and min(pads) < 0:
        raise EmitError(f"Pad layer {layer.name!r}: negative padding is a crop; only with "
                        "pad_type CONSTANT")
    return Pad(pads, mode, p.pad_value)


class Tile(CaffeLayer):
    """Caffe's Tile: the block from ``axis`` on, repeated ``tiles`` times along it."""

    def __init__(self, axis: int, tiles: int) -> None:
        super().__init__()
        self.axis, self.tiles = axis, tiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reps = [1] * x.dim()
        reps[self.axis] = self.tiles
        return x.repeat(*reps)


def tile(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.tile_param
    return Tile(caffe_axis(p.axis, len(bottoms[0])), p.tiles)


class Reduction(CaffeLayer):
    """Caffe's Reduction: SUM, ASUM (sum of magnitudes), SUMSQ or MEAN over every axis
    from ``axis`` on, times ``coeff`` (MEAN: ``coeff / count``, as Caffe scales it)."""

    def __init__(self, op: str, axis: int, coeff: float, shape: Shape) -> None:
        super().__init__()
        self.op, self.axis, self.coeff, self.shape = op, axis, coeff, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[: self.axis], -1)
        if self.op == "ASUM":
            y = flat.abs().sum(-1)
        elif self.op == "SUMSQ":
            y = (flat * flat).sum(-1)
        else:  # SUM and MEAN
            y = flat.sum(-1)
        return (y * self.coeff if self.coeff != 1.0 else y).reshape(self.shape)


def reduction(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.reduction_param
    op = p.ReductionOp.Name(p.operation)
    b = bottoms[0]
    axis = caffe_axis(p.axis, len(b))
    coeff = float(np.float32(p.coeff))
    if op == "MEAN":  # Caffe: coeff_ /= dim_ (in float32)
        coeff = float(np.float32(coeff) / np.float32(math.prod(b[axis:])))
    return Reduction(op, axis, coeff, tuple(tops[0]))


class Parameter(CaffeLayer):
    """Caffe's Parameter layer: its one learnt blob, given as its top."""

    blob_names = ("weight",)

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.weight = param(shape, fan_in=int(math.prod(shape[1:])) if len(shape) > 1 else 0)

    def forward(self) -> torch.Tensor:
        return self.weight


def parameter(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return Parameter(tuple(tops[0]))


class BatchReindex(CaffeLayer):
    """``batch_reindex_layer.cpp``: item ``idx[i]`` (cast to int) of the first input as
    item ``i``; the gradient sums back into each item picked (none to the indices)."""

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return x.index_select(0, index.detach().reshape(-1).to(torch.int64))


def batch_reindex(layer: Any, bottoms: list[Shape], tops: list[Shape],
                  phase: str) -> CaffeLayer:
    return BatchReindex()
