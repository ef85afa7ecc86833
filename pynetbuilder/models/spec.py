"""A model named on a command line, parsed once for every command.

A model spec is the family's name, optionally a named configuration, and knob
values, in either spelling (mixed freely):

- words: ``resnet --depth 110`` (list knobs take several words:
  ``--blocks 3 4 6 3``; a switch is ``--use_bn``, ``--no-use_bn`` or
  ``--use_bn false``; ``--depth=110`` works too, a list as ``--blocks=3,4,6,3``);
- one word: ``resnet:depth=110``, list items separated by commas
  (``resnet_imagenet:blocks=3,4,23,3:num_output_stage1=256``);
- a named configuration (``pynetbuilder list``, README's model table):
  ``resnet_imagenet@ResNet-50`` or ``resnet_imagenet --config ResNet-50``; knobs
  given as well change it (``resnet_imagenet@ResNet-50 --blocks 3 4 23 3``).

The words may also hold the data settings of the train/test nets
(:data:`DATA_FLAGS`: ``--train_source``, ``--batch_size``, ``--crop_size``,
``--mean`` ..., unset ones the family's dataset defaults).  Knob values are
parsed and checked by the registry (:meth:`Knob.parse`, :meth:`Knob.check`:
:class:`KnobError` names the knob and what it accepts); ranges and formulas are
checked when the net is built.  No abbreviation of a flag is taken (``--dept``
is an unknown knob).  Every error is a one-line :class:`UsageError`.

``parse_model_spec(words) -> ModelSpec``, ``build_model(spec) -> Net``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos.data import BACKENDS, ClassificationData
from pynetbuilder.models.registry import Family, Knob, KnobError

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # a value, not a flag (as argparse)


# ---------------------------------------------------------------- data settings


@dataclass(frozen=True)
class DataFlag:
    """One data setting as a flag: ``--NAME VALUE`` (``mirror``: ``--no-mirror``)."""

    name: str
    metavar: str
    help: str


DATA_FLAGS: tuple[DataFlag, ...] = (
    DataFlag("train_source", "DIR", "training database folder"),
    DataFlag("test_source", "DIR", "validation database folder"),
    DataFlag("backend", "|".join(BACKENDS), "database kind"),
    DataFlag("batch_size", "N", "training batch size"),
    DataFlag("test_batch_size", "N", "test batch size"),
    DataFlag("crop_size", "N", "random crop (train) / centre crop (test) size"),
    DataFlag("mirror", "", "--no-mirror: do not mirror training images at random"),
    DataFlag("mean", "VALUES|FILE", "per-channel mean values in BGR order (104,117,123), or "
             "a mean.binaryproto file"),
)
_DATA_NAMES = {f.name for f in DATA_FLAGS}


@dataclass(frozen=True)
class DataSettings:
    """The data flags given (None: the family's dataset default)."""

    train_source: str | None = None
    test_source: str | None = None
    backend: str | None = None
    batch_size: int | None = None
    test_batch_size: int | None = None
    crop_size: int | None = None
    mirror: bool | None = None
    mean_values: tuple[float, ...] | None = None
    mean_file: str | None = None

    def given(self) -> dict[str, Any]:
        """The settings given, as ClassificationData fields (a given mean replaces
        both mean fields)."""
        changes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if getattr(self, f.name) is not None}
        if self.mean_values is not None or self.mean_file is not None:
            changes.setdefault("mean_values", None)
            changes.setdefault("mean_file", None)
        return changes


def positive_int(flag: str, text: str) -> int:
    """``text`` as a positive integer; UsageError naming ``flag``."""
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{flag}: expected a positive integer, got {text!r}") from None
    if value < 1:
        raise UsageError(f"{flag}: expected a positive integer, got {value}")
    return value


def parse_mean(text: str) -> tuple[tuple[float, ...] | None, str | None]:
    """``--mean``: ``(values, None)`` for ``104,117,123``, ``(None, file)`` for a
    ``.binaryproto`` file."""
    if text.endswith(".binaryproto"):
        return None, text
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--mean must be comma-separated numbers (finite, e.g. 104,117,123) "
                         f"or a .binaryproto file, got {text!r}")
    return values, None


def data_setting(name: str, text: str) -> dict[str, Any]:
    """One data flag's value (``--NAME TEXT``) as DataSettings fields; UsageError
    naming the flag."""
    if name in ("batch_size", "test_batch_size", "crop_size"):
        return {name: positive_int(f"--{name}", text)}
    if name == "backend":
        if text not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {text!r}")
        return {name: text}
    if name == "mean":
        values, file = parse_mean(text)
        return {"mean_values": values, "mean_file": file}
    if name == "mirror":
        return {"mirror": _switch(text, "--mirror", "true or false")}
    return {name: text}


def classification_data(settings: DataSettings, dataset: str, **changes: Any
                        ) -> ClassificationData:
    """The data lego of a family's train/test nets: ``dataset``'s defaults
    (:func:`~pynetbuilder.models.datasets.default_data`) with the given settings,
    then ``changes`` (ClassificationData fields), applied."""
    from pynetbuilder.models.datasets import default_data

    return dataclasses.replace(default_data(dataset), **{**settings.given(), **changes})


def _switch(text: str, flag: str, accepts: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise UsageError(f"{flag} accepts {accepts}, got {text!r}")
    return lowered in ("true", "1", "yes")


# ---------------------------------------------------------------- model specs


class UnknownFlagError(UsageError):
    """A flag that is neither a knob of the family nor a data setting."""

    def __init__(self, family: Family, flag: str, noun: str = "knob"):
        self.family, self.flag = family, flag
        super().__init__(self.message(noun))

    def message(self, noun: str) -> str:
        """The error with ``noun`` for what the flag is not (``knob or flag`` for a
        command that has flags of its own)."""
        return (f"{self.family.name} has no {noun} {self.flag!r}; its knobs: "
                + ", ".join(f"--{k}" for k in self.family.knobs))


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: the family, the knob values (the configuration's, then
    those given; checked types), the data settings and the configuration's name."""

    family: Family
    knobs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    data: DataSettings = DataSettings()
    config: str | None = None
    text: str = ""  # as given

    def data_lego(self, **changes: Any) -> ClassificationData:
        """The train/test data lego: the dataset's defaults, the given data settings,
        then ``changes``."""
        return classification_data(self.data, self.family.dataset, **changes)

    def build(self, data: ClassificationData | None = None) -> Net:
        """The net (``data``: the data lego; default :meth:`data_lego`)."""
        return self.family.build(data=data if data is not None else self.data_lego(),
                                 **self.knobs)


def build_model(spec: ModelSpec | str | Sequence[str],
                data: ClassificationData | None = None) -> Net:
    """Build a model from a spec (parsed, or words / text to parse)."""
    if not isinstance(spec, ModelSpec):
        spec = parse_model_spec(spec)
    return spec.build(data)


def model_name(word: str) -> str:
    """The family name of a spec's first word (``resnet`` of ``resnet@X:depth=20``)."""
    return re.split(r"[:@]", word, maxsplit=1)[0]


def _words(spec: str | Sequence[str]) -> list[str]:
    """A spec's words: a sequence as is; a text split as a shell would when it holds
    flags (``resnet --depth 110``), else one word (``resnet_imagenet@ResNet-50``)."""
    if not isinstance(spec, str):
        return list(spec)
    if re.search(r"\s-", spec):
        try:
            import shlex  # on use: a command's start-up

            return shlex.split(spec)
        except ValueError as exc:
            raise UsageError(f"model spec {spec!r}: {exc}") from None
    return [spec.strip()]


def parse_model_spec(spec: str | Sequence[str], *, config: str | None = None) -> ModelSpec:
    """Parse a model spec (module doc): ``["resnet", "--depth", "110"]``,
    ``"resnet:depth=110"``, ``"resnet_imagenet@ResNet-50"``, ...  ``config`` names
    a configuration as ``--config`` does.  UsageError (one line) for an unknown
    model, configuration, knob or flag, or a value a knob does not accept."""
    from pynetbuilder.models import FAMILIES

    words = _words(spec)
    if not words or not words[0] or words[0].startswith("-"):
        raise UsageError("a model spec starts with a model name; known models: "
                         + ", ".join(FAMILIES.names()))
    head, *pairs = words[0].split(":")
    name, at, named = head.partition("@")
    family = FAMILIES[name]
    if at and not named:
        raise UsageError(f"{words[0]!r}: a configuration name follows '@' "
                         f"({_configs_line(family)})")
    parser = _SpecWords(family, words[0])
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise UsageError(
                f"{words[0]!r}: each knob after the model name is KNOB=VALUE (list items "
                f"separated by commas), got {pair!r}"
            )
        parser.pair(key, value)
    parser.flags(words[1:])
    configs = [c for c in (named or None, parser.config, config) if c]
    if len(set(configs)) > 1:
        raise UsageError(f"{family.name}: two configurations given ({', '.join(configs)}); "
                         "give one")
    chosen = configs[0] if configs else None
    knobs = dict(reference_knobs(family, chosen)) if chosen else {}
    knobs.update(parser.knobs)
    return ModelSpec(family, MappingProxyType(knobs), DataSettings(**parser.data), chosen,
                     " ".join(words))


def reference_knobs(family: Family, config: str) -> Mapping[str, Any]:
    """The knobs of ``family``'s named configuration ``config`` (exact name, else the
    one equal ignoring case); UsageError listing the known ones."""
    refs = family.references
    if config in refs:
        return refs[config]
    folded = [label for label in refs if label.casefold() == config.casefold()]
    if len(folded) == 1:
        return refs[folded[0]]
    raise UsageError(f"{family.name} has no configuration {config!r}; "
                     f"{_configs_line(family)}")


def _configs_line(family: Family) -> str:
    if not family.references:
        return f"{family.name} has no named configurations"
    return "its configurations: " + ", ".join(family.references)


class _SpecWords:
    """Collects knob values and data settings from a spec's pairs and flag words."""

    def __init__(self, family: Family, text: str):
        self.family, self.text = family, text
        self.allowed = family.knobs
        self.knobs: dict[str, Any] = {}
        self.data: dict[str, Any] = {}
        self.config: str | None = None

    def _knob_error(self, exc: KnobError) -> UsageError:
        return UsageError(f"{self.family.name}: {exc}")

    def pair(self, key: str, value: str) -> None:
        """``KEY=VALUE`` of the one-word spelling."""
        if key in self.allowed:
            knob = self.allowed[key]
            items = value.split(",") if knob.is_list else [value]
            self._set(knob, items)
        elif key in _DATA_NAMES:
            self.data.update(data_setting(key, value))
        elif key == "config":
            self.config = value
        else:
            raise UnknownFlagError(self.family, key)

    def _set(self, knob: Knob, items: Sequence[str]) -> None:
        try:
            values = tuple(knob.parse(v) for v in items)
            self.knobs[knob.name] = knob.check(values if knob.is_list else values[0])
        except KnobError as exc:
            raise self._knob_error(exc) from None

    def flags(self, words: Sequence[str]) -> None:
        """``--KNOB VALUE ...`` words."""
        i = 0
        while i < len(words):
            word = words[i]
            if not _is_flag(word):
                raise UsageError(f"{self.family.name}: unexpected {word!r} (knobs and data "
                                 "settings are given as --NAME VALUE)")
            name, eq, inline = word[2:].partition("=") if word.startswith("--") \
                else (word, "", "")
            values: list[str] = [inline] if eq else []
            j = i + 1
            if not eq:
                while j < len(words) and not _is_flag(words[j]):
                    values.append(words[j])
                    j += 1
            self._flag(word, name, values, bool(eq))
            i = j

    def _flag(self, word: str, name: str, values: list[str], inline: bool) -> None:
        knob = self.allowed.get(name) if word.startswith("--") else None
        negated = name.removeprefix("no-") if name.startswith("no-") else None
        if knob is not None:
            if knob.is_list:
                if inline:
                    values = values[0].split(",")
                self._need(word, values, knob.describe(), many=True)
                self._set(knob, values)
            elif knob.element is bool and knob.choices is None:
                self._at_most_one(word, values)
                self._set(knob, values or ["true"])
            else:
                self._need(word, values, knob.describe())
                self._set(knob, values)
        elif negated is not None and word.startswith("--") and (
                negated in self.allowed or negated == "mirror"):
            if values:
                raise UsageError(f"{self.family.name}: {word} takes no value, got "
                                 f"{' '.join(values)!r}")
            if negated == "mirror":
                self.data["mirror"] = False
            else:
                target = self.allowed[negated]
                if not (target.element is bool and target.choices is None):
                    raise UnknownFlagError(self.family, word)
                self._set(target, ["false"])
        elif word.startswith("--") and name in _DATA_NAMES:
            if name == "mirror":
                self._at_most_one(word, values)
                self.data.update(data_setting(name, values[0] if values else "true"))
            else:
                self._need(word, values, "a value")
                self.data.update(data_setting(name, values[0]))
        elif word.startswith("--") and name == "config":
            self._need(word, values, "a configuration name")
            self.config = values[0]
        else:
            raise UnknownFlagError(self.family, word)

    def _need(self, flag: str, values: list[str], accepts: str, many: bool = False) -> None:
        if not values:
            raise UsageError(f"{self.family.name}: {flag} needs a value ({accepts})")
        if len(values) > 1 and not many:
            raise UsageError(f"{self.family.name}: {flag} takes one value ({accepts}), got "
                             f"{' '.join(values)!r}")

    def _at_most_one(self, flag: str, values: list[str]) -> None:
        if len(values) > 1:
            raise UsageError(f"{self.family.name}: {flag} takes true or false at most, got "
                             f"{' '.join(values)!r}")


def _is_flag(word: str) -> bool:
    return word.startswith("-") and word != "-" and not _NEGATIVE_NUMBER.match(word)


# ---------------------------------------------------------------- help


def flags_help(family: Family, *, data: bool = True) -> str:
    """The knobs (and data flags) of ``family`` with defaults, for a command's help."""
    from pynetbuilder.models.datasets import default_data

    knobs: list[tuple[str, str]] = []
    for knob in family.knobs.values():
        default = knob.default
        if knob.is_list:
            default = " ".join(map(str, default))
        elif knob.element is bool and knob.choices is None:
            default = "on" if default else "off"
        flag = f"--{knob.name} {'N [N ...]' if knob.is_list else 'VALUE'}"
        knobs.append((flag, f"{knob.describe()} (default: {default})"))
    knobs.append(("--config NAME", "a named configuration (NET@NAME in one word): "
                  + (", ".join(family.references) or "none")))
    sections = [(f"{family.name} knobs:", knobs)]
    if data:
        d = default_data(family.dataset)
        rows: list[tuple[str, str]] = []
        for f in DATA_FLAGS:
            if f.name == "mirror":
                rows.append(("--no-mirror", f.help.split(": ", 1)[1]))
                continue
            default = getattr(d, f.name) if f.name != "mean" else ",".join(
                f"{v:g}" for v in d.mean_values or ())
            rows.append((f"--{f.name} {f.metavar}", f"{f.help} (default: {default})"))
        sections.append((f"data of the train/test nets ({family.dataset} defaults):", rows))
    width = max(len(flag) for _, rows in sections for flag, _ in rows) + 2
    lines: list[str] = []
    for title, rows in sections:
        lines.append(title)
        lines += [f"  {flag:<{width}}{text}" for flag, text in rows]
    return "\n".join(lines)
