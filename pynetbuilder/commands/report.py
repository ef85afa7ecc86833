"""``pynetbuilder report NET [--KNOB VALUE ...] -o FILE.html``: a self-contained HTML report.

One page with the summary (totals), the drawing (block and layer views), the
cost per block as bars and the per-layer table (sortable); see
:mod:`pynetbuilder.html_report`.  ``NET`` is taken as ``pynetbuilder draw`` takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pynetbuilder.cli import Parser
from pynetbuilder.commands.draw import add_net_flags, load_net, split_net
from pynetbuilder.errors import UsageError
from pynetbuilder.io import write_files

USAGE = ("pynetbuilder report NET [--KNOB VALUE ...] -o FILE.html "
         "[--phase deploy|train|test] [--rankdir TB|LR|BT|RL] [--input-shape N,C,H,W]")


def main(argv: Sequence[str]) -> None:
    from pynetbuilder.html_report import render_html

    net_arg, rest = split_net(argv, USAGE)
    parser = Parser(prog="pynetbuilder", usage=USAGE)
    parser.add_argument("-o", "--output", required=True, metavar="FILE.html",
                        help="the HTML page to write")
    add_net_flags(parser)
    args, knobs = parser.parse_known_args(rest)
    if Path(args.output).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"-o {args.output}: the report is an HTML page; name it FILE.html")
    inspected = load_net(net_arg, knobs, args)
    page = render_html(inspected.net, inspected.report, title=inspected.name,
                       notes=inspected.notes, rankdir=args.rankdir)
    (path,) = write_files({Path(args.output): page})
    t = inspected.report.totals
    print(f"wrote {path} ({t.layers} layers, {t.params:,} learnable params, {t.macs:,} MACs, "
          f"{inspected.report.phase} net)")
