"""The registry of layer kinds: everything pynetbuilder knows about each Caffe layer type.

One :class:`~pynetbuilder.kinds.base.LayerKind` per type holds its shape rule
(tops, parameter blobs, MACs), category, ``*_param`` field, V1 name, drawing
summary and colour, origin (BVLC Caffe, this build's extras, a fork) and a
reference to its PyTorch emitter.  The entries live next to their rules, grouped
by what the layers do:

- :mod:`~pynetbuilder.kinds.data`: Input, data layers, Python layers
- :mod:`~pynetbuilder.kinds.convolution`: Convolution, Deconvolution, InnerProduct ...
- :mod:`~pynetbuilder.kinds.pooling`: Pooling, SPP ...
- :mod:`~pynetbuilder.kinds.elementwise`: BatchNorm, Scale, activations, LRN, Softmax ...
- :mod:`~pynetbuilder.kinds.structure`: Eltwise, Concat, Slice, Reshape, Crop ...
- :mod:`~pynetbuilder.kinds.resize`: Upsample, Pad, Resize ...
- :mod:`~pynetbuilder.kinds.recurrent`: RNN, LSTM, LSTMUnit
- :mod:`~pynetbuilder.kinds.detection`: SSD's PriorBox, DetectionOutput ...
- :mod:`~pynetbuilder.kinds.outputs`: losses, Accuracy
- :mod:`~pynetbuilder.kinds.forks`: the forks' types (SegNet, PSPNet, ShuffleNet ...)

Adding a layer type is one ``kind(...)`` entry in the module it belongs to (with
its rule and summary beside it) plus its tests against real Caffe.  Every consumer
(the inference engine, drawings, the HTML report, training, the V1 upgrade, the
schema's parameter fields) asks this registry: :func:`kind_of`, :func:`types_with`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from types import MappingProxyType

from pynetbuilder.errors import ShapeError
from pynetbuilder.kinds import (
    convolution,
    data,
    detection,
    elementwise,
    forks,
    outputs,
    pooling,
    recurrent,
    resize,
    structure,
)
from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerKind,
    LayerLike,
    ParamBlob,
    Shape,
    UnknownShapeError,
)
from pynetbuilder.schema import caffe_pb2

__all__ = [
    "KINDS", "Category", "LayerCost", "LayerKind", "LayerLike", "ParamBlob", "Shape",
    "UnknownShapeError", "apply_rule", "check_blob_size", "kind_of", "param_field",
    "types_with", "v1_type",
]

_MODULES = (data, convolution, pooling, elementwise, structure, resize, recurrent, detection,
            outputs, forks)


def _collect() -> MappingProxyType[str, LayerKind]:
    found: dict[str, LayerKind] = {}
    for module in _MODULES:
        for entry in module.KINDS:
            if entry.type in found:
                raise RuntimeError(f"layer type {entry.type!r} is registered twice")
            found[entry.type] = entry
    return MappingProxyType(found)


KINDS = _collect()  # type name -> its entry (read-only)


def kind_of(layer_type: str) -> LayerKind:
    """The entry of ``layer_type``; a type nobody registered gets an entry without a
    rule (it is reported as not analysed, never a crash)."""
    found = KINDS.get(layer_type)
    return found if found is not None else LayerKind(layer_type)


@cache
def types_with(category: Category) -> frozenset[str]:
    """The registered types in ``category`` (any of its flags)."""
    return frozenset(t for t, k in KINDS.items() if k.category & category)


@cache
def _named_param_fields() -> dict[str, str]:
    """``XParameter`` message name -> its ``LayerParameter`` field."""
    fields = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.message_type is not None and field.name.endswith("_param"):
            fields.setdefault(field.message_type.name, field.name)
    return fields


def param_field(layer_type: str) -> str | None:
    """The ``LayerParameter`` field holding a layer type's settings, if it has one: the
    entry's ``param``, else the field of message ``<Type>Parameter``."""
    entry = KINDS.get(layer_type)
    if entry is not None and entry.param:
        return entry.param
    return _named_param_fields().get(f"{layer_type}Parameter")


@cache
def _v1_types() -> dict[str, str]:
    return {k.v1: t for t, k in KINDS.items() if k.v1}


def v1_type(v1_name: str) -> str | None:
    """The type Caffe's ``UpgradeV1LayerType`` gives a V1 ``LayerType`` name."""
    return _v1_types().get(v1_name)


INT_MAX = 2**31 - 1


def check_blob_size(shape: Shape, what: str) -> None:
    """Caffe's ``Blob::Reshape`` check: at most ``INT_MAX`` elements."""
    total = 1
    for d in shape:
        total *= d
    if total > INT_MAX:
        raise ShapeError(f"{what}: a blob of shape {tuple(shape)} has {total:,} elements; "
                         f"Caffe's blobs hold at most {INT_MAX:,} (INT_MAX)")


def apply_rule(
    layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None = None
) -> LayerCost:
    """Infer tops, parameter blobs and MACs of one layer; check no shape collapsed.

    Raises :class:`UnknownShapeError` for a type without a rule (or a rule that
    needs what the prototxt does not hold) and :class:`~pynetbuilder.errors.ShapeError`
    for a layer Caffe would refuse.
    """
    entry = KINDS.get(layer.type)
    if entry is None or entry.rule is None:
        raise UnknownShapeError(f"layer {layer.name!r}: no shape rule for type {layer.type!r}")
    cost = entry.rule(layer, bottoms, declared)
    specs = layer.param
    if specs and cost.blobs:  # a blob whose ParamSpec says lr_mult: 0 is fixed, not learnt
        blobs = list(cost.blobs)
        for i in range(min(len(specs), len(blobs))):
            if blobs[i].learnable and specs[i].lr_mult == 0:
                blobs[i] = ParamBlob(blobs[i].shape, False)
        cost = cost._replace(blobs=blobs)
    for i, shape in enumerate(cost.tops):
        check_blob_size(shape, f"{layer.type} layer {layer.name!r}")
        if shape and min(shape) < 1:
            raise ShapeError(
                f"{layer.type} layer {layer.name!r} gives {layer.top[i]!r} the shape {shape} "
                f"from input {bottoms[0] if bottoms else ()}: the input is too small for the net"
            )
    return cost
