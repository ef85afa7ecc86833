"""Plain-data views of Caffe messages: what the shape rules read while a net is built.

A layer setting arrives as plain data (``{"num_output": 64, "kernel_size": 3, ...}``).
:func:`view` checks it against Caffe's schema and returns a :class:`MessageView`:
an object whose attributes are the message's field values (the schema's defaults
for fields not set) and whose ``HasField`` says which were set.  That is the part
of a protobuf message's interface the rules in :mod:`pynetbuilder.layers` use, so
the same rules read views while a net is built and real messages when a prototxt
is analysed.  Reading a view costs a Python attribute lookup; building a protobuf
message and reading it costs several times more (every first read of a fresh
message's sub-message or repeated field makes a wrapper object).

A view holds what the message would hold: enum names become their numbers, a
scalar given for a repeated field becomes a one-element tuple, ``float`` fields are
rounded to 32 bits.  :func:`message_args` turns a view back into constructor
arguments, so the protobuf message is built from the view, not from data the caller
may have changed since.

:func:`view` returns ``None`` for anything it cannot vouch for (an unknown field, a
value of a type or range it does not accept, a message instance of another type):
the caller then builds the real message, which either takes the value or names
exactly what is wrong.  So a view never accepts what protobuf would refuse.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, NamedTuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["MessageView", "view", "message_args"]

_C = FieldDescriptor
_INT_RANGES = {
    _C.CPPTYPE_INT32: (-(2**31), 2**31),
    _C.CPPTYPE_INT64: (-(2**63), 2**63),
    _C.CPPTYPE_UINT32: (0, 2**32),
    _C.CPPTYPE_UINT64: (0, 2**64),
}
_FLOAT32 = struct.Struct("<f")
_set_attribute = object.__setattr__  # views refuse assignment; their builder uses this


class MessageView:
    """Read-only field values of one message (see the module's docstring).  Unset
    fields read as the class attributes: the schema's defaults."""

    DESCRIPTOR: Descriptor  # set on each message type's class

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's name
        return name in self.__dict__

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{self.DESCRIPTOR.name} view is read-only (field {name!r})")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{self.DESCRIPTOR.name}View({fields})"


class _Field(NamedTuple):
    repeated: bool
    convert: Callable[[Any], Any]  # a value as the message holds it; raises _RefusedError


class _EmptyMessage:
    """Class attribute of a message field: an empty view of its type, made on first read."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor

    def __get__(self, instance: object, owner: type) -> MessageView:
        return _empty(self.descriptor)


@cache
def _empty(descriptor: Descriptor) -> MessageView:
    return object.__new__(_view_class(descriptor))


@cache
def _view_class(descriptor: Descriptor) -> type[MessageView]:
    attributes: dict[str, Any] = {"DESCRIPTOR": descriptor}
    for f in descriptor.fields:
        if f.is_repeated:
            attributes[f.name] = ()
        elif f.cpp_type == _C.CPPTYPE_MESSAGE:
            attributes[f.name] = _EmptyMessage(f.message_type)
        else:
            attributes[f.name] = f.default_value
    return type(f"{descriptor.name}View", (MessageView,), attributes)


class _RefusedError(Exception):
    """A value :func:`view` does not vouch for (protobuf decides)."""


def _integer(low: int, high: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if type(value) is int and low <= value < high:
            return value
        raise _RefusedError
    return convert


def _float32(value: Any) -> float:
    if type(value) is float or type(value) is int:
        try:
            return _FLOAT32.unpack(_FLOAT32.pack(value))[0]
        except (OverflowError, struct.error):
            pass
    raise _RefusedError


def _double(value: Any) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    raise _RefusedError


def _exactly(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if type(value) is kind:
            return value
        raise _RefusedError
    return convert


def _enum(names: Mapping[str, int]) -> Callable[[Any], Any]:
    numbers = frozenset(names.values())

    def convert(value: Any) -> Any:
        if type(value) is str and value in names:
            return names[value]
        if type(value) is int and value in numbers:
            return value
        raise _RefusedError
    return convert


def _message(descriptor: Descriptor) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if type(value) is dict or isinstance(value, Mapping):
            return _build(descriptor, value)
        if isinstance(value, Message) and value.DESCRIPTOR is descriptor:
            copy = type(value)()
            copy.CopyFrom(value)  # a snapshot: the caller may change theirs later
            return copy
        raise _RefusedError
    return convert


def _converter(f: FieldDescriptor) -> Callable[[Any], Any]:
    cpp = f.cpp_type
    if cpp == _C.CPPTYPE_MESSAGE:
        return _message(f.message_type)
    if cpp == _C.CPPTYPE_ENUM:
        return _enum({v.name: v.number for v in f.enum_type.values})
    if cpp in _INT_RANGES:
        return _integer(*_INT_RANGES[cpp])
    if cpp == _C.CPPTYPE_FLOAT:
        return _float32
    if cpp == _C.CPPTYPE_DOUBLE:
        return _double
    if cpp == _C.CPPTYPE_BOOL:
        return _exactly(bool)
    return _exactly(bytes if f.type == _C.TYPE_BYTES else str)


@cache
def _fields(descriptor: Descriptor) -> dict[str, _Field]:
    return {f.name: _Field(f.is_repeated, _converter(f)) for f in descriptor.fields}


_SEQUENCES = (list, tuple)


def _build(descriptor: Descriptor, values: Mapping[str, Any]) -> MessageView:
    fields = _fields(descriptor)
    data: dict[str, Any] = {}
    for name, value in values.items():
        field = fields.get(name)
        if field is None:
            raise _RefusedError
        convert = field.convert
        if not field.repeated:
            data[name] = convert(value)
        elif type(value) in _SEQUENCES or (type(value) is not str and
                                           isinstance(value, Sequence)):
            data[name] = tuple(map(convert, value))
        else:
            data[name] = (convert(value),)
    instance = object.__new__(_view_class(descriptor))
    _set_attribute(instance, "__dict__", data)
    return instance


def view(descriptor: Descriptor, values: Mapping[str, Any]) -> MessageView | None:
    """A view of the message ``descriptor`` with ``values`` set, or ``None`` when a
    value needs protobuf's own judgement (see the module's docstring)."""
    try:
        return _build(descriptor, values)
    except _RefusedError:
        return None


def message_args(values: MessageView) -> dict[str, Any]:
    """Constructor keyword arguments of the message ``values`` views."""
    args = {}
    for name, value in values.__dict__.items():
        if isinstance(value, MessageView):
            value = message_args(value)
        elif type(value) is tuple:
            value = [message_args(v) if isinstance(v, MessageView) else v for v in value]
        args[name] = value
    return args
