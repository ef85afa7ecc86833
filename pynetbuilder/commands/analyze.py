"""``pynetbuilder analyze NET [--input-shape N,C,H,W] [--phase P] [--json FILE] [--table]``.

``NET`` is a prototxt file or a registry model (``resnet --depth 110``,
``resnet:depth=110``, ``resnet_imagenet@ResNet-50``; see
:mod:`pynetbuilder.models.spec`).  Prints the per-layer table
(shapes, learnable params, MACs, activations) and the totals; with ``--json FILE``
the per-layer report goes to the file and the screen shows the totals (add
``--table`` for the table too).  ``--by-block`` adds the totals of each block.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pynetbuilder.cli import Parser
from pynetbuilder.errors import UsageError
from pynetbuilder.inspect import PHASES, Inspected, block_rows, load, parse_input_shape


def parser(prog: str = "pynetbuilder analyze") -> Parser:
    p = Parser(
        prog=prog,
        allow_abbrev=False,  # knob flags pass through: no prefix may be taken for ours
        usage="%(prog)s NET [KNOB FLAGS] [--input-shape N,C,H,W] [--phase P] [--json FILE] "
        "[--table] [--by-block]",
        description="Per-layer shapes, learnable params and MACs of a Caffe prototxt or a "
        "registry model, computed without Caffe.",
        epilog="NET: a .prototxt file, or a model name with knob flags (resnet --depth 110) "
        "or knobs in one word (resnet:depth=110, lists as 3,4,6,3), or a named "
        "configuration (resnet_imagenet@ResNet-50, or --config ResNet-50); `pynetbuilder "
        "list` shows the models, their knobs and configurations.",
    )
    add_net_flags(p)
    p.add_argument("--json", metavar="FILE", help="write the per-layer report as JSON")
    p.add_argument("--table", action="store_true",
                   help="print the per-layer table (the default unless --json is given)")
    p.add_argument("--by-block", action="store_true", help="also print each block's totals")
    return p


def add_net_flags(p: Parser) -> None:
    """The flags every command that loads NETs shares: --input-shape and --phase."""
    p.add_argument("--input-shape", metavar="N,C,H,W", type=_shape_arg,
                   help="shape of the net's input (C,H,W keeps the batch size); for data "
                   "layers, what the prototxt does not say (channels, image size)")
    p.add_argument("--phase", choices=PHASES, default="deploy",
                   help="which net of a train/test prototxt or model (default: deploy, "
                   "Caffe's TEST phase for a prototxt)")


def _shape_arg(text: str) -> tuple[int, ...]:
    import argparse

    try:
        return parse_input_shape(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--input-shape ")) from None


def main(argv: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    p = parser()
    args, rest = p.parse_known_args(list(argv))
    net_arg, knobs = split_net_and_knobs(rest, p.prog)
    inspected = load(net_arg, knobs, phase=args.phase, input_shape=args.input_shape)
    if args.json:
        from pynetbuilder.io import write_files

        write_files({Path(args.json): json_text(inspected)})
        print(f"wrote {args.json}", file=out)
    print_report(inspected, out, table=args.table or not args.json, by_block=args.by_block)


def split_net_and_knobs(words: Sequence[str], prog: str) -> tuple[str, list[str]]:
    """The NET argument and the knob flags after it (flags before NET are refused)."""
    words = list(words)
    if not words or words[0].startswith("-"):
        if words:
            raise UsageError(f"unknown flag {words[0]!r} before NET; see {prog} --help")
        raise UsageError(f"{prog} needs a NET: a .prototxt file or a model name")
    return words[0], words[1:]


def json_text(inspected: Inspected) -> str:
    data = inspected.report.to_json()
    data["source"] = inspected.name
    data["input_notes"] = list(inspected.notes)
    import json

    return json.dumps(data, indent=1) + "\n"


def print_report(inspected: Inspected, out: TextIO, *, table: bool, by_block: bool) -> None:
    report = inspected.report
    for note in inspected.notes:
        print(note, file=out)
    if table:
        print(report.table(), end="", file=out)
    elif report.skipped:
        print("\n".join(report.skipped_lines()), file=out)
    if by_block:
        print(block_table(inspected), end="", file=out)
    print(report.summary(), file=out)


def block_table(inspected: Inspected) -> str:
    """Each block's layers, learnable params, MACs and activations, in net order."""
    rows = [("block", "layers", "params", "MACs", "activations")]
    for b in block_rows(inspected):
        rows.append((b.block, f"{b.layers:,}", f"{b.params:,}", f"{b.macs:,}",
                     f"{b.activations:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])])
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n"
