"""Layer settings from plain data: ``LayerParameter`` messages the way Caffe's net_spec
makes them, checked against Caffe's schema when made.

A key of the parameters that names a ``LayerParameter`` field (``param``,
``transform_param``, ``loss_weight`` ...) is set there; every other key goes into the
type's own parameter message (``convolution_param`` for ``Convolution``; the
registry of layer kinds knows each type's field), where protobuf rejects a
misspelt one.  :class:`LayerTemplates` numbers a net's distinct settings, so each
is checked once and the inference engine's memo can key on the number.
"""

from __future__ import annotations

import marshal
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from google.protobuf.message import Message

from pynetbuilder.errors import SettingError
from pynetbuilder.kinds import param_field
from pynetbuilder.schema import assign, caffe_pb2

__all__ = ["layer_parameter", "Setting", "LayerTemplates"]


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
        raise SettingError(
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
    """Build a ``LayerParameter`` the way Caffe's net_spec does (see the module doc)."""
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
    try:
        assign(layer, top_level)
        if field is not None:
            assign(getattr(layer, field), own)
    except (AttributeError, TypeError, ValueError) as exc:
        where = f"layer {name!r} ({layer_type})" if name else f"{layer_type} layer"
        raise SettingError(f"{where}: {exc}") from None
    return layer


class Setting:
    """One distinct layer setting of a net: type, parameters and number of tops, as a
    nameless ``LayerParameter`` (``message``; shared: copy it to change it), checked
    against the schema when made.  ``number`` identifies it within its net."""

    __slots__ = ("number", "message")

    def __init__(self, number: int, layer_type: str, params: Mapping[str, Any], ntop: int):
        self.number = number
        self.message = layer_parameter(layer_type, "", [], [""] * ntop, params)


class LayerTemplates:
    """The distinct settings of one net: a net repeats a few layer settings many times
    (every BatchNorm alike, most convolutions alike), so each is checked once and
    numbered (equal numbers, equal settings).  One per net; nothing is shared between
    nets.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[Any, ...], Setting] = {}

    def get(self, layer_type: str, params: Mapping[str, Any], ntop: int = 1) -> Setting:
        """The setting of a layer type, its parameters and its number of tops."""
        try:  # marshal is a fast, exact (invertible) key for plain data
            key: tuple[Any, ...] = (layer_type, ntop, marshal.dumps(dict(params)))
        except ValueError:  # a protobuf message among the values
            key = (layer_type, ntop, repr(params))
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = Setting(len(self._by_key), layer_type, params, ntop)
        return found
