"""Read protobuf text format (a prototxt) fast, with exactly protobuf's result.

``google.protobuf.text_format.Parse`` is pure Python, token by token: about 100 us
per layer of a Caffe net.  ``parse`` gives the same message several times faster.
It reads the text statement by statement (``name: value``, ``name {``, ``}``),
writes each statement as binary wire format, and hands the whole to protobuf's
C decoder.  A prototxt repeats itself (``kernel_size: 3``, ``lr_mult: 1.0``, ``}``),
so each distinct line is interpreted once per message type and reused; values are
converted by text_format's own functions and encoded by protobuf itself, so they
are protobuf's to the bit.

Anything else the fast path does not take (lists of messages, ``[extension]``
names, a duplicate field, any error...) goes to ``text_format.Parse``, which
builds the message or raises its own ``ParseError`` with line and column.
"""

from __future__ import annotations

import re
from functools import cache
from typing import NamedTuple, TypeVar

from google.protobuf import text_encoding, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

__all__ = ["parse"]

M = TypeVar("M", bound=Message)

# The tokens of text_format's Tokenizer, written as one regex per statement.
_WS = r"\s*(?:#[^\n]*\s*)*"  # whitespace and comments
_STRING = r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'"""
_TOKEN = r"[A-Za-z_][0-9A-Za-z_+-]*|(?:[0-9+-]|\.[0-9])[0-9A-Za-z_.+-]*"  # name or number
_VALUE = rf"(?:{_STRING})(?:{_WS}(?:{_STRING}))*|{_TOKEN}"
_LIST = rf"\[{_WS}(?:(?:{_VALUE}){_WS}(?:,{_WS}(?:{_VALUE}){_WS})*)?\]"
_STATEMENT = re.compile(
    rf"{_WS}(?:"
    rf"([A-Za-z_][0-9A-Za-z_]*){_WS}"  # 1: a field name, then
    rf"(?::{_WS}({_VALUE}|{_LIST})(?:{_WS}[;,])?"  # 2: its value, or
    rf"|:?{_WS}([{{<]))"  # 3: the start of its message
    rf"|([}}>])(?:{_WS}[;,])?"  # 4: the end of a message
    rf"|([\s\S])|\Z){_WS}"  # 5: a character no statement starts with
)
_LIST_ITEM = re.compile(rf"[\[,]{_WS}({_VALUE})")
_STRING_PART = re.compile(_STRING)

_SCALAR, _SINGULAR, _CLOSE, _OPEN, _NOTHING = range(5)
_SHORT = tuple(bytes((n,)) for n in range(128))  # lengths under 128 as varints
_CLOSERS = {"{": "}", "<": ">"}

# text_format's integer checks by field type: (signed, 64-bit)
_INTEGERS = {
    FieldDescriptor.TYPE_INT32: (True, False), FieldDescriptor.TYPE_SINT32: (True, False),
    FieldDescriptor.TYPE_SFIXED32: (True, False), FieldDescriptor.TYPE_INT64: (True, True),
    FieldDescriptor.TYPE_SINT64: (True, True), FieldDescriptor.TYPE_SFIXED64: (True, True),
    FieldDescriptor.TYPE_UINT32: (False, False), FieldDescriptor.TYPE_FIXED32: (False, False),
    FieldDescriptor.TYPE_UINT64: (False, True), FieldDescriptor.TYPE_FIXED64: (False, True),
}
_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
_STRINGS = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


class _Fallback(Exception):
    """The fast path does not take this text: text_format.Parse decides."""


class _Mismatch(_Fallback):
    """A line that is not one whole statement (read the text statement by statement)."""


def parse(text: str, message: M) -> M:
    """``text_format.Parse(text, message)``, faster; returns ``message``.

    Same message, byte for byte, and the same ``ParseError`` on bad text.
    """
    if isinstance(text, str) and not message.ListFields():
        try:
            data = _wire(text, message.DESCRIPTOR)
            message.MergeFromString(data)
            return message
        except (_Fallback, DecodeError):
            message.Clear()
    text_format.Parse(text, message)
    return message


def _wire(text: str, descriptor: Descriptor) -> bytes:
    """The text as wire format: line by line when each line holds at most one
    statement (as Caffe and protobuf write prototxt), else statement by statement."""
    try:
        return _encode(text.split("\n"), descriptor, _line_groups)
    except _Mismatch:
        pass
    try:
        return _encode(_STATEMENT.findall(text), descriptor, tuple)
    except _Mismatch:
        raise _Fallback from None


def _line_groups(line: str) -> tuple[str, ...]:
    match = _STATEMENT.fullmatch(line)
    if match is None:
        raise _Mismatch
    return match.groups("")


def _encode(chunks, descriptor, groups_of) -> bytes:
    """Encode the statements; ``groups_of`` gives a chunk's ``_STATEMENT`` groups.

    Each distinct chunk is compiled once per message type into an action."""
    caches: dict[Descriptor, dict] = {}
    cache = caches[descriptor] = {}
    parts: list[bytes] = []
    seen: set[str] = set()  # the singular fields set in the message being read
    closer = ""  # the message's closing token
    stack: list[tuple] = []
    for chunk in chunks:
        action = cache.get(chunk)
        if action is None:
            action = cache[chunk] = _compile(groups_of(chunk), descriptor, caches)
        kind = action[0]
        if kind == _SCALAR:
            parts.append(action[1])
        elif kind == _SINGULAR:
            if action[2] in seen:
                raise _Fallback  # text_format: "should not have multiple"
            seen.add(action[2])
            parts.append(action[1])
        elif kind == _CLOSE:
            if action[1] != closer:
                raise _Fallback
            body = b"".join(parts)
            parts, seen, closer, descriptor, cache, tag = stack.pop()
            n = len(body)
            parts.append(tag + (_SHORT[n] if n < 128 else _varint(n)) + body)
        elif kind == _OPEN:
            _, sub, sub_cache, tag, sub_closer, singular = action
            if singular:
                if singular in seen:
                    raise _Fallback
                seen.add(singular)
            stack.append((parts, seen, closer, descriptor, cache, tag))
            parts, seen, closer, descriptor, cache = [], set(), sub_closer, sub, sub_cache
    if stack:
        raise _Fallback  # text_format: 'Expected "}"'
    return b"".join(parts)


def _compile(groups: tuple[str, ...], descriptor: Descriptor, caches: dict) -> tuple:
    name, value, opener, closer, bad = groups
    if bad:
        raise _Mismatch
    if closer:
        return (_CLOSE, closer)
    if not name:
        return (_NOTHING,)
    field = _field(descriptor, name)
    singular = "" if field.is_repeated else name
    kind = _SCALAR if field.is_repeated else _SINGULAR
    if opener:
        if field.message_type is None:
            raise _Fallback
        return (_OPEN, field.message_type, caches.setdefault(field.message_type, {}),
                field.tag, _CLOSERS[opener], singular)
    if field.message_type is not None:
        raise _Fallback
    if value[0] == "[":
        if not field.is_repeated:
            raise _Fallback
        return (kind, b"".join(_scalar(field, v) for v in _LIST_ITEM.findall(value)), name)
    return (kind, _scalar(field, value), name)


class _Field(NamedTuple):
    name: str
    type: int
    is_repeated: bool
    message_type: Descriptor | None  # of a message field
    tag: bytes  # the field's tag as a length-delimited field
    descriptor: FieldDescriptor


@cache
def _field(descriptor: Descriptor, name: str) -> _Field:
    field = descriptor.fields_by_name.get(name)
    if field is None or field.containing_oneof is not None:
        raise _Fallback
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        raise _Fallback
    return _Field(name, field.type, field.is_repeated, message_type,
                  _varint(field.number << 3 | 2), field)


def _scalar(field: _Field, text: str) -> bytes:
    """One value of a scalar field as wire format (tag included), as text_format
    reads it and protobuf writes it."""
    quote = text[0]
    try:
        if field.type in _STRINGS:
            if quote not in "\"'":
                raise _Fallback
            if "\\" not in text and text.count(quote) == 2:  # one literal, no escapes
                data = text[1:-1].encode("utf-8")
            else:
                data = b"".join(text_encoding.CUnescape(part[1:-1])
                                for part in _STRING_PART.findall(text))
                if field.type == FieldDescriptor.TYPE_STRING:
                    data.decode("utf-8")
            return field.tag + _varint(len(data)) + data
        if quote in "\"'":
            raise _Fallback
        if field.type in _INTEGERS:
            value = text_format.ParseInteger(text, *_INTEGERS[field.type])
        elif field.type in _FLOATS:
            value = text_format.ParseFloat(text)
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = text_format.ParseBool(text)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = text_format.ParseEnum(field.descriptor, text)
        else:
            raise _Fallback
        holder = GetMessageClass(field.descriptor.containing_type)()
        if field.is_repeated:
            getattr(holder, field.name).append(value)
        else:
            setattr(holder, field.name, value)
        return holder.SerializeToString()
    except (ValueError, TypeError):
        raise _Fallback from None


def _varint(number: int) -> bytes:
    if number < 0x80:
        return bytes((number,))
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
