"""``pynetbuilder build NET [-o DIR] [--json FILE] [--table]`` and ``pynetbuilder list``.

NET is a model spec (:mod:`pynetbuilder.models.spec`): ``resnet --depth 110``,
``resnet:depth=110``, ``resnet_imagenet@ResNet-50`` or ``resnet_imagenet --config
ResNet-50``.  Knob flags come from the family's function signature: ``--depth 110``,
``--n_layers 2 2 3 3 3`` for a list, ``--use_bn`` / ``--no-use_bn`` (or
``--use_bn false``) for a switch.  The data flags of the train/test nets have the
family's dataset defaults (CIFAR 32x32 or ImageNet 224x224).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pynetbuilder.cli import Parser, add_output_flags, emit
from pynetbuilder.errors import UsageError
from pynetbuilder.models import FAMILIES, Family
from pynetbuilder.models.spec import (
    ModelSpec,
    UnknownFlagError,
    build_model,
    flags_help,
    model_name,
    parse_model_spec,
)

USAGE = "usage: pynetbuilder build NET [--KNOB VALUE ...] [-o DIR] [--json FILE] [--table]"


def model_parser(family: Family, prog: str, description: str | None = None) -> Parser:
    """A command's parser for a model: its own flags are added by the caller; ``--help``
    ends with the family's knobs and data flags (parsed by the library)."""
    return Parser(prog=prog, description=description or family.summary,
                  usage=f"{prog} [--KNOB VALUE ...] [--config NAME] [options]",
                  epilog=flags_help(family), formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_model(words: Sequence[str], parser: Parser, extra: str = ""
                ) -> tuple[ModelSpec, argparse.Namespace]:
    """Split ``words`` (NET first) into the command's flags (``parser``) and the model
    spec (the library's); an unknown flag names both kinds (``extra``: more to say)."""
    args, rest = parser.parse_known_args(list(words[1:]))
    try:
        spec = parse_model_spec([words[0], *rest])
    except UnknownFlagError as exc:
        raise UsageError(exc.message("knob or flag") + extra) from None
    return spec, args


def main(argv: Sequence[str], *, family_name: str | None = None, prog: str | None = None) -> None:
    """``pynetbuilder build NET ...`` (``family_name`` fixes NET for a thin app script)."""
    argv = list(argv)
    if family_name is None:
        if not argv or argv[0].startswith("-"):
            if argv and argv[0] in ("-h", "--help"):
                print(USAGE + "\n\nNET: a model (resnet --depth 110, resnet:depth=110, "
                      "resnet_imagenet@ResNet-50)\nmodels: " + ", ".join(FAMILIES.names()))
                return
            raise UsageError(
                "build needs a model name first; known models: " + ", ".join(FAMILIES.names())
            )
        words = argv
    else:
        words = [family_name, *argv]
    family = FAMILIES[model_name(words[0])]
    parser = model_parser(family, prog or f"pynetbuilder build {family.name}")
    add_output_flags(parser)
    spec, args = parse_model(words, parser)
    emit(build_model(spec), args)


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
            print(f"    reference {label}: {flags}  ({family.name}@{label})")
