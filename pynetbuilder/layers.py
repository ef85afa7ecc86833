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


@dataclass(slots=True)
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


def spatial(p: Any, name: str, default: int, nd: int = 2) -> tuple[int, ...]:
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
    kernel = spatial(p, "kernel", 0, nd)
    if 0 in kernel:
        raise ShapeError(f"{layer.type} layer {layer.name!r} has no kernel size")
    n, c = bottom[0], bottom[1]
    if c % p.group or p.num_output % p.group:
        raise ShapeError(
            f"{layer.type} layer {layer.name!r}: group {p.group} must divide both input "
            f"channels {c} and num_output {p.num_output}"
        )
    return _ConvGeometry(
        n, c, bottom[2:], p.num_output, p.group, kernel, spatial(p, "stride", 1, nd),
        spatial(p, "pad", 0, nd), spatial(p, "dilation", 1, nd), p.bias_term,
    )


@rule("Convolution")
def _convolution(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    g = _conv_geometry(layer, bottoms[0])
    out = [
        (size + 2 * pd - (d * (k - 1) + 1)) // s + 1
        for size, k, s, pd, d in zip(g.spatial, g.kernel, g.stride, g.pad, g.dilation)
    ]
    per_output = (g.channels // g.group) * count(g.kernel)  # weights per output channel
    macs = g.n * g.num_output * count(out) * per_output
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
        kh, kw = spatial(p, "kernel", 0)
        if not kh or not kw:
            raise ShapeError(f"Pooling layer {layer.name!r} has no kernel size")
        sh, sw = spatial(p, "stride", 1)
        ph, pw = spatial(p, "pad", 0)
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
        blobs = cost.blobs
        for i in range(min(len(specs), len(blobs))):
            if blobs[i].learnable and specs[i].lr_mult == 0:
                if type(blobs) is not list:
                    blobs = cost.blobs = list(blobs)
                blobs[i] = ParamBlob(blobs[i].shape, False)
    for i, shape in enumerate(cost.tops):
        if shape and min(shape) < 1:
            raise ShapeError(
                f"{layer.type} layer {layer.name!r} gives {layer.top[i]!r} the shape {shape} "
                f"from input {bottoms[0] if bottoms else ()}: the input is too small for the net"
            )
    return cost


# ---------------------------------------------------------------- more layer types
# (each follows the Reshape/LayerSetUp code of the pinned Caffe's src/caffe/layers/*.cpp)


def _legacy(shape: Shape, index: int) -> int:
    """Caffe's ``Blob::LegacyShape``: num/channels/height/width, 1 past the last axis."""
    return shape[index] if index < len(shape) else 1


@rule("Normalize")
def _normalize(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """SSD's L2 normalisation: same shape; one learnt scale per channel (a scalar if
    ``channel_shared``, the default)."""
    bottom = bottoms[0]
    if len(bottom) < 2:
        raise ShapeError(f"Normalize layer {layer.name!r} needs at least 2 axes, got {bottom}")
    shared = layer.norm_param.channel_shared
    return LayerCost([bottom], [ParamBlob(() if shared else (bottom[1],))])


@rule("Permute")
def _permute(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """Axes in ``order``, then the axes it does not name in their order."""
    bottom = bottoms[0]
    order = list(layer.permute_param.order)
    if any(o >= len(bottom) for o in order) or len(set(order)) != len(order):
        raise ShapeError(
            f"Permute layer {layer.name!r}: order {order} must name distinct axes of {bottom}"
        )
    order += [i for i in range(len(bottom)) if i not in order]
    return LayerCost([tuple(bottom[o] for o in order)])


def _float32(value: float) -> float:
    """``value`` rounded to a C float, as Caffe stores it."""
    import struct

    return struct.unpack("f", struct.pack("f", value))[0]


def _prior_count(layer: Any) -> int:
    """Priors per location: aspect ratios (1, each new ratio, its flip) x min sizes,
    plus one per max size (PriorBoxLayer::LayerSetUp)."""
    p = layer.prior_box_param
    if not p.min_size:
        raise ShapeError(f"PriorBox layer {layer.name!r} needs min_size")
    ratios = [1.0]
    for ar in p.aspect_ratio:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if p.flip:
            ratios.append(_float32(1.0 / ar))
    if p.max_size and len(p.max_size) != len(p.min_size):
        raise ShapeError(
            f"PriorBox layer {layer.name!r}: {len(p.max_size)} max_size for "
            f"{len(p.min_size)} min_size"
        )
    return len(ratios) * len(p.min_size) + len(p.max_size)


@rule("PriorBox")
def _prior_box(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """``1 x 2 x (H * W * priors * 4)``: box corners and their variances."""
    f = bottoms[0]
    return LayerCost([(1, 2, _legacy(f, 2) * _legacy(f, 3) * _prior_count(layer) * 4)])


@rule("DetectionOutput")
def _detection_output(
    layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None
) -> LayerCost:
    """``1 x 1 x 1 x 7`` at set-up (one row per kept box after a forward pass)."""
    p = layer.detection_output_param
    loc, conf, prior = bottoms[:3]
    priors = _legacy(prior, 2) // 4
    loc_classes = 1 if p.share_location else p.num_classes
    if loc[0] != conf[0]:
        raise ShapeError(
            f"DetectionOutput layer {layer.name!r}: location and confidence inputs have "
            f"batch {loc[0]} and {conf[0]}"
        )
    if priors * loc_classes * 4 != _legacy(loc, 1):
        raise ShapeError(
            f"DetectionOutput layer {layer.name!r}: {priors} priors need "
            f"{priors * loc_classes * 4} location values per image, got {_legacy(loc, 1)}"
        )
    if priors * p.num_classes != _legacy(conf, 1):
        raise ShapeError(
            f"DetectionOutput layer {layer.name!r}: {priors} priors x {p.num_classes} "
            f"classes need {priors * p.num_classes} confidences per image, "
            f"got {_legacy(conf, 1)}"
        )
    return LayerCost([(1, 1, 1, 7)])


@rule("DetectionEvaluate")
def _detection_evaluate(
    layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None
) -> LayerCost:
    """``1 x 1 x (positive classes + detections) x 5``."""
    p = layer.detection_evaluate_param
    positive = p.num_classes if p.background_label_id == -1 else p.num_classes - 1
    return LayerCost([(1, 1, positive + _legacy(bottoms[0], 2), 5)])


@rule("MultiBoxLoss", "SmoothL1Loss")
def _scalar_loss(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    return LayerCost([()])


@rule("ArgMax")
def _argmax(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.argmax_param
    bottom = bottoms[0]
    if p.HasField("axis"):
        shape = list(bottom)
        shape[_axis(p.axis, len(bottom))] = p.top_k
    else:
        shape = [1] * max(len(bottom), 3)
        shape[0], shape[2] = bottom[0], p.top_k
        if p.out_max_val:
            shape[1] = 2
    return LayerCost([tuple(shape)])


@rule("Tile")
def _tile(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.tile_param
    if p.tiles < 1:
        raise ShapeError(f"Tile layer {layer.name!r} needs a positive number of tiles")
    shape = list(bottoms[0])
    axis = _axis(p.axis, len(shape))
    shape[axis] *= p.tiles
    return LayerCost([tuple(shape)])


@rule("Reduction")
def _reduction(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """Keeps the axes before ``axis`` (a scalar for axis 0)."""
    bottom = bottoms[0]
    return LayerCost([bottom[: _axis(layer.reduction_param.axis, len(bottom))]])


@rule("Embed")
def _embed(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.embed_param
    blobs = [ParamBlob((p.input_dim, p.num_output))]
    if p.bias_term:
        blobs.append(ParamBlob((p.num_output,)))
    return LayerCost([(*bottoms[0], p.num_output)], blobs)


@rule("Upsample")
def _upsample(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """Nearest-neighbour: the last axis (``dims_num`` 3) or last two (4) times ``scale``."""
    p = layer.upsample_param
    if p.dims_num not in (3, 4):
        raise ShapeError(f"Upsample layer {layer.name!r}: dims_num must be 3 or 4")
    shape = list(bottoms[0])
    shape[-1] *= p.scale
    if p.dims_num == 4:
        shape[-2] *= p.scale
    return LayerCost([tuple(shape)])


@rule("PixelShuffle")
def _pixel_shuffle(
    layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None
) -> LayerCost:
    r = layer.pixelshuffle_param.upscale_factor
    shape = list(bottoms[0])
    if r < 1 or shape[1] % r:
        raise ShapeError(
            f"PixelShuffle layer {layer.name!r}: channels {shape[1]} not divisible by "
            f"upscale_factor {r}"
        )
    shape[-3] //= r * r
    shape[-2] *= r
    shape[-1] *= r
    return LayerCost([tuple(shape)])


@rule("Pad")
def _pad(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """Pads the last two axes of a 2-, 3- or 4-axis blob (up/down, left/right)."""
    p = layer.pad_param
    shape = list(bottoms[0])
    if not 2 <= len(shape) <= 4:
        raise ShapeError(f"Pad layer {layer.name!r} takes 2 to 4 axes, got {bottoms[0]}")
    shape[-2] += p.pad_u + p.pad_d
    shape[-1] += p.pad_l + p.pad_r
    return LayerCost([tuple(shape)])


@rule("Resize")
def _resize(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """Bilinear resize to ``height`` x ``width`` or, ``is_pyramid_test``, by scale
    factors (truncated as C++'s ``int()``)."""
    p = layer.resize_param
    n, c = _legacy(bottoms[0], 0), _legacy(bottoms[0], 1)
    if p.is_pyramid_test:
        h = int(_float32(p.out_height_scale) * _legacy(bottoms[0], 2))
        w = int(_float32(p.out_width_scale) * _legacy(bottoms[0], 3))
    else:
        h, w = p.height, p.width
    return LayerCost([(n, c, h, w)])


@rule("BilinearInterpolate")
def _bilinear(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """To ``dst_h`` x ``dst_w`` (a missing one keeps the input's) or, with only
    ``scale_factor``, the input's size times it (truncated)."""
    p = layer.bilinear_interpolate_param
    b = bottoms[0]
    h, w = _legacy(b, 2), _legacy(b, 3)
    sizes = p.HasField("dst_h") or p.HasField("dst_w")
    if sizes == p.HasField("scale_factor"):
        raise ShapeError(
            f"BilinearInterpolate layer {layer.name!r} needs dst_h/dst_w or scale_factor "
            "(one of them; Caffe leaves the size undefined otherwise)"
        )
    if sizes:
        h = p.dst_h if p.HasField("dst_h") else h
        w = p.dst_w if p.HasField("dst_w") else w
    else:
        scale = _float32(p.scale_factor)
        h, w = int(h * scale), int(w * scale)
    return LayerCost([(_legacy(b, 0), _legacy(b, 1), h, w)])


@rule("MaxUnPool")
def _max_unpool(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.max_unpool_param
    n, c = bottoms[0][:2]
    return LayerCost([(n, c, p.dst_h, p.dst_w)])


@rule("Unsqueeze")
def _unsqueeze(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """A 1 inserted before axis ``dim`` (negative counts from the end; at the end the
    pinned Caffe inserts nothing)."""
    bottom = bottoms[0]
    index = layer.unsqueeze_param.dim
    if index < 0:
        index += len(bottom) + 1
    if not 0 <= index <= len(bottom):
        raise ShapeError(f"Unsqueeze layer {layer.name!r}: dim out of range for {bottom}")
    shape: list[int] = []
    for i, d in enumerate(bottom):
        if i == index:
            shape.append(1)
        shape.append(d)
    return LayerCost([tuple(shape)])


@rule("Parameter")
def _parameter(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    """A learnt blob as a top."""
    shape = tuple(int(d) for d in layer.parameter_param.shape.dim)
    return LayerCost([shape], [ParamBlob(shape)])


@rule("BatchReindex")
def _batch_reindex(
    layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None
) -> LayerCost:
    if len(bottoms[1]) != 1:
        raise ShapeError(f"BatchReindex layer {layer.name!r}: the index input must be 1-D")
    return LayerCost([(bottoms[1][0], *bottoms[0][1:])])


@rule("Im2col")
def _im2col(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    p = layer.convolution_param
    bottom = bottoms[0]
    nd = len(bottom) - 2
    kernel = spatial(p, "kernel", 0, nd)
    stride, pad = spatial(p, "stride", 1, nd), spatial(p, "pad", 0, nd)
    dilation = spatial(p, "dilation", 1, nd)
    out = tuple(
        (size + 2 * pd - (d * (k - 1) + 1)) // s + 1
        for size, k, s, pd, d in zip(bottom[2:], kernel, stride, pad, dilation)
    )
    return LayerCost([(bottom[0], bottom[1] * count(kernel), *out)])


def _pooled(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size (ceil, last window starting inside the image)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@rule("SPP")
def _spp(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
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
        oh, ow = _pooled(h, kh, kh, ph), _pooled(w, kw, kw, pw)
        if levels == 1:
            return LayerCost([(n, c, oh, ow)])
        total += c * oh * ow
    return LayerCost([(n, total)])


@rule("PSROIPooling")
def _psroi_pooling(
    layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None
) -> LayerCost:
    """``rois x output_dim x group_size x group_size`` (R-FCN)."""
    p = layer.psroi_pooling_param
    if _legacy(bottoms[0], 1) != p.output_dim * p.group_size**2:
        raise ShapeError(
            f"PSROIPooling layer {layer.name!r}: input channels {_legacy(bottoms[0], 1)} must "
            f"be output_dim x group_size^2 = {p.output_dim * p.group_size**2}"
        )
    return LayerCost([(_legacy(bottoms[1], 0), p.output_dim, p.group_size, p.group_size)])


@rule("HDF5Output")
def _no_tops(layer: Any, bottoms: list[Shape], declared: Sequence[Shape] | None) -> LayerCost:
    return LayerCost([])
