"""Convolution-like layer kinds: the ones with weights and multiply-accumulates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    ParamBlob,
    Shape,
    axis_index,
    count,
    kind,
    refuse,
    spatial,
)

BLUE = "#cfe2f3"
ORANGE = "#f9cb9c"


class _ConvGeometry(NamedTuple):
    n: int
    channels: int
    spatial: Shape
    num_output: int
    group: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]
    bias_term: bool

    def blobs(self, weight: Shape) -> list[ParamBlob]:
        blobs = [ParamBlob(weight)]
        if self.bias_term:
            blobs.append(ParamBlob((self.num_output,)))
        return blobs


def _geometry(layer: LayerLike, bottom: Shape, *, outputs: bool = True) -> _ConvGeometry:
    """What Convolution, Deconvolution and Im2col share, with the checks of Caffe's
    ``BaseConvolutionLayer::LayerSetUp`` (kernel, stride, group, num_output)."""
    p = layer.convolution_param
    nd = len(bottom) - 2
    if nd < 1:
        raise refuse(layer, f"needs an N,C,spatial input, got {bottom}")
    for name in ("kernel_size", "stride", "pad", "dilation"):
        given = len(getattr(p, name))
        if given not in (0, 1, nd):
            raise refuse(layer, f"{name} must be given once or once per spatial axis "
                                f"({nd}), got {given} values")
    for name, repeated in (("kernel", "kernel_size"), ("stride", "stride"), ("pad", "pad")):
        if p.HasField(f"{name}_h") or p.HasField(f"{name}_w"):
            if nd != 2:
                raise refuse(layer, f"{name}_h and {name}_w are for 2-D inputs; this one has "
                                    f"{nd} spatial axes")
            if len(getattr(p, repeated)):
                raise refuse(layer, f"give {repeated} or {name}_h/{name}_w, not both")
    kernel = spatial(p, "kernel", 0, nd)
    if 0 in kernel:
        raise refuse(layer, "has no kernel size (kernel dimensions must be nonzero)")
    stride = spatial(p, "stride", 1, nd)
    if 0 in stride:
        raise refuse(layer, "stride must be positive")
    dilation = spatial(p, "dilation", 1, nd)
    if 0 in dilation:
        raise refuse(layer, "dilation must be positive")
    n, c = bottom[0], bottom[1]
    if outputs and p.num_output < 1:
        raise refuse(layer, "num_output must be positive")
    group = p.group
    if group < 1:
        raise refuse(layer, "group must be positive")
    if outputs and (c % group or p.num_output % group):
        raise refuse(layer, f"group {group} must divide both input channels {c} and "
                            f"num_output {p.num_output}")
    return _ConvGeometry(n, c, bottom[2:], p.num_output, group, kernel, stride,
                         spatial(p, "pad", 0, nd), dilation, p.bias_term)


def _conv_out(g: _ConvGeometry) -> list[int]:
    return [(size + 2 * pd - (d * (k - 1) + 1)) // s + 1
            for size, k, s, pd, d in zip(g.spatial, g.kernel, g.stride, g.pad, g.dilation)]


def _convolution(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                 ) -> LayerCost:
    g = _geometry(layer, bottoms[0])
    for other in bottoms[1:]:
        if other != bottoms[0]:
            raise refuse(layer, f"all inputs must have one shape, got {bottoms}")
    out = _conv_out(g)
    per_output = (g.channels // g.group) * count(g.kernel)  # weights per output channel
    macs = g.n * g.num_output * count(out) * per_output
    blobs = g.blobs((g.num_output, g.channels // g.group, *g.kernel))
    return LayerCost([(g.n, g.num_output, *out)] * len(layer.top), blobs, macs * len(bottoms))


def _deconvolution(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                   ) -> LayerCost:
    g = _geometry(layer, bottoms[0])
    out = tuple(
        s * (size - 1) + d * (k - 1) + 1 - 2 * pd
        for size, k, s, pd, d in zip(g.spatial, g.kernel, g.stride, g.pad, g.dilation)
    )
    macs = g.n * g.channels * count(g.spatial) * (g.num_output // g.group) * count(g.kernel)
    blobs = g.blobs((g.channels, g.num_output // g.group, *g.kernel))
    return LayerCost([(g.n, g.num_output, *out)] * len(layer.top), blobs, macs * len(bottoms))


def _im2col(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
            ) -> LayerCost:
    """``Im2colLayer::Reshape``: the channels are axis ``convolution_param.axis`` (the
    axes before it items, those after it spatial), times the kernel's size."""
    b = bottoms[0]
    axis = axis_index(layer.convolution_param.axis, len(b))
    g = _geometry(layer, (count(b[:axis]), *b[axis:]), outputs=False)
    return LayerCost([(*b[:axis], g.channels * count(g.kernel), *_conv_out(g))])


def _inner_product(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                   ) -> LayerCost:
    p = layer.inner_product_param
    bottom = bottoms[0]
    axis = axis_index(p.axis, len(bottom))
    m, k = count(bottom[:axis]), count(bottom[axis:])
    weight = (k, p.num_output) if p.transpose else (p.num_output, k)
    blobs = [ParamBlob(weight)]
    if p.bias_term:
        blobs.append(ParamBlob((p.num_output,)))
    return LayerCost([(*bottom[:axis], p.num_output)], blobs, m * k * p.num_output)


def _embed(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    """``EmbedLayer::LayerSetUp``/``Reshape``: a row of the input_dim x num_output table
    per input value, so the top is the input's shape plus num_output.  A table look-up:
    no MACs counted (the bias, when there is one, is an addition)."""
    p = layer.embed_param
    if p.num_output < 1 or p.input_dim < 1:
        raise refuse(layer, "embed_param.num_output and input_dim must be positive")
    blobs = [ParamBlob((p.input_dim, p.num_output))]
    if p.bias_term:
        blobs.append(ParamBlob((p.num_output,)))
    return LayerCost([(*bottoms[0], p.num_output)], blobs)


# ---------------------------------------------------------------- drawing summaries


def dims(values: Sequence[int]) -> str:
    """``(3, 3)`` -> ``3x3``."""
    return "x".join(map(str, values))


def scalar_or_dims(values: Sequence[int]) -> str:
    """``(2, 2)`` -> ``2``, ``(2, 1)`` -> ``2x1``."""
    return str(values[0]) if len(set(values)) == 1 else dims(values)


def window(p: object) -> list[str]:
    """Kernel, stride and pad of a convolution or pooling parameter message."""
    parts = [dims(spatial(p, "kernel", 0))]
    stride, pad = spatial(p, "stride", 1), spatial(p, "pad", 0)
    if any(s != 1 for s in stride):
        parts.append(f"s{scalar_or_dims(stride)}")
    if any(pad):
        parts.append(f"p{scalar_or_dims(pad)}")
    return parts


def _conv_summary(layer: LayerLike) -> str:
    p = layer.convolution_param
    parts = window(p)
    dilation = spatial(p, "dilation", 1)
    if any(d != 1 for d in dilation):
        parts.append(f"d{scalar_or_dims(dilation)}")
    if p.group != 1:
        parts.append(f"g{p.group}")
    return " ".join(parts) + f" \u2192 {p.num_output}"


KINDS = (
    kind("Convolution", _convolution, v1="CONVOLUTION", summary=_conv_summary, fill=BLUE,
         torch="emit_conv:convolution"),
    kind("Deconvolution", _deconvolution, v1="DECONVOLUTION", param="convolution_param",
         summary=_conv_summary, fill=BLUE, torch="emit_conv:deconvolution"),
    kind("Im2col", _im2col, v1="IM2COL", param="convolution_param", torch="emit_conv:im2col"),
    kind("InnerProduct", _inner_product, v1="INNER_PRODUCT",
         summary=lambda layer: f"\u2192 {layer.inner_product_param.num_output}", fill=ORANGE,
              torch="emit_conv:inner_product"),
    # embed_layer.cpp: CHECK(!propagate_down[0]) "Can't backpropagate to EmbedLayer input"
    kind("Embed", _embed, category=Category.NO_FORCED_BACKWARD, constant_bottoms=(0,),
         summary=lambda layer: f"{layer.embed_param.input_dim} \u2192 "
                               f"{layer.embed_param.num_output}",
         fill=ORANGE, torch="emit_recurrent:embed"),
)
