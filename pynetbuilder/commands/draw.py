"""``pynetbuilder draw NET [--KNOB VALUE ...] -o FILE.svg|png|pdf|dot``: draw a net with Graphviz.

``NET`` is a prototxt file or a registry model (``resnet_imagenet --blocks 3 4 23 3``
or ``resnet_imagenet:blocks=3,4,23,3``), as :func:`pynetbuilder.inspect.load` takes
it.  The output format is the file's suffix.  See :mod:`pynetbuilder.draw` for what
a node shows, folding and groups.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pynetbuilder.cli import Parser
from pynetbuilder.errors import UsageError
from pynetbuilder.io import write_files

if TYPE_CHECKING:
    from pynetbuilder.inspect import Inspected

SUFFIXES = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
USAGE = ("pynetbuilder draw NET [--KNOB VALUE ...] -o FILE.svg|png|pdf|dot "
         "[--level layer|block] [--phase deploy|train|test] [--rankdir TB|LR|BT|RL] "
         "[--input-shape N,C,H,W]")


def add_net_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that choose what is analysed: phase and input shape (shared with ``report``)."""
    parser.add_argument("--phase", type=str.lower, default="deploy",
                        choices=("deploy", "train", "test"),
                        help="the net of this phase (default: deploy; TRAIN/TEST accepted)")
    parser.add_argument("--input-shape", "--input_shape", dest="input_shape",
                        metavar="N,C,H,W",
                        help="replace the input shape (C,H,W keeps the batch size)")
    parser.add_argument("--rankdir", type=str.upper, default="TB",
                        choices=("TB", "LR", "BT", "RL"),
                        help="direction of the drawing: top-bottom (default), left-right ...")


def split_net(argv: Sequence[str], usage: str) -> tuple[str, list[str]]:
    """``NET`` (the first word) and the rest; ``--help`` prints ``usage``."""
    argv = list(argv)
    if not argv or argv[0].startswith("-"):
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: {usage}\n\nNET is a .prototxt file or a model "
                  "(pynetbuilder list), with its knob flags after it (resnet --depth 110, "
                  "resnet:depth=110), or a named configuration (resnet_imagenet@ResNet-50, "
                  "resnet_imagenet --config ResNet-50).")
            raise SystemExit(0)
        raise UsageError(f"a net comes first: {usage}")
    return argv[0], argv[1:]


def load_net(net_arg: str, knobs: Sequence[str], args: argparse.Namespace) -> Inspected:
    """:func:`pynetbuilder.inspect.load` with the parsed ``--phase`` / ``--input-shape``."""
    from pynetbuilder.inspect import load, parse_input_shape

    shape = parse_input_shape(args.input_shape) if args.input_shape else None
    return load(net_arg, knobs, phase=args.phase, input_shape=shape)


def output_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(
            f"-o {path}: the drawing's format comes from its suffix: .svg, .png, .pdf or "
            ".dot (Graphviz source)"
        )
    return SUFFIXES[suffix]


def main(argv: Sequence[str]) -> None:
    from pynetbuilder import draw

    net_arg, rest = split_net(argv, USAGE)
    parser = Parser(prog="pynetbuilder", usage=USAGE)
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the drawing: .svg, .png, .pdf or .dot")
    parser.add_argument("--level", type=str.lower, default="layer", choices=draw.LEVELS,
                        help="one node per layer (in-place layers folded in; default) or "
                        "one node per block")
    add_net_flags(parser)
    args, knobs = parser.parse_known_args(rest)
    fmt = output_format(args.output)
    inspected = load_net(net_arg, knobs, args)
    d = draw.diagram(inspected.net, inspected.report, args.level)
    data = draw.render_diagram(d, fmt, args.rankdir)
    (path,) = write_files({Path(args.output): data})
    groups = len(d.groups()) if d.level == "layer" else 0
    print(f"wrote {path} ({len(d.nodes)} nodes"
          + (f" in {groups} blocks" if groups else "") + f", {d.level} view, "
          f"{inspected.report.phase} net)" + (f"; {d.note}" if d.note else ""))
