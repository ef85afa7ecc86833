"""Caffe's own schema: the ``caffe_pb2`` module and helpers to fill its messages.

The module is compiled from ``caffe.proto`` of the pinned Caffe source by
``tools/caffe_setup.py schema`` (``make`` runs it) into ``pynetbuilder/proto``.
Every network and solver is written through these classes, so a misspelt field
or a value of the wrong type fails at build time, as protobuf rejects it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

try:
    from pynetbuilder.proto import caffe_pb2
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "pynetbuilder's Caffe schema (pynetbuilder/proto/caffe_pb2.py) is missing: "
        "run `make .venv` or `python tools/caffe_setup.py schema` in the source tree"
    ) from exc

__all__ = ["caffe_pb2", "assign", "instantiate", "to_text", "parse_net"]


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
        else:
            try:
                if repeated:
                    scalar = isinstance(value, str) or not isinstance(value, Sequence)
                    items = [value] if scalar else value
                    getattr(message, key).extend(_enum_value(field, v) for v in items)
                else:
                    setattr(message, key, _enum_value(field, value))
            except (TypeError, ValueError) as exc:
                if isinstance(exc, ValueError) and field.enum_type is not None:
                    raise
                limits = _RANGES.get(field.type)
                raise TypeError(
                    f"{message.DESCRIPTOR.name}.{key} takes {_TYPE_NAMES[field.type]}"
                    f"{' values' if repeated else ''}, not {value!r}"
                    + (f" (from {limits[0]} to {limits[1]})" if limits else "")
                ) from None
    return message


_TYPE_NAMES = {
    FieldDescriptor.TYPE_BOOL: "a bool",
    FieldDescriptor.TYPE_STRING: "a string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_FLOAT: "a number",
    FieldDescriptor.TYPE_DOUBLE: "a number",
    FieldDescriptor.TYPE_ENUM: "an enum name or number",
    FieldDescriptor.TYPE_INT32: "an integer",
    FieldDescriptor.TYPE_INT64: "an integer",
    FieldDescriptor.TYPE_UINT32: "a non-negative integer",
    FieldDescriptor.TYPE_UINT64: "a non-negative integer",
}


_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


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


def instantiate(
    template: Message, name: str, bottoms: Sequence[str], tops: Sequence[str]
) -> Message:
    """A copy of a template layer with its name and blobs filled in."""
    layer = caffe_pb2.LayerParameter()
    layer.CopyFrom(template)
    layer.name = name
    layer.bottom.extend(bottoms)
    del layer.top[:]
    layer.top.extend(tops)
    return layer


def to_text(message: Message) -> str:
    """Protobuf text format, as Caffe reads it."""
    from google.protobuf import text_format

    return text_format.MessageToString(message)


def parse_net(text: str) -> Message:
    """Parse a prototxt into a ``NetParameter`` (:mod:`pynetbuilder.prototext`: protobuf's
    own message and errors, with line and column)."""
    from pynetbuilder import prototext

    return prototext.parse(text, caffe_pb2.NetParameter())
