"""Layer kinds that keep their input's shape: normalisation, scaling, activations."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    ParamBlob,
    Shape,
    axis_index,
    kind,
    refuse,
    same_shape,
)

PINK = "#f4cccc"
_INPLACE = Category.INPLACE


def _batch_norm(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                ) -> LayerCost:
    c = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    blobs = [ParamBlob((c,), False), ParamBlob((c,), False), ParamBlob((1,), False)]
    return LayerCost([bottoms[0]], blobs)


def _span(layer: LayerLike, bottom: Shape, axis: int, num_axes: int) -> Shape:
    axis = axis_index(axis, len(bottom)) if bottom else axis
    if num_axes == -1:
        return bottom[axis:]
    if num_axes < -1:
        raise refuse(layer, f"num_axes must be non-negative or -1, got {num_axes}")
    if axis + num_axes > len(bottom):
        raise refuse(layer, f"axis {axis} + num_axes {num_axes} exceeds the {len(bottom)} "
                            f"axes of its input {bottom}")
    return bottom[axis : axis + num_axes]


def _check_span(layer: LayerLike, data: Shape, scale: Shape, axis: int) -> None:
    axis = axis_index(axis, len(data))
    if tuple(data[axis : axis + len(scale)]) != tuple(scale):
        raise refuse(layer, f"second input {scale} must match input axes {axis}.. of {data}")


def _scale(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    p = layer.scale_param
    if len(bottoms) > 1:
        shape = bottoms[1]
        _check_span(layer, bottoms[0], shape, p.axis)
        blobs = []
    else:
        shape = _span(layer, bottoms[0], p.axis, p.num_axes)
        blobs = [ParamBlob(shape)]
    if p.bias_term:
        blobs.append(ParamBlob(shape))
    return LayerCost([bottoms[0]], blobs)


def _bias(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
          ) -> LayerCost:
    p = layer.bias_param
    if len(bottoms) > 1:
        _check_span(layer, bottoms[0], bottoms[1], p.axis)
        return LayerCost([bottoms[0]])
    return LayerCost([bottoms[0]], [ParamBlob(_span(layer, bottoms[0], p.axis, p.num_axes))])


def _prelu(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    shared = layer.prelu_param.channel_shared
    if len(bottoms[0]) < 2:
        raise refuse(layer, f"needs at least 2 axes, got {bottoms[0]}")
    c = 1 if shared else bottoms[0][1]
    return LayerCost([bottoms[0]], [ParamBlob((c,) if not shared else ())])


def _normalize(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """SSD's L2 normalisation: same shape; one learnt scale per channel (a scalar if
    ``channel_shared``, the default)."""
    bottom = bottoms[0]
    if len(bottom) < 2:
        raise refuse(layer, f"needs at least 2 axes, got {bottom}")
    shared = layer.norm_param.channel_shared
    return LayerCost([bottom], [ParamBlob(() if shared else (bottom[1],))])


def _lrn(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
         ) -> LayerCost:
    size = layer.lrn_param.local_size
    if size % 2 == 0:
        raise refuse(layer, f"local_size must be odd, got {size}")
    if len(bottoms[0]) != 4:
        raise refuse(layer, f"needs a 4-axis N,C,H,W input, got {bottoms[0]}")
    return same_shape(layer, bottoms, declared)


def _softmax(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    axis_index(layer.softmax_param.axis, len(bottoms[0]))
    return same_shape(layer, bottoms, declared)


def _relu_summary(layer: LayerLike) -> str:
    slope = layer.relu_param.negative_slope
    return f"slope {slope:g}" if slope else ""


def _axis_summary(field_name: str, default: int = 1):  # noqa: ANN202 - a summary function
    def summary(layer: LayerLike) -> str:
        p = getattr(layer, field_name)
        return "" if p.axis == default else f"axis {p.axis}"

    return summary


def _neuron(type_name: str, v1: str = "", extra: Category = Category.NONE,  # noqa: ANN202
            inplace: Category = _INPLACE, **details: object):
    return kind(type_name, same_shape, category=inplace | extra, v1=v1, **details)


KINDS = (
    kind("BatchNorm", _batch_norm, category=_INPLACE, short="BN", torch="emit_norm:batch_norm"),
    kind("Scale", _scale, category=_INPLACE, torch="emit_norm:scale"),
    kind("Bias", _bias, category=_INPLACE, torch="emit_norm:bias"),
    kind("PReLU", _prelu, category=_INPLACE, torch="emit_neuron:prelu"),
    kind("Normalize", _normalize, param="norm_param", origin="ssd", torch="emit_norm:normalize"),
    kind("LRN", _lrn, v1="LRN",
         summary=lambda layer: f"size {layer.lrn_param.local_size}", torch="emit_norm:lrn"),
    kind("MVN", same_shape, v1="MVN", torch="emit_norm:mvn"),
    kind("Softmax", _softmax, v1="SOFTMAX", summary=_axis_summary("softmax_param"),
         fill=PINK, torch="emit_shape:softmax"),
    _neuron("ReLU", "RELU", summary=_relu_summary, torch="emit_neuron:relu"),
    _neuron("Sigmoid", "SIGMOID", torch="emit_neuron:sigmoid"),
    _neuron("TanH", "TANH", torch="emit_neuron:tanh"),
    _neuron("ELU", torch="emit_neuron:elu"),
    _neuron("Dropout", "DROPOUT",
            summary=lambda layer: f"{layer.dropout_param.dropout_ratio:g}",
                 torch="emit_neuron:dropout"),
    _neuron("Power", "POWER", torch="emit_neuron:power"),
    # absval_layer.cpp LayerSetUp: CHECK_NE(top[0], bottom[0]), no in-place computation
    _neuron("AbsVal", "ABSVAL", inplace=Category.NOT_INPLACE, torch="emit_neuron:absval"),
    _neuron("BNLL", "BNLL", torch="emit_neuron:bnll"),
    _neuron("Exp", "EXP", torch="emit_neuron:exp"),
    _neuron("Log", torch="emit_neuron:log"),
    _neuron("Threshold", "THRESHOLD", extra=Category.NO_BACKWARD,
            torch="emit_neuron:threshold"),
    _neuron("Clip"),  # BVLC master's; not in the pinned build
    _neuron("Swish"),  # BVLC master's; not in the pinned build
    _neuron("ReLU6", origin="brocolli", param="relu6_param", torch="emit_neuron:relu6"),
    # this build's Backward_cpu of both is an empty body (hardswish_layer.hpp ...)
    _neuron("HardSwish", origin="brocolli", extra=Category.NO_BACKWARD,
            torch="emit_neuron:hardswish"),
    _neuron("HardSigmoid", origin="brocolli", extra=Category.NO_BACKWARD,
            torch="emit_neuron:hardsigmoid"),
)
