"""Pooling layer kinds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    Shape,
    kind,
    legacy,
    refuse,
    spatial,
)
from pynetbuilder.kinds.convolution import window

GREEN = "#d9ead3"
_MAX, _AVE = 0, 1  # PoolingParameter.PoolMethod


def _pooling(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    """Caffe's ``PoolingLayer``: ceil rounding (``ceil_mode: false`` floors), a last
    window that would start in the padding dropped, and ``LayerSetUp``'s checks."""
    p = layer.pooling_param
    if len(bottoms[0]) != 4:
        raise refuse(layer, f"needs a 4-axis N,C,H,W input, got {bottoms[0]}")
    _check_paired_fields(layer, p)
    n, c, h, w = bottoms[0]
    kh, kw = spatial(p, "kernel", 0)
    sh, sw = spatial(p, "stride", 1)
    ph, pw = spatial(p, "pad", 0)
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
            raise refuse(layer, "with global_pooling the kernel size is the input's; "
                                "do not give one")
        if ph or pw or sh != 1 or sw != 1:
            raise refuse(layer, "with global_pooling only pad 0 and stride 1 are allowed")
        return LayerCost([(n, c, 1, 1)] * len(layer.top))
    if not kh or not kw:
        raise refuse(layer, "has no kernel size (kernel dimensions must be nonzero)")
    if not sh or not sw:
        raise refuse(layer, "stride must be positive")
    if ph or pw:
        if p.pool not in (_MAX, _AVE):
            raise refuse(layer, "padding is implemented only for MAX and AVE pooling")
        if ph >= kh or pw >= kw:
            raise refuse(layer, f"pad {ph}x{pw} must be smaller than the kernel {kh}x{kw}")
    rounding = math.ceil if p.ceil_mode else math.floor
    out_h = int(rounding((h + 2 * ph - kh) / sh)) + 1
    out_w = int(rounding((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        # Caffe: make sure the last pooling window starts inside the image.
        if (out_h - 1) * sh >= h + ph:
            out_h -= 1
        if (out_w - 1) * sw >= w + pw:
            out_w -= 1
    return LayerCost([(n, c, out_h, out_w)] * len(layer.top))


def _check_paired_fields(layer: LayerLike, p: Any) -> None:
    """``PoolingLayer::LayerSetUp``'s checks of how the geometry is given: a square
    kernel (``kernel_size``) or both ``kernel_h`` and ``kernel_w``, never both ways;
    ``pad`` or both ``pad_h`` and ``pad_w``; ``stride`` or both ``stride_h`` and
    ``stride_w`` (pooling_layer.cpp; Convolution takes a missing ``_w`` as its default)."""
    has = p.HasField
    if not p.global_pooling:
        if has("kernel_size") == (has("kernel_h") and has("kernel_w")):
            raise refuse(layer, "give kernel_size or both kernel_h and kernel_w (one way, "
                                "not both)")
    for name in ("pad", "stride"):
        h, w = has(f"{name}_h"), has(f"{name}_w")
        if (h or w) and not (h and w and not has(name)):
            raise refuse(layer, f"give {name} or both {name}_h and {name}_w (one way, not "
                                "both)")


def pooled(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size (ceil, last window starting inside the image)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _spp(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
         ) -> LayerCost:
    """Spatial pyramid pooling: level ``l`` pools into ``2**l`` bins per side (kernel
    ``ceil(size / bins)``, padding to cover the image); one level is a plain pooling,
    more are flattened and concatenated."""
    n, c, h, w = bottoms[0]
    levels = layer.spp_param.pyramid_height
    total = 0
    for level in range(levels):
        bins = 2**level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        if (ph or pw) and (ph >= kh or pw >= kw):  # its Pooling layer's CHECK_LT(pad, kernel)
            raise refuse(layer, f"level {level} ({bins}x{bins} bins of a {h}x{w} input) needs "
                                f"pad {ph}x{pw}, not smaller than its kernel {kh}x{kw}: the "
                                "input is too small for pyramid_height "
                                f"{levels}")
        oh, ow = pooled(h, kh, kh, ph), pooled(w, kw, kw, pw)
        if levels == 1:
            return LayerCost([(n, c, oh, ow)])
        total += c * oh * ow
    return LayerCost([(n, total)])


def _psroi_pooling(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                   ) -> LayerCost:
    """``rois x output_dim x group_size x group_size`` (R-FCN)."""
    p = layer.psroi_pooling_param
    if legacy(bottoms[0], 1) != p.output_dim * p.group_size**2:
        raise refuse(layer, f"input channels {legacy(bottoms[0], 1)} must be output_dim x "
                            f"group_size^2 = {p.output_dim * p.group_size**2}")
    return LayerCost([(legacy(bottoms[1], 0), p.output_dim, p.group_size, p.group_size)])


def _max_unpool(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                ) -> LayerCost:
    p = layer.max_unpool_param
    n, c = bottoms[0][:2]
    return LayerCost([(n, c, p.dst_h, p.dst_w)])


def _pool_summary(layer: LayerLike) -> str:
    p = layer.pooling_param
    method = p.PoolMethod.Name(p.pool)
    if p.global_pooling:
        return f"{method} global"
    return " ".join([method, *window(p)])


KINDS = (
    kind("Pooling", _pooling, v1="POOLING", summary=_pool_summary, fill=GREEN,
         torch="emit_pool:pooling"),
    kind("SPP", _spp, torch="emit_pool:spp"),
    kind("PSROIPooling", _psroi_pooling, category=Category.NO_BACKWARD, origin="rfcn",
         torch="emit_pool:psroi_pooling"),
    # Backward_cpu is an empty body in this build (maxunpool_layer.hpp)
    kind("MaxUnPool", _max_unpool, category=Category.NO_BACKWARD, origin="brocolli",
         torch="emit_forks:max_unpool"),
)
