"""Read protobuf text format (a prototxt) fast, with exactly protobuf's result.

``google.protobuf.text_format.Parse`` is pure Python, token by token: about 100 us
per layer of a Caffe net.  ``parse`` gives the same message about ten times faster
(benchmarks/bench_prototext.py).  It reads the text statement by statement
(``name: value``, ``name {``, ``}``), writes each statement as binary wire format,
and hands the whole to protobuf's C decoder.  A prototxt repeats itself
(``kernel_size: 3``, ``lr_mult: 1.0``, ``}``), so each distinct line is interpreted
once per message type and reused; values are converted by text_format's own
functions and encoded by protobuf itself, so they are protobuf's to the bit.

Anything else the fast path does not take (lists of messages, ``[extension]``
names, a duplicate field, any error...) goes to ``text_format.Parse``, which
builds the message or raises its own ``ParseError`` with line and column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import NamedTuple, TypeVar

from google.protobuf import text_encoding
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["is_parse_error", "parse"]

M = TypeVar("M", bound=Message)

# The tokens of text_format's Tokenizer, written as one regex per statement.
_WS = r"\s*(?:#[^\n]*+\s*)*"  # whitespace and comments (a comment runs to the line end)
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
_HEAD = re.compile(r"\s*([A-Za-z_][0-9A-Za-z_]*)\s*:\s*")  # `name: ` before a string
_LIST_ITEM = re.compile(rf"[\[,]{_WS}({_VALUE})")
_STRING_PART = re.compile(_STRING)

_REPEATED, _SINGULAR, _CLOSE, _OPEN, _NOTHING = range(5)
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
# Numbers text_format's ParseInteger / ParseFloat read as Python's int() / float() do
# (no octal or hex, no inf / nan, no `f` suffix); anything else is theirs to read.
# Ranges are checked where the value is set, by protobuf, as text_format does.
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_PLAIN_FLOAT = re.compile(r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_BOOLS = {"true": True, "t": True, "1": True, "True": True,
          "false": False, "f": False, "0": False, "False": False}  # text_format.ParseBool
_STRINGS = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


class _FallbackError(Exception):
    """The fast path does not take this text: text_format.Parse decides."""


class _LineMismatchError(_FallbackError):
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
        except Exception:  # _FallbackError, or a surprise: protobuf's parser decides
            message.Clear()
    _text_format().Parse(text, message)
    return message


def is_parse_error(exc: BaseException) -> bool:
    """Whether ``exc`` is protobuf's ``text_format.ParseError`` (the error :func:`parse`
    raises on bad text), without importing text_format before one is raised."""
    return isinstance(exc, _text_format().ParseError)


def _text_format():  # noqa: ANN202 - the module; imported on use (a command's start-up)
    from google.protobuf import text_format

    return text_format


def _wire(text: str, descriptor: Descriptor) -> bytes:
    """The text as wire format: line by line when each line holds at most one
    statement (as Caffe and protobuf write prototxt), else statement by statement."""
    try:
        return _encode(text.split("\n"), descriptor, _Compiler().line)
    except _LineMismatchError:
        pass
    try:
        return _encode(_STATEMENT.findall(text), descriptor, _Compiler().statement)
    except _LineMismatchError:
        raise _FallbackError from None


def _encode(chunks: Iterable, descriptor: Descriptor, compile: Callable) -> bytes:
    """Encode the chunks (lines or statements), each distinct one compiled once per
    message type into an action."""
    actions: dict = {}  # chunk -> action, in the message being read
    parts: list[bytes] = []  # its wire format so far
    seen: set[str] = set()  # its singular fields so far (protobuf refuses a second)
    closer = ""  # its closing token
    stack: list[tuple] = []
    for chunk in chunks:
        action = actions.get(chunk)
        if action is None:
            action = actions[chunk] = compile(chunk, descriptor)
        kind = action[0]
        if kind == _REPEATED:
            parts.append(action[1])
        elif kind == _SINGULAR:
            if action[2] in seen:
                raise _FallbackError
            seen.add(action[2])
            parts.append(action[1])
        elif kind == _CLOSE:
            if action[1] != closer:
                raise _FallbackError
            body = b"".join(parts)
            parts, seen, closer, descriptor, actions, tag = stack.pop()
            n = len(body)
            parts.append(tag + (_SHORT[n] if n < 128 else _varint(n)) + body)
        elif kind == _OPEN:
            _, sub, sub_actions, tag, sub_closer, singular = action
            if singular:
                if singular in seen:
                    raise _FallbackError
                seen.add(singular)
            stack.append((parts, seen, closer, descriptor, actions, tag))
            parts, seen, closer, descriptor, actions = [], set(), sub_closer, sub, sub_actions
    if stack:
        raise _FallbackError
    return b"".join(parts)


class _Compiler:
    """A chunk's action in a message type, for one parse:
    ``(_REPEATED, wire)``, ``(_SINGULAR, wire, field name)``, ``(_CLOSE, token)``,
    ``(_OPEN, message type, its actions, tag, closing token, field name if singular)``
    or ``(_NOTHING,)``."""

    def __init__(self) -> None:
        self.actions: dict[Descriptor, dict] = {}  # per message type
        self.string_heads: dict[tuple[Descriptor, str], _Field | None] = {}

    def line(self, line: str, descriptor: Descriptor) -> tuple:
        head, _, tail = line.partition('"')
        if tail[-1:] == '"' and tail.count('"') == 1 and "\\" not in tail:
            key = (descriptor, head)  # the line may be `name: "text"`, the commonest
            field = self.string_heads.get(key, False)
            if field is False:
                field = self.string_heads[key] = _string_field(head, descriptor)
            if field is not None:
                try:
                    data = tail[:-1].encode("utf-8")
                except UnicodeEncodeError:
                    raise _FallbackError from None
                n = len(data)
                wire = field.tag + (_SHORT[n] if n < 128 else _varint(n)) + data
                return (_REPEATED, wire) if field.is_repeated else (_SINGULAR, wire, field.name)
        match = _STATEMENT.fullmatch(line)
        if match is None:
            raise _LineMismatchError
        return self.statement(match.groups(""), descriptor)

    def statement(self, groups: tuple[str, ...], descriptor: Descriptor) -> tuple:
        name, value, opener, closer, bad = groups
        if bad:
            raise _LineMismatchError
        if closer:
            return (_CLOSE, closer)
        if not name:
            return (_NOTHING,)
        field = _field(descriptor, name)
        if opener:
            if field.message_type is None:
                raise _FallbackError
            actions = self.actions.setdefault(field.message_type, {})
            singular = "" if field.is_repeated else name
            return (_OPEN, field.message_type, actions, field.tag, _CLOSERS[opener], singular)
        if field.message_type is not None:
            raise _FallbackError
        if value[0] != "[":
            wire = _scalar(field, value)
        elif field.is_repeated:
            wire = b"".join(_scalar(field, item) for item in _LIST_ITEM.findall(value))
        else:
            raise _FallbackError
        return (_REPEATED, wire) if field.is_repeated else (_SINGULAR, wire, name)


def _string_field(head: str, descriptor: Descriptor) -> _Field | None:
    """The string field of ``head`` if it is ``name:`` with blanks around."""
    match = _HEAD.fullmatch(head)
    field = match and _field(descriptor, match[1])
    return field if field and field.type in _STRINGS else None


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
    if field is None or field.containing_oneof is not None or field.type == field.TYPE_GROUP:
        raise _FallbackError
    message_type = field.message_type
    # a map field (its entry message has options; reading them imports descriptor_pb2)
    if message_type is not None and message_type.has_options and (
            message_type.GetOptions().map_entry):
        raise _FallbackError
    return _Field(name, field.type, field.is_repeated, message_type,
                  _varint(field.number << 3 | 2), field)


def _scalar(field: _Field, text: str) -> bytes:
    """One value of a scalar field as wire format (tag included), as text_format
    reads it and protobuf writes it."""
    quote = text[0]
    try:
        if field.type in _STRINGS:
            if quote not in "\"'":
                raise _FallbackError
            if text[-1] == quote and text.count(quote) == 2 and "\\" not in text:  # one literal
                data = text[1:-1].encode("utf-8")
            else:
                data = b"".join(text_encoding.CUnescape(part[1:-1])
                                for part in _STRING_PART.findall(text))
                if field.type == FieldDescriptor.TYPE_STRING:
                    data.decode("utf-8")
            return field.tag + _varint(len(data)) + data
        if quote in "\"'":
            raise _FallbackError
        if field.type in _INTEGERS:
            value = int(text) if _PLAIN_INT.match(text) else \
                _text_format().ParseInteger(text, *_INTEGERS[field.type])
        elif field.type in _FLOATS:
            value = float(text) if _PLAIN_FLOAT.match(text) else \
                _text_format().ParseFloat(text)
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = _BOOLS.get(text)
            if value is None:
                raise _FallbackError
        elif field.type == FieldDescriptor.TYPE_ENUM:
            named = field.descriptor.enum_type.values_by_name.get(text)
            value = named.number if named is not None else \
                _text_format().ParseEnum(field.descriptor, text)
        else:
            raise _FallbackError
        holder = _message_class(field.descriptor.containing_type)()
        if field.is_repeated:
            getattr(holder, field.name).append(value)
        else:
            setattr(holder, field.name, value)
        return holder.SerializePartialToString()  # a required field may come later
    except (ValueError, TypeError):
        raise _FallbackError from None


def _message_class(descriptor: Descriptor) -> type:
    """The class of ``descriptor``'s messages: the one its module made (as
    ``message_factory.GetMessageClass`` finds it first), else that function's."""
    made = getattr(descriptor, "_concrete_class", None)
    if made is not None:
        return made
    from google.protobuf.message_factory import GetMessageClass

    return GetMessageClass(descriptor)


def _varint(number: int) -> bytes:
    if number < 0x80:
        return bytes((number,))
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
