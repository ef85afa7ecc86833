"""Reading prototxt written for Caffe's widespread forks.

:func:`parse_dialect` is what :func:`pynetbuilder.inspect.read_prototxt` falls back to
when the strict schema refuses a file.  It parses with the dialect schema
(:mod:`pynetbuilder.dialects.schema`: caffe.proto plus ``forks.proto``), and:

- a field that no known dialect defines is blanked out and reported with file, line
  and column; the layer it sits in is marked not analysed (``untrusted``), the rest
  of the file is read;
- fields of two dialects that conflict in one file (BVLC master's ``round_mode``
  and the forks' ``ceil_mode``, PoolingParameter field 13 in both) are refused;
- what the rules read is normalised into the strict schema (``round_mode`` becomes
  ``ceil_mode``); the forks' own messages (``interp_param`` ...) travel as the strict
  message's unknown fields, read back by the fork kinds through
  :func:`~pynetbuilder.dialects.schema.dialect_view`.

Writing never uses the dialect schema: what pynetbuilder writes is strict.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

from google.protobuf import text_format

from pynetbuilder.errors import NetError
from pynetbuilder.targets.checker import ReadFacts

MAX_UNKNOWN = 1000


class DialectRead(NamedTuple):
    """A net read through the dialect schema: the strict ``NetParameter`` (V1 layers
    not yet upgraded), what it used (:class:`ReadFacts`), the layers a field no dialect
    knows made untrustworthy (name -> reason), and one note per such field."""

    net: Any
    facts: ReadFacts
    untrusted: dict[str, str]
    notes: tuple[str, ...]


def parse_dialect(text: str, path: str | Path) -> DialectRead:
    """Parse ``text`` (the content of ``path``) with the dialect schema (module doc)."""
    from pynetbuilder.dialects.schema import dialect_schema
    from pynetbuilder.schema import caffe_pb2

    schema = dialect_schema()
    work = text
    unknown: list[tuple[int, int, str, int]] = []  # line, column, field, offset
    while True:
        message = schema.NetParameter()
        try:
            text_format.Parse(work, message)
            break
        except text_format.ParseError as exc:
            found = re.search(r'has no field named "([^"]+)"', str(exc))
            if not found or not exc.GetLine() or len(unknown) >= MAX_UNKNOWN:
                raise _syntax_error(path, exc) from None
            line, column, name = exc.GetLine(), exc.GetColumn(), found.group(1)
            start = _offset(work, line, column, name)
            end = _field_end(work, start + len(name))
            work = work[:start] + re.sub(r"[^\n]", " ", work[start:end]) + work[end:]
            unknown.append((line, column, name, start))
    fields = _dialect_fields(message, schema)
    _refuse_conflicts(message, fields, path)
    for layer in message.layer:
        p = layer.pooling_param
        if layer.HasField("pooling_param") and p.HasField("round_mode"):
            p.ceil_mode = p.round_mode == p.CEIL
            p.ClearField("round_mode")
    strict = caffe_pb2.NetParameter.FromString(message.SerializeToString())
    starts = _layer_starts(text)
    layers = list(message.layer) or list(message.layers)
    untrusted: dict[str, str] = {}
    notes = []
    for line, column, name, offset in unknown:
        where = f"{path}:{line}:{column}"
        index = sum(1 for s in starts if s < offset) - 1
        if 0 <= index < len(layers) and layers[index].name:
            layer = layers[index].name
            untrusted.setdefault(layer, f"field {name!r} at {where} is defined by no known "
                                 "dialect (its settings were not read)")
            notes.append(f"{where}: field {name!r} of layer {layer!r} is defined by no known "
                         "dialect; the layer is not analysed")
        else:
            notes.append(f"{where}: field {name!r} is defined by no known dialect; ignored")
    v1 = bool(message.layers)
    return DialectRead(strict, ReadFacts(v1, fields), untrusted, tuple(notes))


def read_dialect(path: str | Path) -> DialectRead:
    """:func:`parse_dialect` of a file (also for a file the strict schema reads)."""
    return parse_dialect(Path(path).read_text(encoding="utf-8"), path)


def _syntax_error(path: str | Path, exc: text_format.ParseError) -> NetError:
    message = str(exc).split(" : ", 1)[-1].replace("pynetbuilder.dialects.", "")
    where = f"line {exc.GetLine()}, column {exc.GetColumn()}" if exc.GetLine() else ""
    return NetError(f"{path}:{exc.GetLine() or '?'}:{exc.GetColumn() or '?'}: not a valid Caffe "
                    f"prototxt ({where + ': ' if where else ''}{message})")


def _offset(text: str, line: int, column: int, name: str) -> int:
    """Offset of field ``name`` reported at ``line``:``column`` (1-based)."""
    start = sum(len(s) for s in text.splitlines(keepends=True)[: line - 1])
    guess = start + column - 1
    found = text.find(name, max(start, guess - len(name)))
    return found if found >= 0 else guess


def _skip_space(text: str, i: int) -> int:
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text[i] == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        else:
            break
    return i


def _field_end(text: str, i: int) -> int:
    """The end of a field whose name ends at ``i``: its ``: value``, ``[list]`` or
    ``{message}`` included."""
    i = _skip_space(text, i)
    if i < len(text) and text[i] == ":":
        i = _skip_space(text, i + 1)
    if i < len(text) and text[i] in "{<[":
        closing = {"{": "}", "<": ">", "[": "]"}[text[i]]
        depth, opening = 0, text[i]
        while i < len(text):
            ch = text[i]
            if ch in "\"'":
                i = text.find(ch, i + 1)
            elif ch == "#":
                i = text.find("\n", i)
            elif ch == opening:
                depth += 1
            elif ch == closing:
                depth -= 1
                if depth == 0:
                    return i + 1
            if i < 0:
                return len(text)
            i += 1
        return len(text)
    if i < len(text) and text[i] in "\"'":
        while i < len(text) and text[i] in "\"'":  # adjacent strings concatenate
            end = text.find(text[i], i + 1)
            i = len(text) if end < 0 else end + 1
            after = _skip_space(text, i)
            if after < len(text) and text[after] in "\"'":
                i = after
        return i
    match = re.compile(r"[-+\w.]+").match(text, i)
    return match.end() if match else i


def _layer_starts(text: str) -> list[int]:
    """Offsets of the top-level ``layer`` / ``layers`` fields."""
    starts = []
    depth, i = 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            end = text.find(ch, i + 1)
            i = len(text) if end < 0 else end + 1
            continue
        if ch == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if ch in "{<":
            depth += 1
        elif ch in "}>":
            depth -= 1
        elif depth == 0 and text.startswith("layer", i) and (i == 0 or not (
                text[i - 1].isalnum() or text[i - 1] == "_")):
            starts.append(i)
            i += 5
            continue
        i += 1
    return starts


def _dialect_fields(message: Any, schema: Any) -> dict[str, frozenset[str]]:
    """Per layer name, the dialect-added fields it sets (``x_param`` and, for a message
    only a fork has, each of its fields ``x_param.field``; ``param.field`` added to a
    BVLC message)."""
    found: dict[str, frozenset[str]] = {}
    for layer in list(message.layer) + list(message.layers):
        used = set()
        for field, value in layer.ListFields():
            added = bool(schema.dialect_of("LayerParameter", field.name))
            if added:
                used.add(field.name)
            if field.name.endswith("_param") and hasattr(value, "ListFields"):
                for sub, _ in value.ListFields():  # all of a fork's own message's fields
                    if added or schema.dialect_of(value.DESCRIPTOR.name, sub.name):
                        used.add(f"{field.name}.{sub.name}")
        if used:
            found[layer.name] = frozenset(used)
    return found


def _refuse_conflicts(message: Any, fields: dict[str, frozenset[str]], path: str | Path
                      ) -> None:
    """BVLC master's ``round_mode`` and the forks' ``ceil_mode`` are one field (13) of
    PoolingParameter in two dialects: a file using both is refused."""
    round_mode = next((n for n, f in fields.items() if "pooling_param.round_mode" in f), None)
    ceil_mode = next((la.name for la in message.layer
                      if la.HasField("pooling_param") and la.pooling_param.HasField("ceil_mode")),
                     None)
    if round_mode is not None and ceil_mode is not None:
        raise NetError(
            f"{path}: mixes two Caffe dialects: layer {round_mode!r} sets round_mode (BVLC "
            f"master) and layer {ceil_mode!r} sets ceil_mode (the forks); both are "
            "PoolingParameter field 13, so no Caffe reads this file: use one of them")
