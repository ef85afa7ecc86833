"""Caffe's own schema: the ``caffe_pb2`` module and helpers to fill its messages.

The module is compiled from ``caffe.proto`` of the pinned Caffe source by
``tools/caffe_setup.py schema`` (``make`` runs it) into ``pynetbuilder/proto``.
Every network and solver is written through these classes, so a misspelt field
or a value of the wrong type fails at build time, as protobuf rejects it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

try:
    from pynetbuilder.proto import caffe_pb2
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "pynetbuilder's Caffe schema (pynetbuilder/proto/caffe_pb2.py) is missing: "
        "run `make .venv` or `python tools/caffe_setup.py schema` in the source tree"
    ) from exc

__all__ = ["caffe_pb2", "assign", "param_field", "layer_parameter", "to_text", "parse_net"]


@cache
def _param_fields() -> dict[str, str]:
    """Map a ``XParameter`` message name to its field in ``LayerParameter``."""
    fields = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.message_type is not None and field.name.endswith("_param"):
            fields.setdefault(field.message_type.name, field.name)
    return fields


# Layer types whose parameters live in a message not named after the type.
_PARAM_ALIASES = {
    "SoftmaxWithLoss": "softmax_param",
    "Deconvolution": "convolution_param",
    "Input": "input_param",
    "ImageData": "image_data_param",
    "HDF5Data": "hdf5_data_param",
    "MemoryData": "memory_data_param",
}


def param_field(layer_type: str) -> str | None:
    """The ``LayerParameter`` field holding a layer type's parameters, if any."""
    if layer_type in _PARAM_ALIASES:
        return _PARAM_ALIASES[layer_type]
    return _param_fields().get(f"{layer_type}Parameter")


def assign(message: Message, values: Mapping[str, Any]) -> Message:
    """Set fields of ``message`` from a (nested) mapping; protobuf checks names and types."""
    for key, value in values.items():
        try:
            field = message.DESCRIPTOR.fields_by_name[key]
        except KeyError:
            allowed = ", ".join(sorted(message.DESCRIPTOR.fields_by_name))
            raise AttributeError(
                f"{message.DESCRIPTOR.name} has no field {key!r}; its fields are: {allowed}"
            ) from None
        repeated = field.is_repeated
        if field.message_type is not None:
            target = getattr(message, key)
            if repeated:
                items = value if isinstance(value, Sequence) else [value]
                for item in items:
                    _assign_message(target.add(), item)
            else:
                _assign_message(target, value)
        elif repeated:
            items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
            getattr(message, key).extend(_enum_value(field, v) for v in items)
        else:
            setattr(message, key, _enum_value(field, value))
    return message


def _assign_message(target: Message, value: Any) -> None:
    if isinstance(value, Message):
        target.CopyFrom(value)
    else:
        assign(target, value)


def _enum_value(field: FieldDescriptor, value: Any) -> Any:
    if field.enum_type is not None and isinstance(value, str):
        try:
            return field.enum_type.values_by_name[value].number
        except KeyError:
            allowed = ", ".join(field.enum_type.values_by_name)
            raise ValueError(f"{field.name} must be one of {allowed}, not {value!r}") from None
    return value


def layer_parameter(
    layer_type: str,
    name: str,
    bottoms: Sequence[str],
    tops: Sequence[str],
    params: Mapping[str, Any] | None = None,
) -> Message:
    """Build a ``LayerParameter`` the way Caffe's net_spec does.

    A key of ``params`` that names a ``LayerParameter`` field (``param``,
    ``transform_param``, ``loss_weight`` ...) is set there; every other key goes
    into the type's own parameter message (``convolution_param`` for
    ``Convolution``), where protobuf rejects a misspelt one.
    """
    layer = caffe_pb2.LayerParameter(name=name, type=layer_type)
    layer.bottom.extend(bottoms)
    layer.top.extend(tops)
    top_level = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    own: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if key in top_level:
            assign(layer, {key: value})
        else:
            own[key] = value
    if own:
        field = param_field(layer_type)
        if field is None:
            raise AttributeError(
                f"layer type {layer_type!r} has no parameter message; "
                f"unexpected arguments: {', '.join(sorted(own))}"
            )
        assign(getattr(layer, field), own)
    return layer


def to_text(message: Message) -> str:
    """Protobuf text format, as Caffe reads it."""
    return text_format.MessageToString(message)


def parse_net(text: str) -> Message:
    """Parse a prototxt into a ``NetParameter`` (protobuf reports line and column)."""
    net = caffe_pb2.NetParameter()
    text_format.Parse(text, net)
    return net
