"""Layer kinds that change a blob's spatial size: upsampling, padding, resizing."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    Shape,
    float32,
    kind,
    legacy,
    refuse,
)


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
    """``PixelShuffleLayer::Reshape`` (pixelshuffle_layer.cpp): channels / r^2 (C++'s
    integer division: it checks only that r divides them), height and width times r."""
    r = layer.pixelshuffle_param.upscale_factor
    shape = list(bottoms[0])
    if r < 1:
        raise refuse(layer, f"upscale_factor must be at least 1, got {r}")
    if len(shape) < 3:
        raise refuse(layer, f"needs at least 3 axes, got {bottoms[0]}")
    if shape[1] % r:
        raise refuse(layer, f"channels {shape[1]} not divisible by upscale_factor {r}")
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


def _scaled(layer: LayerLike, size: int, scale: float) -> int:
    """C++'s ``int(size * scale)`` with ``scale`` a float: the product is a float
    (rounded to float32 before the truncation: 10 x 0.7f is 7, not 6)."""
    product = float(size) * float32(scale)
    if not abs(product) < 2**31:  # NaN included: C++'s conversion is undefined there
        raise refuse(layer, f"size {size} times scale {float32(scale)} is not an int")
    return int(float32(product))


def _resize(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
            ) -> LayerCost:
    """``ResizeLayer::LayerSetUp``/``Reshape`` (resize_layer.cpp): ``height`` x ``width``
    (both required) or, ``is_pyramid_test``, the input's size times the scale factors
    (both required; see :func:`_scaled`)."""
    p = layer.resize_param
    b = bottoms[0]
    if p.is_pyramid_test:
        if not (p.HasField("out_height_scale") and p.HasField("out_width_scale")):
            raise refuse(layer, "is_pyramid_test needs out_height_scale and out_width_scale")
        h = _scaled(layer, legacy(b, 2), p.out_height_scale)
        w = _scaled(layer, legacy(b, 3), p.out_width_scale)
    elif not (p.HasField("height") and p.HasField("width")):
        raise refuse(layer, "needs height and width (or is_pyramid_test with scales)")
    else:
        h, w = p.height, p.width
    if h < 0 or w < 0:
        raise refuse(layer, f"output size {h} x {w} is negative")
    return LayerCost([(legacy(b, 0), legacy(b, 1), h, w)])


def _bilinear(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
              ) -> LayerCost:
    """``BilinearInterpolateLayer::LayerSetUp`` (bilinear_interpolate_layer.cpp): to
    ``dst_h`` x ``dst_w`` (a missing one keeps the input's) or, with only
    ``scale_factor``, the input's size times it (see :func:`_scaled`)."""
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
        h, w = _scaled(layer, h, p.scale_factor), _scaled(layer, w, p.scale_factor)
    if h < 0 or w < 0:
        raise refuse(layer, f"output size {h} x {w} is negative")
    return LayerCost([(legacy(b, 0), legacy(b, 1), h, w)])


KINDS = (
    kind("Upsample", _upsample, origin="brocolli", torch="emit_shape:upsample"),
    kind("PixelShuffle", _pixel_shuffle, category=Category.NO_BACKWARD,
         param="pixelshuffle_param", origin="brocolli", torch="emit_resize:pixel_shuffle"),
    # Backward_cpu is an empty body in this build (pad_layer.cpp)
    kind("Pad", _pad, category=Category.NO_BACKWARD | Category.NOT_INPLACE, origin="brocolli",
         torch="emit_shape:pad"),
    kind("Resize", _resize, origin="brocolli", torch="emit_resize:resize"),
    kind("BilinearInterpolate", _bilinear, category=Category.NO_BACKWARD, origin="brocolli",
         torch="emit_resize:bilinear_interpolate"),
)
