"""Layer kinds that change a blob's spatial size: upsampling, padding, resizing."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.kinds.base import LayerCost, LayerLike, Shape, float32, kind, legacy, refuse


def _upsample(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
              ) -> LayerCost:
    """Nearest-neighbour: the last axis (``dims_num`` 3) or last two (4) times ``scale``."""
    from pynetbuilder.kinds.forks import is_segnet_upsample, segnet_upsample

    if is_segnet_upsample(layer):  # SegNet's unpooling Upsample (read through its dialect)
        return segnet_upsample(layer, bottoms)
    p = layer.upsample_param
    if p.dims_num not in (3, 4):
        raise refuse(layer, "dims_num must be 3 or 4")
    shape = list(bottoms[0])
    shape[-1] *= p.scale
    if p.dims_num == 4:
        shape[-2] *= p.scale
    return LayerCost([tuple(shape)])


def _pixel_shuffle(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                   ) -> LayerCost:
    r = layer.pixelshuffle_param.upscale_factor
    shape = list(bottoms[0])
    if r < 1 or shape[1] % (r * r):
        raise refuse(layer, f"channels {shape[1]} not divisible by upscale_factor^2 {r * r}")
    shape[-3] //= r * r
    shape[-2] *= r
    shape[-1] *= r
    return LayerCost([tuple(shape)])


def _pad(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
         ) -> LayerCost:
    """Pads the last two axes of a 2-, 3- or 4-axis blob (up/down, left/right)."""
    p = layer.pad_param
    shape = list(bottoms[0])
    if not 2 <= len(shape) <= 4:
        raise refuse(layer, f"takes 2 to 4 axes, got {bottoms[0]}")
    shape[-2] += p.pad_u + p.pad_d
    shape[-1] += p.pad_l + p.pad_r
    return LayerCost([tuple(shape)])


def _resize(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
            ) -> LayerCost:
    """Bilinear resize to ``height`` x ``width`` or, ``is_pyramid_test``, by scale
    factors (truncated as C++'s ``int()``)."""
    p = layer.resize_param
    n, c = legacy(bottoms[0], 0), legacy(bottoms[0], 1)
    if p.is_pyramid_test:
        h = int(float32(p.out_height_scale) * legacy(bottoms[0], 2))
        w = int(float32(p.out_width_scale) * legacy(bottoms[0], 3))
    else:
        h, w = p.height, p.width
    return LayerCost([(n, c, h, w)])


def _bilinear(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
              ) -> LayerCost:
    """To ``dst_h`` x ``dst_w`` (a missing one keeps the input's) or, with only
    ``scale_factor``, the input's size times it (truncated)."""
    p = layer.bilinear_interpolate_param
    b = bottoms[0]
    h, w = legacy(b, 2), legacy(b, 3)
    sizes = p.HasField("dst_h") or p.HasField("dst_w")
    if sizes == p.HasField("scale_factor"):
        raise refuse(layer, "needs dst_h/dst_w or scale_factor (one of them; Caffe leaves "
                            "the size undefined otherwise)")
    if sizes:
        h = p.dst_h if p.HasField("dst_h") else h
        w = p.dst_w if p.HasField("dst_w") else w
    else:
        scale = float32(p.scale_factor)
        h, w = int(h * scale), int(w * scale)
    return LayerCost([(legacy(b, 0), legacy(b, 1), h, w)])


KINDS = (
    kind("Upsample", _upsample, origin="brocolli", torch="emit_shape:upsample"),
    kind("PixelShuffle", _pixel_shuffle, param="pixelshuffle_param", origin="brocolli"),
    kind("Pad", _pad, origin="brocolli", torch="emit_shape:pad"),
    kind("Resize", _resize, origin="brocolli"),
    kind("BilinearInterpolate", _bilinear, origin="brocolli"),
)
