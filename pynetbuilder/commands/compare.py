"""``pynetbuilder compare A B [C ...] [--by block|stage] [--all] [--json FILE]``.

Each NET is a prototxt file or a registry model in one word,
``NAME[@CONFIG][:KNOB=VALUE ...]`` with list items separated by commas
(``resnet_imagenet:num_output_stage1=256:blocks=3,4,23,3``,
``resnet_imagenet@ResNet-50``).  Prints the totals side
by side (params, MACs, activations, layers) with each net's difference from the
first, then the blocks (or stages) whose params or MACs differ.

Matching blocks across nets: by equal name first (``difflib`` over the block
sequences), and where the names differ, in order (the 3rd unmatched block of A with
the 3rd of B between the same matched neighbours).  A block is a lego block for a
registry model and the name prefix for a prototxt (see
:func:`pynetbuilder.inspect.block_of_name`); a stage is a block without its
trailing index: ``stage2_block3`` -> ``stage2``, ``res4b22`` -> ``res4``,
``inception_3a`` -> ``inception_3``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import TextIO

from pynetbuilder.cli import Parser
from pynetbuilder.commands.analyze import add_net_flags
from pynetbuilder.errors import UsageError
from pynetbuilder.inspect import BlockTotals, Inspected, block_rows, load
from pynetbuilder.io import write_files

FIGURES = ("params", "macs", "activations", "layers")
LABELS = {"params": "params", "macs": "MACs", "activations": "activations", "layers": "layers"}


def parser(prog: str = "pynetbuilder compare") -> Parser:
    p = Parser(
        prog=prog,
        allow_abbrev=False,
        description="Compare the totals of several nets side by side, and the blocks "
        "where they differ.",
        epilog="NET: a .prototxt file or a model in one word, NAME[@CONFIG][:KNOB=VALUE ...], "
        "list items separated by commas (resnet_imagenet:blocks=3,4,23,3, "
        "resnet_imagenet@ResNet-50).",
    )
    p.add_argument("nets", nargs="+", metavar="NET", help="two or more nets")
    add_net_flags(p)
    p.add_argument("--by", choices=("block", "stage"), default="block",
                   help="group layers by block (default) or by stage")
    p.add_argument("--all", action="store_true",
                   help="list every group, not only those that differ")
    p.add_argument("--json", metavar="FILE", help="write the comparison as JSON")
    return p


def stage_of(block: str) -> str:
    """A block's stage: the name without its trailing block index (see module doc)."""
    found = re.match(r"^(.*)_block\d+$", block) or re.match(r"^(.*\d)[a-z]\d*$", block)
    return found.group(1) if found else block


def grouped(inspected: Inspected, by: str) -> list[BlockTotals]:
    """Totals per block, or per stage (blocks merged in order)."""
    blocks = block_rows(inspected)
    if by == "block":
        return blocks
    merged: dict[str, list[int]] = {}
    for b in blocks:
        s = merged.setdefault(stage_of(b.block), [0, 0, 0, 0])
        for i, v in enumerate((b.layers, b.params, b.macs, b.activations)):
            s[i] += v
    return [BlockTotals(name, *s) for name, s in merged.items()]


@dataclass
class AlignedRow:
    """One group across the nets: its totals per net (None where a net lacks it)."""

    groups: list[BlockTotals | None]

    def differs(self) -> bool:
        """Whether params or MACs differ, a group a net lacks counting as 0 (so a
        missing group without either, an input layer, differs in nothing)."""
        figures = {(g.params, g.macs) if g is not None else (0, 0) for g in self.groups}
        return len(figures) > 1


def align(per_net: Sequence[Sequence[BlockTotals]]) -> list[AlignedRow]:
    """Rows matching each net's groups to the first net's (see module doc)."""
    first = per_net[0]
    # for each group of the first net: its partner in every net; unmatched others
    # follow the first-net group they come after
    partners: list[list[BlockTotals | None]] = [
        [g, *([None] * (len(per_net) - 1))] for g in first
    ]
    extras: dict[int, list[tuple[int, BlockTotals]]] = {}  # after first-net index -> rows
    for k, other in enumerate(per_net[1:], start=1):
        matcher = SequenceMatcher(a=[g.block for g in first], b=[g.block for g in other],
                                  autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            pairs = min(i2 - i1, j2 - j1) if tag != "equal" else i2 - i1
            for d in range(pairs):
                partners[i1 + d][k] = other[j1 + d]
            for j in range(j1 + pairs, j2):
                extras.setdefault(i1 + pairs - 1, []).append((k, other[j]))
    rows: list[AlignedRow] = []
    for i in range(-1, len(first)):
        if i >= 0:
            rows.append(AlignedRow(partners[i]))
        for k, group in extras.get(i, []):
            cells: list[BlockTotals | None] = [None] * len(per_net)
            cells[k] = group
            rows.append(AlignedRow(cells))
    return rows


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"N{i + 1}" for i in range(n)]


def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


def _table(rows: list[list[str]], left: int) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines) + "\n"


def totals_table(nets: Sequence[Inspected]) -> str:
    letters = _letters(len(nets))
    head = ["", *letters, *(f"{x}-A" for x in letters[1:])]
    rows = [head]
    for figure in FIGURES:
        values = [getattr(n.report.totals, figure) for n in nets]
        rows.append([LABELS[figure], *(f"{v:,}" for v in values),
                     *(_signed(v - values[0]) for v in values[1:])])
    return _table(rows, 1)


def groups_table(nets: Sequence[Inspected], aligned: list[AlignedRow], show_all: bool) -> str:
    letters = _letters(len(nets))
    head = [*(f"{x}" for x in letters)]
    for figure in ("params", "macs"):
        head += [f"{LABELS[figure]} {x}" for x in letters]
        head += [f"{LABELS[figure]} {x}-A" for x in letters[1:]]
    rows = [head]
    for row in aligned:
        if not show_all and not row.differs():
            continue
        cells = [g.block if g is not None else "-" for g in row.groups]
        for figure in ("params", "macs"):
            values = [getattr(g, figure) if g is not None else None for g in row.groups]
            cells += [f"{v:,}" if v is not None else "-" for v in values]
            # a group a net lacks counts as 0 (shown as "-" when both lack it)
            cells += ["-" if v is None and values[0] is None else
                      _signed((v or 0) - (values[0] or 0)) for v in values[1:]]
        rows.append(cells)
    if len(rows) == 1:
        return ""
    return _table(rows, len(nets))


def comparison_json(nets: Sequence[Inspected], aligned: list[AlignedRow], by: str) -> str:
    data = {
        "nets": [{"source": n.name, "net": n.report.name, "phase": n.phase,
                  **{f: getattr(n.report.totals, f) for f in FIGURES},
                  "skipped_layers": [s.as_dict() for s in n.report.skipped]} for n in nets],
        "groups_by": by,
        "groups": [
            [None if g is None else {"name": g.block, "layers": g.layers, "params": g.params,
                                     "macs": g.macs, "activations": g.activations}
             for g in row.groups]
            for row in aligned
        ],
    }
    return json.dumps(data, indent=1) + "\n"


def main(argv: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    args = parser().parse_args(list(argv))
    if len(args.nets) < 2:
        raise UsageError(f"compare needs at least two nets, got {len(args.nets)}")
    nets = [load(n, phase=args.phase, input_shape=args.input_shape) for n in args.nets]
    aligned = align([grouped(n, args.by) for n in nets])
    if args.json:
        write_files({Path(args.json): comparison_json(nets, aligned, args.by)})
        print(f"wrote {args.json}", file=out)
    print_comparison(nets, aligned, args.by, args.all, out)


def print_comparison(nets: Sequence[Inspected], aligned: list[AlignedRow], by: str,
                     show_all: bool, out: TextIO) -> None:
    letters = _letters(len(nets))
    for letter, n in zip(letters, nets):
        print(f"{letter}: {n.name}  ({n.report.name}, {n.phase})", file=out)
        for s in n.report.skipped_lines():
            print(f"   {s}", file=out)
    print(file=out)
    print(totals_table(nets), end="", file=out)
    print(file=out)
    table = groups_table(nets, aligned, show_all)
    if table:
        shown = f"every {by}" if show_all else f"{by}s whose params or MACs differ"
        print(f"{shown} (matched by name, else in order):", file=out)
        print(table, end="", file=out)
    else:
        print(f"every {by} has the same params and MACs in all nets", file=out)
