"""Shape and cost rules, one function per Caffe layer type.

Each rule takes the ``LayerParameter`` and the shapes of its bottoms and returns
the shapes of its tops, the parameter blobs Caffe allocates for it (in Caffe's
order, with their exact shapes) and its multiply-accumulates.  The rules follow
Caffe's C++ ``Reshape``/``LayerSetUp`` code, rounding included: convolution
floors, pooling ceils (and drops a last window that would start in the padding).

Conventions (see README "Conventions"):
- ``macs`` counts multiply-accumulates of Convolution, Deconvolution and
  InnerProduct only; every other layer has 0.
- a parameter blob is learnable unless it holds BatchNorm statistics
  (mean, variance, moving-average factor) or its ``param { lr_mult: 0 }`` fixes
  it (a fixed blur or space-to-depth convolution); Caffe never updates those.

Adding a layer type is one function decorated with ``@rule("Type")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pynetbuilder.errors import ShapeError

Shape = tuple[int, ...]


class ParamBlob(NamedTuple):
    """One parameter blob Caffe allocates: its shape and whether training updates it."""

    shape: Shape
    learnable: bool = True

    @property
    def size(self) -> int:
        """Elements."""
        return math.prod(self.shape)


@dataclass
class LayerCost:
    tops: list[Shape]
    blobs: list[ParamBlob] = field(default_factory=list)
    macs: int = 0


class UnknownShapeError(ShapeError):
    """The rule needs information the prototxt does not hold (e.g. a database's image size)."""


Rule = Callable[[Any, list[Shape], "Sequence[Shape] | None"], LayerCost]
RULES: dict[str, Rule] = {}


def rule(*types: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for t in types:
            RULES[t] = fn
        return fn

    return register


def count(shape: Shape) -> int:
    return math.prod(shape)


def _axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


# ---------------------------------------------------------------- data / input


def _declared(layer: Any, declared: Sequence[Shape] | None, what: str) -> list[Shape]:
    if declared is None or len(declared) < len(layer.top):
        raise UnknownShapeError(
            f"{layer.type} layer {layer.name!r}: the shape of its tops is not in the prototxt "
            f"({what}); give the input shape explicitly"
        )
    return [tuple(s) for s in declared[: len(layer.top)]]


@rule("Input")
def _input(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    if not shapes:
        return LayerCost(_declared(layer, declared, "Input layer without shape"))
    if len(shapes) == 1:
        shapes = shapes * len(layer.top)
    if len(shapes) != len(layer.top):
        raise ShapeError(
            f"Input layer {layer.name!r} has {len(layer.top)} tops but {len(shapes)} shapes"
        )
    return LayerCost(shapes)


@rule("DummyData")
def _dummy(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.dummy_data_param
    if p.shape:
        shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
    else:
        shapes = [tuple(int(x) for x in dims) for dims in zip(p.num, p.channels, p.height, p.width)]
    if len(shapes) == 1:
        shapes = shapes * len(layer.top)
    return LayerCost(shapes)


@rule("MemoryData")
def _memory(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.memory_data_param
    n = p.batch_size
    c, h, w = p.channels, p.height, p.width
    crop = layer.transform_param.crop_size
    if crop:
        h = w = crop
    tops = [(n, c, h, w), (n,)]
    return LayerCost(tops[: len(layer.top)])


@rule("Data", "ImageData", "HDF5Data", "WindowData", "AnnotatedData", "Python")
def _external(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    return LayerCost(_declared(layer, declared, "it depends on the data it reads"))


# ---------------------------------------------------------------- convolution


# (field for height, field for width, field for one value) per geometry name
_SPATIAL_FIELDS = {
    "kernel": ("kernel_h", "kernel_w", "kernel_size"),
    "stride": ("stride_h", "stride_w", "stride"),
    "pad": ("pad_h", "pad_w", "pad"),
    "dilation": (None, None, "dilation"),
}


def _spatial(p: Any, name: str, default: int, nd: int = 2) -> tuple[int, ...]:
    """Caffe's kernel/stride/pad/dilation lookup: ``x_h``/``x_w``, else ``x`` (repeated or not)."""
    h_field, w_field, field_name = _SPATIAL_FIELDS[name]
    if h_field is not None and (p.HasField(h_field) or p.HasField(w_field)):
        return (getattr(p, h_field), getattr(p, w_field))
    value = getattr(p, field_name)
    if isinstance(value, int):  # pooling's singular fields
        return (value,) * nd if p.HasField(field_name) else (default,) * nd
    n = len(value)
    if n == 1:
        return (value[0],) * nd
    return tuple(value) if n else (default,) * nd


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


def _conv_geometry(layer: Any, bottom: Shape) -> _ConvGeometry:
    """What Convolution and Deconvolution share: geometry and the group check."""
    p = layer.convolution_param
    nd = len(bottom) - 2
    if nd < 1:
        raise ShapeError(
            f"{layer.type} layer {layer.name!r} needs an N,C,spatial input, got {bottom}"
        )
    kernel = _spatial(p, "kernel", 0, nd)
    if 0 in kernel:
        raise ShapeError(f"{layer.type} layer {layer.name!r} has no kernel size")
    n, c = bottom[0], bottom[1]
    if c % p.group or p.num_output % p.group:
        raise ShapeError(
            f"{layer.type} layer {layer.name!r}: group {p.group} must divide both input "
            f"channels {c} and num_output {p.num_output}"
        )
    return _ConvGeometry(
        n, c, bottom[2:], p.num_output, p.group, kernel, _spatial(p, "stride", 1, nd),
        _spatial(p, "pad", 0, nd), _spatial(p, "dilation", 1, nd), p.bias_term,
    )


@rule("Convolution")
def _convolution(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    g = _conv_geometry(layer, bottoms[0])
    out = tuple(
        (size + 2 * pd - (d * (k - 1) + 1)) // s + 1
        for size, k, s, pd, d in zip(g.spatial, g.kernel, g.stride, g.pad, g.dilation)
    )
    macs = g.n * g.num_output * count(out) * (g.channels // g.group) * count(g.kernel)
    blobs = g.blobs((g.num_output, g.channels // g.group, *g.kernel))
    return LayerCost([(g.n, g.num_output, *out)] * len(layer.top), blobs, macs * len(bottoms))


@rule("Deconvolution")
def _deconvolution(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    g = _conv_geometry(layer, bottoms[0])
    out = tuple(
        s * (size - 1) + d * (k - 1) + 1 - 2 * pd
        for size, k, s, pd, d in zip(g.spatial, g.kernel, g.stride, g.pad, g.dilation)
    )
    macs = g.n * g.channels * count(g.spatial) * (g.num_output // g.group) * count(g.kernel)
    blobs = g.blobs((g.channels, g.num_output // g.group, *g.kernel))
    return LayerCost([(g.n, g.num_output, *out)] * len(layer.top), blobs, macs * len(bottoms))


@rule("InnerProduct")
def _inner_product(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.inner_product_param
    bottom = bottoms[0]
    axis = _axis(p.axis, len(bottom))
    m, k = count(bottom[:axis]), count(bottom[axis:])
    weight = (k, p.num_output) if p.transpose else (p.num_output, k)
    blobs = [ParamBlob(weight)]
    if p.bias_term:
        blobs.append(ParamBlob((p.num_output,)))
    return LayerCost([(*bottom[:axis], p.num_output)], blobs, m * k * p.num_output)


# ---------------------------------------------------------------- pooling


@rule("Pooling")
def _pooling(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.pooling_param
    n, c, h, w = bottoms[0]
    if p.global_pooling:
        out_h = out_w = 1
    else:
        kh, kw = _spatial(p, "kernel", 0)
        if not kh or not kw:
            raise ShapeError(f"Pooling layer {layer.name!r} has no kernel size")
        sh, sw = _spatial(p, "stride", 1)
        ph, pw = _spatial(p, "pad", 0)
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


# ---------------------------------------------------------------- normalisation


@rule("BatchNorm")
def _batch_norm(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    c = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    blobs = [ParamBlob((c,), False), ParamBlob((c,), False), ParamBlob((1,), False)]
    return LayerCost([bottoms[0]], blobs)


def _scale_shape(layer: Any, bottom: Shape, axis: int, num_axes: int) -> Shape:
    axis = _axis(axis, len(bottom))
    if num_axes == -1:
        return bottom[axis:]
    if axis + num_axes > len(bottom):
        raise ShapeError(
            f"{layer.type} layer {layer.name!r}: axis {axis} + num_axes {num_axes} exceeds "
            f"the {len(bottom)} axes of its input {bottom}"
        )
    return bottom[axis : axis + num_axes]


@rule("Scale")
def _scale(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.scale_param
    if len(bottoms) > 1:
        shape = bottoms[1]
        _check_span(layer, bottoms[0], shape, p.axis)
        blobs = []
    else:
        shape = _scale_shape(layer, bottoms[0], p.axis, p.num_axes)
        blobs = [ParamBlob(shape)]
    if p.bias_term:
        blobs.append(ParamBlob(shape))
    return LayerCost([bottoms[0]], blobs)


def _check_span(layer: Any, data: Shape, scale: Shape, axis: int) -> None:
    axis = _axis(axis, len(data))
    if tuple(data[axis : axis + len(scale)]) != tuple(scale):
        raise ShapeError(
            f"{layer.type} layer {layer.name!r}: second input {scale} must match input axes "
            f"{axis}.. of {data}"
        )


@rule("Bias")
def _bias(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.bias_param
    if len(bottoms) > 1:
        _check_span(layer, bottoms[0], bottoms[1], p.axis)
        return LayerCost([bottoms[0]])
    return LayerCost([bottoms[0]], [ParamBlob(_scale_shape(layer, bottoms[0], p.axis, p.num_axes))])


@rule("PReLU")
def _prelu(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    shared = layer.prelu_param.channel_shared
    c = 1 if shared else bottoms[0][1]
    return LayerCost([bottoms[0]], [ParamBlob((c,) if not shared else ())])


@rule(
    "ReLU",
    "Sigmoid",
    "TanH",
    "ELU",
    "Dropout",
    "Power",
    "AbsVal",
    "BNLL",
    "Exp",
    "Log",
    "Threshold",
    "LRN",
    "MVN",
    "Softmax",
    "Clip",
    "Swish",
    "ReLU6",
    "HardSwish",
    "HardSigmoid",
)
def _same_shape(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    return LayerCost([bottoms[0]] * max(1, len(layer.top)))


# ---------------------------------------------------------------- combining


@rule("Eltwise")
def _eltwise(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.eltwise_param
    for other in bottoms[1:]:
        if other != bottoms[0]:
            raise ShapeError(
                f"Eltwise layer {layer.name!r} needs inputs of one shape, got "
                + ", ".join(str(b) for b in bottoms)
            )
    if p.coeff and len(p.coeff) != len(bottoms):
        raise ShapeError(
            f"Eltwise layer {layer.name!r} has {len(p.coeff)} coefficients for "
            f"{len(bottoms)} inputs"
        )
    return LayerCost([bottoms[0]])


@rule("Concat")
def _concat(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis
    axis = _axis(axis, len(bottoms[0]))
    first = bottoms[0]
    total = 0
    for b in bottoms:
        if len(b) != len(first) or any(b[i] != first[i] for i in range(len(first)) if i != axis):
            raise ShapeError(
                f"Concat layer {layer.name!r}: inputs must agree except on axis {axis}, got "
                + ", ".join(str(x) for x in bottoms)
            )
        total += b[axis]
    return LayerCost([(*first[:axis], total, *first[axis + 1 :])])


@rule("Slice")
def _slice(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.slice_param
    bottom = bottoms[0]
    axis = _axis(p.slice_dim if p.HasField("slice_dim") else p.axis, len(bottom))
    size, n = bottom[axis], len(layer.top)
    if p.slice_point:
        points = [0, *p.slice_point, size]
        if len(points) != n + 1 or points != sorted(points):
            raise ShapeError(f"Slice layer {layer.name!r}: slice_point does not fit {n} tops")
        sizes = [b - a for a, b in zip(points, points[1:])]
    else:
        if size % n:
            raise ShapeError(f"Slice layer {layer.name!r}: axis size {size} not divisible by {n}")
        sizes = [size // n] * n
    return LayerCost([(*bottom[:axis], s, *bottom[axis + 1 :]) for s in sizes])


@rule("Split")
def _split(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    return LayerCost([bottoms[0]] * len(layer.top))


@rule("Flatten")
def _flatten(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.flatten_param
    b = bottoms[0]
    start, end = _axis(p.axis, len(b)), _axis(p.end_axis, len(b))
    return LayerCost([(*b[:start], count(b[start : end + 1]), *b[end + 1 :])])


@rule("Reshape")
def _reshape(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.reshape_param
    b = bottoms[0]
    start = _axis(p.axis, len(b) + 1) if p.axis < 0 else p.axis
    end = len(b) if p.num_axes == -1 else start + p.num_axes
    dims = [b[start + i] if d == 0 else d for i, d in enumerate(p.shape.dim)]
    new = [*b[:start], *dims, *b[end:]]
    if new.count(-1) > 1:
        raise ShapeError(f"Reshape layer {layer.name!r}: at most one -1 dimension")
    if -1 in new:
        known = count(tuple(d for d in new if d != -1))
        new[new.index(-1)] = count(b) // known if known else 0
    if count(tuple(new)) != count(b):
        raise ShapeError(f"Reshape layer {layer.name!r}: {b} cannot become {tuple(new)}")
    return LayerCost([tuple(new)])


@rule("Crop")
def _crop(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    axis = _axis(layer.crop_param.axis, len(bottoms[0]))
    a, ref = bottoms[0], bottoms[1]
    return LayerCost([(*a[:axis], *ref[axis:])])


# Python layers shipped in pynetbuilder.caffe_layers whose shapes follow from their bottoms.
_SAME_SHAPE_PYTHON_LAYERS = frozenset({("pynetbuilder.caffe_layers.shake_shake", "ShakeShake")})


@rule("Python")  # replaces the declared-shapes rule above for "Python", then falls back to it
def _python(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """pynetbuilder's own Python layers by their shape; any other from its declared shapes.

    ``ShakeShake`` mixes two bottoms of one shape into a top of that shape.
    """
    p = layer.python_param
    if (p.module, p.layer) not in _SAME_SHAPE_PYTHON_LAYERS:
        return _external(layer, bottoms, declared)
    if len(bottoms) != 2 or bottoms[0] != bottoms[1]:
        raise ShapeError(
            f"Python layer {layer.name!r} ({p.layer}) needs two inputs of one shape, got "
            + ", ".join(str(b) for b in bottoms)
        )
    return LayerCost([bottoms[0]])


# ---------------------------------------------------------------- losses / outputs


@rule(
    "SoftmaxWithLoss",
    "EuclideanLoss",
    "SigmoidCrossEntropyLoss",
    "HingeLoss",
    "MultinomialLogisticLoss",
    "InfogainLoss",
    "ContrastiveLoss",
)
def _loss(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    tops: list[Shape] = [()]
    if len(layer.top) > 1:  # SoftmaxWithLoss may also output the probabilities
        tops.append(bottoms[0])
    return LayerCost(tops)


@rule("Accuracy")
def _accuracy(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    tops: list[Shape] = [()]
    if len(layer.top) > 1:
        axis = _axis(layer.accuracy_param.axis, len(bottoms[0]))
        tops.append((bottoms[0][axis],))
    return LayerCost(tops)


@rule("Silence")
def _silence(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    return LayerCost([])


def apply_rule(
    layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None = None
) -> LayerCost:
    """Infer tops, parameter blobs and MACs of one layer; check no shape collapsed."""
    fn = RULES.get(layer.type)
    if fn is None:
        raise UnknownShapeError(f"layer {layer.name!r}: no shape rule for type {layer.type!r}")
    cost = fn(layer, bottoms, declared)
    specs = layer.param
    if specs:  # a blob whose ParamSpec says lr_mult: 0 is fixed, not learnt
        cost.blobs = [
            ParamBlob(b.shape, False) if b.learnable and i < len(specs) and
            specs[i].lr_mult == 0 else b
            for i, b in enumerate(cost.blobs)
        ]
    for top_name, shape in zip(layer.top, cost.tops):
        if shape and min(shape) < 1:
            raise ShapeError(
                f"{layer.type} layer {layer.name!r} gives {top_name!r} the shape {shape} "
                f"from input {bottoms[0] if bottoms else ()}: the input is too small for the net"
            )
    return cost
