"""Pooling exactly as Caffe's C++: ceil (or floor) rounding, the last window kept
only if it starts inside the image or its left padding (when padded), AVE's
divisor counting the padding up to the padded border and no further; SPP built from
such poolings; R-FCN's PSROIPooling."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape, spatial
from pynetbuilder.pytorch.emit_forks import _round_half_away

FLT_MAX = 3.4028234663852886e38


def _ranges(size: int, k: int, s: int, p: int, out: int) -> list[tuple[int, int]]:
    """Caffe's (start, end) of each window along one axis, before clipping to the image:
    ``end = min(start + k, size + p)``."""
    return [(o * s - p, min(o * s - p + k, size + p)) for o in range(out)]


def ave_divisor(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                pad: tuple[int, int], out: tuple[int, int]) -> torch.Tensor:
    """Caffe's AVE ``pool_size`` of every output position (out_h x out_w)."""
    rows = [e - b for b, e in _ranges(size[0], kernel[0], stride[0], pad[0], out[0])]
    cols = [e - b for b, e in _ranges(size[1], kernel[1], stride[1], pad[1], out[1])]
    return torch.tensor([[float(r * c) for c in cols] for r in rows], dtype=torch.float32)


def _torch_out(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's pooled size (its ceil rule drops a window starting past input + pad)."""
    n = size + 2 * p - k
    out = (-(-n // s) if ceil else n // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


class Pooling(CaffeLayer):
    """MAX or AVE pooling over N,C,H,W; ``native`` when PyTorch's own pooling with
    the same padding and its ceil/floor rule gives Caffe's windows, else the input
    is padded explicitly (-FLT_MAX, Caffe's initial max, or 0) to cover every Caffe
    window and divided by Caffe's divisor."""

    def __init__(self, method: str, kernel, stride, pad, native_ceil: bool | None,
                 extra: tuple[int, int], divisor: torch.Tensor | None, tops: int) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.native_ceil, self.extra, self.tops = native_ceil, extra, tops
        if divisor is not None:  # kernel area / Caffe's divisor, per output position
            area = float(kernel[0] * kernel[1])
            self.register_buffer("rescale", area / divisor, persistent=False)

    def explicit(self) -> None:
        """Pool as Caffe's windows spelt out (explicit padding, floor rounding, Caffe's
        divisor) instead of PyTorch's ceil mode: what an exported graph must say, as
        ONNX's ceil rounding has no rule about windows that start in the padding."""
        if self.native_ceil:
            self.native_ceil = None

    def forward(self, x: torch.Tensor):
        if self.tops == 1:
            return self._pool(x)
        return self._pool_with_mask(x)

    def _pool_with_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MAX with a second top: the mask, as Caffe's ``top_mask`` (pooling_layer.cpp):
        the index ``h * W + w`` in the input plane of each window's first maximum
        (Caffe's strict ``>`` in row-major order, as PyTorch's), as a float."""
        if self.native_ceil is not None:
            y, index = nnf.max_pool2d(x, self.kernel, self.stride, self.pad,
                                      ceil_mode=self.native_ceil, return_indices=True)
            return y, index.to(x.dtype)
        (ph, pw), (eh, ew) = self.pad, self.extra
        padded = nnf.pad(x, (pw, ew, ph, eh), value=-FLT_MAX)
        y, index = nnf.max_pool2d(padded, self.kernel, self.stride, return_indices=True)
        width = padded.shape[-1]
        row, col = torch.div(index, width, rounding_mode="floor") - ph, index % width - pw
        return y, (row * x.shape[-1] + col).to(x.dtype)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.native_ceil is not None:
            if self.method == "MAX":
                return nnf.max_pool2d(x, self.kernel, self.stride, self.pad,
                                    ceil_mode=self.native_ceil)
            return nnf.avg_pool2d(x, self.kernel, self.stride, self.pad,
                                ceil_mode=self.native_ceil, count_include_pad=True)
        (ph, pw), (eh, ew) = self.pad, self.extra
        if self.method == "MAX":
            padded = nnf.pad(x, (pw, ew, ph, eh), value=-FLT_MAX)
            return nnf.max_pool2d(padded, self.kernel, self.stride)
        padded = nnf.pad(x, (pw, ew, ph, eh))
        # the mean over the whole (zero-padded) window, rescaled to Caffe's divisor
        return nnf.avg_pool2d(padded, self.kernel, self.stride) * self.rescale


def pooling(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.pooling_param
    method = p.PoolMethod.Name(p.pool)
    b = bottoms[0]
    if len(b) != 4:
        raise EmitError(f"Pooling layer {layer.name!r}: needs an N,C,H,W input, got {b}")
    if len(tops) > 1 and method != "MAX":
        raise EmitError(f"Pooling layer {layer.name!r}: only MAX pooling has a second top "
                        "(its mask)")
    if method not in ("MAX", "AVE"):
        raise EmitError(f"Pooling layer {layer.name!r}: {method} pooling has no PyTorch "
                        "emitter (Caffe implements it on GPU only)")
    h, w = b[2:]
    out = tuple(tops[0][2:])
    if p.global_pooling:
        kernel, stride, pad = (h, w), (1, 1), (0, 0)
    else:
        kernel, stride, pad = (spatial(p, "kernel", 0, 2), spatial(p, "stride", 1, 2),
                               spatial(p, "pad", 0, 2))
    native = None
    if all(pd * 2 <= k for pd, k in zip(pad, kernel)):  # PyTorch's own limit
        for ceil in (False, True):
            if all(_torch_out(n, k, s, pd, ceil) == o
                   for n, k, s, pd, o in zip((h, w), kernel, stride, pad, out)):
                native = ceil
                break
    # explicit padding on the far side so that every Caffe window is inside
    extra = tuple((o - 1) * s + k - n - pd for n, k, s, pd, o in zip((h, w), kernel, stride,
                                                                      pad, out))
    divisor = ave_divisor((h, w), kernel, stride, pad, out) if method == "AVE" else None
    return Pooling(method, kernel, stride, pad, native, extra, divisor, len(layer.top))


class SPP(CaffeLayer):
    """Spatial pyramid pooling as Caffe's SPP layer builds it: one Caffe pooling per level
    (``2**l`` bins a side); a single level is that pooling's output, more are flattened
    and concatenated along axis 1."""

    def __init__(self, levels: list[Pooling]) -> None:
        super().__init__()
        self.levels = torch.nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.levels) == 1:
            return self.levels[0](x)
        return torch.cat([level(x).flatten(1) for level in self.levels], 1)


def spp(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    from pynetbuilder.kinds.pooling import pooled
    from pynetbuilder.schema import caffe_pb2

    p = layer.spp_param
    method = p.PoolMethod.Name(p.pool)
    n, c, h, w = bottoms[0]
    levels = []
    for level in range(p.pyramid_height):  # Caffe's SPPLayer::GetPoolingParam
        bins = 2**level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        sub = caffe_pb2.LayerParameter(name=f"{layer.name}/level{level}", type="Pooling",
                                       top=[f"{layer.name}/level{level}"])
        sub.pooling_param.pool = caffe_pb2.PoolingParameter.PoolMethod.Value(method)
        sub.pooling_param.kernel_h, sub.pooling_param.kernel_w = kh, kw
        sub.pooling_param.stride_h, sub.pooling_param.stride_w = kh, kw
        sub.pooling_param.pad_h, sub.pooling_param.pad_w = ph, pw
        out = (n, c, pooled(h, kh, kh, ph), pooled(w, kw, kw, pw))
        levels.append(pooling(sub, [bottoms[0]], [out], phase))
    return SPP(levels)


class PSROIPooling(CaffeLayer):
    """R-FCN's position-sensitive ROI pooling (daijifeng001/caffe-rfcn
    src/caffe/layers/psroi_pooling_layer.cu, ``PSROIPoolingForward``; this build ships
    the same kernels, and its Forward_cpu and Backward_cpu are NOT_IMPLEMENTED).

    A roi ``[batch, x1, y1, x2, y2]``: batch by ``int()``; corners rounded (halves away
    from zero), the far ones plus 1, times ``spatial_scale`` (float32); size at least
    0.1; bin size = size / group_size; bin ``p`` covers ``floor(p * bin + start)`` to
    ``ceil((p + 1) * bin + start)``, clipped to the map.  Output channel ``d``, bin
    ``(ph, pw)`` is the mean over that bin of input channel ``(d * G + ph) * G + pw``,
    or 0 for an empty bin.  The bins are masks over the map, so the module has no Python
    control flow that depends on the rois' values.  Its gradient is the kernel
    ``PSROIPoolingBackwardAtomic``'s: each top gradient / bin area, added over the bin.
    """

    def __init__(self, output_dim: int, group: int, scale: float, shape: Shape) -> None:
        super().__init__()
        self.output_dim, self.group, self.shape = output_dim, group, tuple(shape)
        self.register_buffer("scale", torch.tensor(float(np.float32(scale))), persistent=False)

    def _bins(self, start: torch.Tensor, end: torch.Tensor, size: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, G, size) mask of each bin along one axis, and (R, G) its length."""
        bin_size = torch.clamp(end - start, min=0.1) / float(self.group)
        steps = torch.arange(self.group, dtype=start.dtype, device=start.device)
        lo = torch.floor(steps * bin_size[:, None] + start[:, None]).to(torch.int64)
        hi = torch.ceil((steps + 1) * bin_size[:, None] + start[:, None]).to(torch.int64)
        lo, hi = lo.clamp(0, size), hi.clamp(0, size)
        where = torch.arange(size, device=start.device)
        return (where >= lo[..., None]) & (where < hi[..., None]), hi - lo

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        n, _, h, w = self.shape
        g = self.group
        rois = rois.reshape(-1, 5)
        corner = _round_half_away(rois[:, 1:])
        start = corner[:, :2] * self.scale
        end = (corner[:, 2:] + 1) * self.scale
        rows, heights = self._bins(start[:, 1], end[:, 1], h)
        cols, widths = self._bins(start[:, 0], end[:, 0], w)
        maps = x.reshape(n, self.output_dim, g, g, h, w)
        batch = rois[:, 0].to(torch.int64)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        out = []
        for ph in range(g):
            for pw in range(g):
                inside = rows[:, ph, None, :, None] & cols[:, pw, None, None, :]
                total = torch.where(inside, maps[:, :, ph, pw].index_select(0, batch),
                                    zero).sum((2, 3))
                area = heights[:, ph] * widths[:, pw]
                empty = (heights[:, ph] <= 0) | (widths[:, pw] <= 0)
                mean = total / area.clamp(min=1).to(x.dtype)[:, None]
                out.append(torch.where(empty[:, None], zero, mean))
        return torch.stack(out, 2).reshape(-1, self.output_dim, g, g)


def psroi_pooling(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str
                  ) -> CaffeLayer:
    p = layer.psroi_pooling_param
    if len(bottoms[0]) != 4:
        raise EmitError(f"PSROIPooling layer {layer.name!r}: needs an N,C,H,W feature map, "
                        f"got {tuple(bottoms[0])}")
    return PSROIPooling(p.output_dim, p.group_size, p.spatial_scale, bottoms[0])
