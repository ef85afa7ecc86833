"""What every entry of the registry of layer kinds is made of.

A :class:`LayerKind` holds everything pynetbuilder knows about one Caffe layer
type: its shape rule (tops, parameter blobs and MACs from the bottoms' shapes),
its category (data, input, loss, accuracy, in-place capable), its ``*_param``
field, its name in the old ``layers {}`` (V1) format, how a drawing summarises
its settings and the colour it is filled with, and where its PyTorch emitter
lives.  The entries themselves are in the sibling modules, next to their rules;
:mod:`pynetbuilder.kinds` collects them.

Shape rules read a layer through :class:`LayerLike`: a ``caffe_pb2.LayerParameter``
(or anything with its fields) and follow Caffe's C++ ``LayerSetUp``/``Reshape``,
rounding and checks included.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from enum import Flag, auto
from typing import Any, NamedTuple, Protocol

from pynetbuilder.errors import ShapeError

Shape = tuple[int, ...]


class LayerLike(Protocol):
    """The part of a ``caffe_pb2.LayerParameter`` that rules and summaries read: its
    name, type, blobs, ``param`` specs, ``HasField`` and the ``*_param`` messages
    (read as attributes, ``layer.convolution_param``)."""

    name: str
    type: str
    bottom: Sequence[str]
    top: Sequence[str]
    param: Sequence[Any]

    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 - protobuf's name

    def __getattr__(self, field_name: str) -> Any: ...


class ParamBlob(NamedTuple):
    """One parameter blob Caffe allocates: its shape and whether training updates it."""

    shape: Shape
    learnable: bool = True

    @property
    def size(self) -> int:
        """Elements."""
        return math.prod(self.shape)


class LayerCost(NamedTuple):
    """What a rule gives: top shapes, parameter blobs (Caffe's order) and MACs."""

    tops: Sequence[Shape]
    blobs: Sequence[ParamBlob] = ()
    macs: int = 0


class UnknownShapeError(ShapeError):
    """The rule needs information the prototxt does not hold (e.g. a database's image
    size), or the type has no rule: the layer is reported as not analysed."""


Rule = Callable[[LayerLike, list[Shape], "Sequence[Shape] | None"], LayerCost]
Summary = Callable[[LayerLike], str]
# (number of classes, the label ignored or None) of a layer reading class indices, from
# the layer and the shape of its first bottom (the scores)
LabelRule = Callable[[LayerLike, Shape], "tuple[int, int | None]"]


class Category(Flag):
    """What a layer type is, for the consumers that treat types differently."""

    NONE = 0
    INPUT = auto()  # declares a net input (Input)
    DATA = auto()  # produces data (and labels) itself: Data, ImageData, DummyData ...
    LOSS = auto()  # a loss (loss_weight 1 by default; the solver minimises it)
    ACCURACY = auto()  # a score reported in TEST
    INPLACE = auto()  # Caffe computes it correctly with its top equal to its bottom
    # Caffe has no backward pass for it: NOT_IMPLEMENTED aborts, or an empty Backward
    # leaves the input's gradient untouched (this build: PixelShuffle, Pad, HardSwish ...)
    NO_BACKWARD = auto()
    # Caffe aborts when a net's force_backward reaches it: its AllowForceBackward lets
    # force_backward ask for a gradient its Backward refuses (Embed's index input)
    NO_FORCED_BACKWARD = auto()
    NOT_INPLACE = auto()  # Caffe refuses its top equal to its bottom (CHECK_NE in LayerSetUp)


class LayerKind(NamedTuple):
    """One Caffe layer type (see the module's docstring).

    ``param`` is the ``LayerParameter`` field of its settings ("" where it is named
    after the type, ``XParameter`` -> ``x_param``, and resolved by the registry);
    ``source`` the settings field naming the data it reads (data layers) and ``reads``
    what that is (``database``: LMDB or LevelDB by its ``backend``; ``HDF5``: a list of
    HDF5 files; ``IMAGE_LIST``; ``WINDOW_FILE``);
    ``origin`` ``"bvlc"`` for BVLC Caffe's own types, else the project that added
    it (``"brocolli"``: this build's extras, ``"ssd"`` ...); ``torch`` a
    ``"module:function"`` reference to its PyTorch emitter, imported only when a
    module is built; ``labels``, for a layer whose second bottom holds class indices
    (losses, Accuracy), how many classes it has and which label it ignores (Caffe's
    release build reads outside its arrays for a label out of range);
    ``constant_bottoms`` the indices of the bottoms Caffe's backward never
    differentiates (labels, indices, a loss's matrix): their gradient is none.
    """

    type: str
    rule: Rule | None = None
    category: Category = Category.NONE
    param: str = ""
    v1: str = ""
    source: str = ""
    reads: str = ""
    summary: Summary | None = None
    fill: str = ""
    short: str = ""
    origin: str = "bvlc"
    torch: str = ""
    labels: LabelRule | None = None
    constant_bottoms: tuple[int, ...] = ()

    def is_a(self, category: Category) -> bool:
        return bool(self.category & category)


def kind(type_name: str, rule: Rule | None = None, **details: Any) -> LayerKind:
    """A :class:`LayerKind` (keyword arguments as its fields)."""
    return LayerKind(type_name, rule, **details)


# ---------------------------------------------------------------- helpers the rules share


def count(shape: Shape) -> int:
    return math.prod(shape)


def axis_index(axis: int, ndim: int) -> int:
    """A possibly negative axis as an index (Caffe's ``CanonicalAxisIndex``), checked."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"axis {axis} is out of range for a blob of {ndim} axes")
    return axis + ndim if axis < 0 else axis


def legacy(shape: Shape, index: int) -> int:
    """Caffe's ``Blob::LegacyShape``: num/channels/height/width, 1 past the last axis."""
    return shape[index] if index < len(shape) else 1


def float32(value: float) -> float:
    """``value`` rounded to a C float, as Caffe stores it."""
    return struct.unpack("f", struct.pack("f", value))[0]


def declared_tops(
    layer: LayerLike, declared: Sequence[Shape] | None, what: str
) -> list[Shape]:
    """The top shapes given from outside the prototxt (data layers), else unknown."""
    if declared is None or len(declared) < len(layer.top):
        raise UnknownShapeError(
            f"{layer.type} layer {layer.name!r}: the shape of its tops is not in the prototxt "
            f"({what}); give the input shape explicitly"
        )
    return [tuple(s) for s in declared[: len(layer.top)]]


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


def refuse(layer: LayerLike, message: str) -> ShapeError:
    """A :class:`ShapeError` naming the layer (Caffe would refuse it at set-up)."""
    return ShapeError(f"{layer.type} layer {layer.name!r}: {message}")


def same_shape(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """Every top has the first bottom's shape (neuron layers, Softmax, LRN ...)."""
    if not bottoms:
        raise refuse(layer, "needs an input")
    return LayerCost([bottoms[0]] * max(1, len(layer.top)))
