"""The dialect schema: pynetbuilder's caffe.proto plus the forks' fields (forks.proto).

Built at run time from the compiled schema's descriptor and a small subset of
.proto syntax (see ``forks.proto``), in a descriptor pool of its own, package
``pynetbuilder.dialects``: the strict schema stays untouched, and what the forks
add is read only when the strict parse fails.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from pynetbuilder.schema import caffe_pb2

FORKS = Path(__file__).with_name("forks.proto")
PACKAGE = "pynetbuilder.dialects"
_FIRST_ADDED = 100000  # fields added to an existing message are renumbered from here
_SCALARS = {
    "double": 1, "float": 2, "int64": 3, "uint64": 4, "int32": 5, "bool": 8, "string": 9,
    "bytes": 12, "uint32": 13,
}
_FDP = descriptor_pb2.FieldDescriptorProto
_TOKEN = re.compile(r"\"[^\"]*\"|[A-Za-z_][\w.]*|-?\d[\w.+-]*|\S")


class Added(NamedTuple):
    """A field a dialect adds: message, field name, dialect."""

    message: str
    field: str
    dialect: str


class DialectSchema(NamedTuple):
    NetParameter: Any
    LayerParameter: Any
    added: tuple[Added, ...]

    def dialect_of(self, message: str, field: str) -> str | None:
        for a in self.added:
            if a.message == message and a.field == field:
                return a.dialect
        return None


def _tokens(text: str) -> list[tuple[str, str]]:
    """(token, current dialect) pairs; comments dropped, dialect markers kept."""
    out: list[tuple[str, str]] = []
    dialect = ""
    for line in text.splitlines():
        marker = re.match(r"\s*//\s*dialect\s+(\w+)", line)
        if marker:
            dialect = marker.group(1)
        line = line.split("//", 1)[0]
        out += [(t, dialect) for t in _TOKEN.findall(line)]
    return out


@cache
def dialect_schema() -> DialectSchema:
    """The dialect classes (cached: built once per process)."""
    fdp = descriptor_pb2.FileDescriptorProto()
    caffe_pb2.DESCRIPTOR.CopyToProto(fdp)
    old_package = fdp.package
    fdp.name = "pynetbuilder/dialects/caffe_dialects.proto"
    fdp.package = PACKAGE
    messages = {m.name: m for m in fdp.message_type}

    def retarget(message: Any) -> None:
        for field in message.field:
            if field.type_name.startswith(f".{old_package}."):
                field.type_name = f".{PACKAGE}." + field.type_name[len(old_package) + 2:]
        for nested in message.nested_type:
            retarget(nested)

    for message in fdp.message_type:
        retarget(message)
    added: list[Added] = []
    tokens = _tokens(FORKS.read_text(encoding="utf-8"))
    i = 0
    pending: list[tuple[Any, list[str], str]] = []  # (field proto, type words, message name)
    while i < len(tokens):
        word, dialect = tokens[i]
        if word != "message":
            raise ValueError(f"forks.proto: expected 'message', got {word!r}")
        name = tokens[i + 1][0]
        exists = name in messages
        message = messages.get(name)
        if message is None:
            message = fdp.message_type.add(name=name)
            messages[name] = message
        i += 3  # message NAME {
        while tokens[i][0] != "}":
            word = tokens[i][0]
            if word == "enum":
                enum = message.enum_type.add(name=tokens[i + 1][0])
                i += 3
                while tokens[i][0] != "}":
                    enum.value.add(name=tokens[i][0], number=int(tokens[i + 2][0]))
                    i += 4  # NAME = N ;
                i += 1
                continue
            label, type_name, field_name = word, tokens[i + 1][0], tokens[i + 2][0]
            number = int(tokens[i + 4][0])
            i += 5
            default = None
            if tokens[i][0] == "[":
                default = tokens[i + 3][0]
                i += 5  # [ default = V ]
            i += 1  # ;
            if exists:
                number = _FIRST_ADDED + len(message.field)
                added.append(Added(name, field_name, dialect))
            field = message.field.add(name=field_name, number=number,
                                      label=_FDP.LABEL_REPEATED if label == "repeated"
                                      else _FDP.LABEL_OPTIONAL)
            if default is not None:
                field.default_value = default.strip('"')
            pending.append((field, [type_name], name))
        i += 1
    for field, (type_name,), owner in pending:
        if type_name in _SCALARS:
            field.type = _SCALARS[type_name]
            continue
        nested = {e.name for e in messages[owner].enum_type}
        if type_name in nested:
            field.type = _FDP.TYPE_ENUM
            field.type_name = f".{PACKAGE}.{owner}.{type_name}"
        elif type_name in messages:
            field.type = _FDP.TYPE_MESSAGE
            field.type_name = f".{PACKAGE}.{type_name}"
            field.ClearField("default_value")
        else:
            raise ValueError(f"forks.proto: unknown type {type_name!r}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    find = pool.FindMessageTypeByName
    return DialectSchema(message_factory.GetMessageClass(find(f"{PACKAGE}.NetParameter")),
                         message_factory.GetMessageClass(find(f"{PACKAGE}.LayerParameter")),
                         tuple(added))


def dialect_view(layer: Any) -> Any:
    """A strict ``LayerParameter`` read through the dialect schema (the forks' fields
    it carries as unknown fields become readable)."""
    return dialect_schema().LayerParameter.FromString(layer.SerializeToString())
