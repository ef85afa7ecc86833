"""``pynetbuilder build NAME [--KNOB VALUE ...] [-o DIR] [--json FILE]`` and ``pynetbuilder list``.

Knob flags come from the family's function signature: ``--depth 110``,
``--n_layers 2 2 3 3 3`` for a list, ``--use_bn`` / ``--no-use_bn`` (or
``--use_bn false``) for a switch.  The data flags of the train/test nets have the
family's dataset defaults (CIFAR 32x32 or ImageNet 224x224).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pynetbuilder.cli import Parser, add_data_flags, add_output_flags, data_from_args, emit
from pynetbuilder.errors import UsageError
from pynetbuilder.models import FAMILIES, Family
from pynetbuilder.models.registry import Knob


def _add_knob(group: argparse._ArgumentGroup, knob: Knob) -> None:
    flag = f"--{knob.name}"
    default = knob.default
    if knob.is_list:
        shown = " ".join(map(str, default))
        group.add_argument(flag, nargs="+", metavar="N", default=None,
                           help=f"{knob.describe()} (default: {shown})")
    elif knob.element is bool and knob.choices is None:
        group.add_argument(flag, nargs="?", const="true", default=None, metavar="true|false",
                           help=f"switch (default: {'on' if default else 'off'})")
        group.add_argument(f"--no-{knob.name}", dest=knob.name, action="store_const",
                           const="false", help=argparse.SUPPRESS)
    else:
        group.add_argument(flag, default=None, metavar="VALUE",
                           help=f"{knob.describe()} (default: {default})")


def family_parser(family: Family, prog: str) -> Parser:
    p = Parser(prog=prog, description=family.summary)
    group = p.add_argument_group(f"{family.name} knobs")
    for knob in family.knobs.values():
        _add_knob(group, knob)
    add_data_flags(p, family.dataset)
    add_output_flags(p)
    return p


def knob_values(family: Family, args: argparse.Namespace) -> dict[str, object]:
    """The knobs given on the command line, converted to their types."""
    values: dict[str, object] = {}
    for knob in family.knobs.values():
        given = getattr(args, knob.name)
        if given is None:
            continue
        try:
            if knob.is_list:
                values[knob.name] = tuple(knob.parse(v) for v in given)
            else:
                values[knob.name] = knob.parse(given)
        except UsageError as exc:
            raise UsageError(f"{family.name}: {exc}") from None
    return values


def main(argv: Sequence[str], *, family_name: str | None = None, prog: str | None = None) -> None:
    """``pynetbuilder build NAME ...`` (``family_name`` fixes NAME for a thin app script)."""
    argv = list(argv)
    if family_name is None:
        if not argv or argv[0].startswith("-"):
            if argv and argv[0] in ("-h", "--help"):
                print("usage: pynetbuilder build NAME [--KNOB VALUE ...] [-o DIR] [--json FILE]"
                      "\n\nmodels: " + ", ".join(FAMILIES.names()))
                return
            raise UsageError(
                "build needs a model name first; known models: " + ", ".join(FAMILIES.names())
            )
        family_name, argv = argv[0], argv[1:]
    family = FAMILIES[family_name]
    parser = family_parser(family, prog or f"pynetbuilder build {family.name}")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("-")), unknown[0])
        raise UsageError(
            f"{family.name} has no knob or flag {flag!r}; its knobs: "
            + ", ".join(f"--{k}" for k in family.knobs)
        )
    net = family.build(data=data_from_args(args), **knob_values(family, args))
    emit(net, args)


def app(family_name: str, prog: str) -> int:
    """The whole of a thin per-family script under ``apps/``: ``sys.exit(app("vgg", ...))``."""
    from pynetbuilder.cli import run

    return run(lambda argv: main(argv or [], family_name=family_name, prog=prog),
               sys.argv[1:], prog=prog)


def list_main(argv: Sequence[str]) -> None:
    """``pynetbuilder list``: every family with its knobs and named configurations."""
    Parser(prog="pynetbuilder list", description="list the model families").parse_args(argv)
    for family in FAMILIES:
        print(f"{family.name}  ({family.dataset})  {family.summary}")
        for knob in family.knobs.values():
            default = knob.default
            if knob.is_list:
                default = " ".join(map(str, default))
            print(f"    --{knob.name} {default!s:<12} {knob.describe()}")
        for label, knobs in family.references.items():
            flags = " ".join(
                f"--{k} {' '.join(map(str, v)) if isinstance(v, tuple) else v}"
                for k, v in knobs.items()
            )
            print(f"    reference {label}: {flags}")
