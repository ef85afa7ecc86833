"""Caffe's own schema: the ``caffe_pb2`` module and helpers to fill its messages.

The module is compiled from ``caffe.proto`` of the pinned Caffe source by
``tools/caffe_setup.py schema`` (``make`` runs it) into ``pynetbuilder/proto``.
Every network and solver is written through these classes, so a misspelt field
or a value of the wrong type fails at build time, as protobuf rejects it.
"""

from __future__ import annotations

import marshal
from collections.abc import Mapping, Sequence
from functools import cache
from types import MappingProxyType
from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pynetbuilder import prototext
from pynetbuilder.protoview import message_args, view

try:
    from pynetbuilder.proto import caffe_pb2
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "pynetbuilder's Caffe schema (pynetbuilder/proto/caffe_pb2.py) is missing: "
        "run `make .venv` or `python tools/caffe_setup.py schema` in the source tree"
    ) from exc

__all__ = [
    "caffe_pb2", "assign", "param_field", "layer_parameter", "LayerTemplates", "Setting",
    "instantiate", "to_text", "parse_net",
]


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
                raise TypeError(
                    f"{message.DESCRIPTOR.name}.{key} takes {_TYPE_NAMES[field.type]}"
                    f"{' values' if repeated else ''}, not {value!r}"
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


@cache
def _fields(descriptor: Any) -> dict[str, tuple[bool, Any]]:
    """Field name -> (repeated, message descriptor or None), per message type."""
    return {f.name: (f.is_repeated, f.message_type) for f in descriptor.fields}


def _constructor_args(descriptor: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as keyword arguments of the message's constructor (C-fast).

    A scalar given for a repeated field becomes a one-element list.  Raises
    ``KeyError`` on an unknown name, so the caller can fall back to :func:`assign`
    and its clear message.
    """
    fields = _fields(descriptor)
    args: dict[str, Any] = {}
    for key, value in values.items():
        repeated, message_type = fields[key]
        if message_type is not None:
            if repeated:
                items = value if isinstance(value, Sequence) else [value]
                args[key] = [
                    v if isinstance(v, Message) else _constructor_args(message_type, v)
                    for v in items
                ]
            else:
                args[key] = (
                    value if isinstance(value, Message) else _constructor_args(message_type, value)
                )
        elif repeated and (isinstance(value, str) or not isinstance(value, Sequence)):
            args[key] = [value]
        else:
            args[key] = value
    return args


_TOP_LEVEL = frozenset(caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name)


def _split(
    layer_type: str, params: Mapping[str, Any] | None
) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """``params`` as ``LayerParameter`` fields, the type's parameter field and its values."""
    top_level: dict[str, Any] = {}
    own: dict[str, Any] = {}
    if params:
        for key, value in params.items():
            if key in _TOP_LEVEL:
                top_level[key] = value
            else:
                own[key] = value
    field = param_field(layer_type) if own else None
    if own and field is None:
        raise AttributeError(
            f"layer type {layer_type!r} has no parameter message; "
            f"unexpected arguments: {', '.join(sorted(own))}"
        )
    return top_level, field, own


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
    top_level, field, own = _split(layer_type, params)
    if field is None or field not in top_level:
        try:
            args = _constructor_args(
                caffe_pb2.LayerParameter.DESCRIPTOR,
                {**top_level, field: own} if field else top_level,
            )
            return caffe_pb2.LayerParameter(
                name=name, type=layer_type, bottom=bottoms, top=tops, **args
            )
        except (KeyError, TypeError, ValueError):
            pass  # the slow path below names the offending field and what it accepts
    layer = caffe_pb2.LayerParameter(name=name, type=layer_type)
    layer.bottom.extend(bottoms)
    layer.top.extend(tops)
    assign(layer, top_level)
    if field is not None:
        assign(getattr(layer, field), own)
    return layer


class Setting:
    """One distinct layer setting of a net: type, parameters and number of tops.

    Checked against the schema when made (a misspelt field or a value of the wrong
    type fails here, at build time).  ``view`` is what shape rules read: a
    :class:`~pynetbuilder.protoview.MessageView` of the nameless layer (or the
    message itself, where the view could not vouch for a value); :meth:`message`
    builds the nameless ``LayerParameter`` when an output needs it.
    """

    __slots__ = ("number", "view", "_message")

    def __init__(self, number: int, layer_type: str, params: Mapping[str, Any], ntop: int):
        self.number = number
        top_level, field, own = _split(layer_type, params)
        found = None
        if field not in top_level:  # else own values merge into a given message: protobuf's job
            values = {"name": "", "type": layer_type, "top": ("",) * ntop, **top_level}
            if field is not None:
                values[field] = own
            found = view(caffe_pb2.LayerParameter.DESCRIPTOR, values)
        if found is None:
            self._message = layer_parameter(layer_type, "", [], [""] * ntop, params)
            self.view: Any = self._message
        else:
            self._message = None
            self.view = found

    def message(self) -> Message:
        """The nameless ``LayerParameter`` of this setting (shared: copy to change it)."""
        if self._message is None:
            self._message = caffe_pb2.LayerParameter(**message_args(self.view))
        return self._message


class LayerTemplates:
    """The distinct settings of one net: a net repeats a few layer settings many times
    (every BatchNorm alike, most convolutions alike), so each is checked once and
    numbered (equal numbers, equal settings); :func:`instantiate` names a copy of its
    message.  One per net; nothing is shared between nets.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, Any], Setting] = {}
        self._derived: dict[tuple[Any, ...], Setting] = {}
        # read-only mappings (MappingProxyType) by identity; each is kept alive here, so
        # its id is not reused while this memory lasts
        self._by_identity: dict[tuple[str, int, int], Setting] = {}
        self._kept: list[Mapping[str, Any]] = []

    def get(self, layer_type: str, params: Mapping[str, Any], ntop: int = 1) -> Setting:
        """The setting of a layer type, its parameters and its number of tops.

        A read-only ``params`` (``types.MappingProxyType``) is taken not to change, so
        it is looked up by identity, without reading it again.
        """
        if type(params) is MappingProxyType:
            identity = (layer_type, ntop, id(params))
            found = self._by_identity.get(identity)
            if found is None:
                found = self._by_identity[identity] = self.get(layer_type, dict(params), ntop)
                self._kept.append(params)
            return found
        try:  # marshal is a fast, exact (invertible) key for plain data
            key: tuple[Any, ...] = (layer_type, ntop, marshal.dumps(params))
        except ValueError:  # a protobuf message among the values
            key = (layer_type, ntop, repr(params))
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = Setting(len(self._by_key), layer_type, params, ntop)
        return found

    def derive(
        self, base: Setting, layer_type: str, params: Mapping[str, Any],
        extra: Mapping[str, Any], ntop: int = 1,
    ) -> Setting:
        """The setting of ``params`` with ``extra``'s keys replacing theirs (a phase's
        override), where ``base`` is ``get(layer_type, params)``."""
        try:
            key: tuple[Any, ...] = (base.number, marshal.dumps(extra))
        except ValueError:
            key = (base.number, repr(extra))
        found = self._derived.get(key)
        if found is None:
            found = self._derived[key] = self.get(layer_type, {**params, **extra}, ntop)
        return found


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
    return text_format.MessageToString(message)


def parse_net(text: str) -> Message:
    """Parse a prototxt into a ``NetParameter`` (protobuf reports line and column)."""
    return prototext.parse(text, caffe_pb2.NetParameter())
