"""The model registry: each family is a plain function whose keyword arguments are its knobs.

A family function looks like::

    def resnet(depth: int = 110, block_type: Literal["basic", "bottleneck"] = "basic",
               initial_channels: int = 16, num_classes: int = 10,
               *, data: ClassificationData | None = None) -> Net

Every parameter before the ``*`` is a knob; its annotation says what it accepts
(``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` choices, ``tuple[int, ...]``
lists) and :func:`build` checks the type before calling the function, which checks
ranges and formulas itself (raising :class:`KnobError`).  ``data`` is the data
lego of the train/test nets; ``None`` means the family's dataset default.

The registry is a constant built from :data:`pynetbuilder.models.FAMILIES`; nothing
registers itself at import time.
"""

from __future__ import annotations

import builtins
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net

DATASETS = ("cifar", "imagenet")


class KnobError(UsageError):
    """A knob value out of what the family accepts: names the knob and what it accepts."""

    def __init__(self, knob: str, accepts: str, got: Any):
        self.knob, self.accepts, self.got = knob, accepts, got
        super().__init__(f"knob {knob} accepts {accepts}, got {got!r}")


@dataclass(frozen=True)
class Knob:
    name: str
    kind: Any  # int, float, bool, str, a Literal[...] or tuple[int, ...]
    default: Any

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return typing.get_args(self.kind) if typing.get_origin(self.kind) is Literal else None

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.kind) is tuple

    @property
    def element(self) -> type:
        """The type of a value (of each item for a list knob)."""
        if self.choices is not None:
            return type(self.choices[0])
        if self.is_list:
            return typing.get_args(self.kind)[0]
        return self.kind

    def describe(self) -> str:
        """What the knob accepts, in words."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.is_list:
            plural = {int: "integers", float: "numbers", bool: "true/false values",
                      str: "strings"}
            return f"a list of {plural[self.element]}"
        words = {int: "an integer", float: "a number", bool: "true or false",
                 str: "a string"}
        return words[self.kind]

    def check(self, value: Any) -> Any:
        """``value`` if it has the knob's type (a list knob also takes a list); else KnobError."""
        if self.choices is not None:
            if value not in self.choices:
                raise KnobError(self.name, self.describe(), value)
            return value
        if self.is_list:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise KnobError(self.name, self.describe(), value)
            return tuple(self._scalar(v, value) for v in value)
        return self._scalar(value, value)

    def _scalar(self, value: Any, whole: Any) -> Any:
        kind = self.element
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise KnobError(self.name, self.describe(), whole)
        return value

    def finite(self, value: Any) -> bool:
        """Whether a checked value holds no NaN or infinity."""
        values = value if isinstance(value, tuple) else (value,)
        return all(math.isfinite(v) for v in values if isinstance(v, float))

    def parse(self, text: str) -> Any:
        """A command-line word as the knob's value (one item of a list knob)."""
        kind = self.element
        try:
            if kind is bool:
                lowered = text.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            return kind(text)
        except ValueError:
            raise KnobError(self.name, self.describe(), text) from None


@dataclass(frozen=True)
class Family:
    """One architecture family: its function, its knobs and its named configurations."""

    name: str
    function: Callable[..., Net]
    dataset: str  # "cifar" (32x32) or "imagenet" (224x224)
    references: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, not {self.dataset!r}")
        for label, knobs in self.references.items():
            unknown = set(knobs) - set(self.knobs)
            if unknown:
                raise ValueError(f"{self.name} reference {label} has unknown knobs {unknown}")

    @cached_property
    def knobs(self) -> dict[str, Knob]:
        """The family function's keyword arguments as knobs (read once, kept)."""
        hints = typing.get_type_hints(self.function)
        return {
            p.name: Knob(p.name, hints[p.name], p.default)
            for p in inspect.signature(self.function).parameters.values()
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        }

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.function) or ""
        return doc.split("\n\n")[0].replace("\n", " ")

    def build(self, data: Any = None, **knobs: Any) -> Net:
        """Check every knob's name and type, then build the net."""
        allowed = self.knobs
        checked = {}
        try:
            for name, value in knobs.items():
                if name not in allowed:
                    raise UsageError(
                        f"{self.name} has no knob {name!r}; its knobs: {', '.join(allowed)}"
                    )
                checked[name] = allowed[name].check(value)
        except KnobError as exc:
            raise UsageError(f"{self.name}: {exc}") from None
        # a family's own range check names a bad value best; NaN and infinity that pass
        # it (or break the family before it says anything) are refused here
        not_finite = [n for n, v in checked.items() if not allowed[n].finite(v)]
        finite_note = " (knobs take finite numbers)" if not_finite else ""
        try:
            net = self.function(**checked, data=data)
        except KnobError as exc:
            raise UsageError(f"{self.name}: {exc}{finite_note}") from None
        except UsageError as exc:
            if not_finite:
                raise UsageError(f"{exc}{finite_note}") from None
            raise
        except Exception:
            if not not_finite:
                raise
            net = None
        if not_finite:
            n = not_finite[0]
            raise UsageError(f"{self.name}: knob {n} accepts a finite number, got {checked[n]}")
        return net


class Registry:
    """Families by name, each imported from its module when first asked for (a
    command builds one family: it need not import the others)."""

    def __init__(self, package: str, modules: Mapping[str, str]):
        self._package = package
        self._modules = modules

    def names(self) -> builtins.list[str]:
        return sorted(self._modules)

    def __getitem__(self, name: str) -> Family:
        module = self._modules.get(name)
        if module is None:
            raise UsageError(
                f"unknown model {name!r}; known models: {', '.join(self.names())}"
            )
        import importlib

        families = importlib.import_module(f"{self._package}.{module}").FAMILIES
        return next(f for f in families if f.name == name)

    def __iter__(self):  # noqa: ANN204 - an iterator of families
        return (self[name] for name in self.names())


def require(condition: bool, knob: str, accepts: str, got: Any) -> None:
    """Raise :class:`KnobError` unless ``condition``: for range and formula checks."""
    if not condition:
        raise KnobError(knob, accepts, got)


def require_positive(knob: str, value: int) -> None:
    """KnobError unless ``value`` >= 1."""
    require(value >= 1, knob, "a positive integer", value)


def depth_units(depth: int, step: int, offset: int, what: str = "") -> int:
    """``n`` for a ``depth`` of the form ``step * n + offset`` (n >= 1), else a KnobError
    naming the formula with examples (``what`` says what it applies to)."""
    n = (depth - offset) // step
    examples = ", ".join(str(step * k + offset) for k in (1, 2, 3))
    require(n >= 1 and step * n + offset == depth, "depth",
            f"{step}n+{offset}{f' for {what}' if what else ''}: {examples}, ...", depth)
    return n
