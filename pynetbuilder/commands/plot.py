"""``pynetbuilder plot LOG [LOG ...] [-o DIR]``: a Caffe training log as CSV and pictures.

With ``-o DIR``: ``DIR/log.csv`` (one row per iteration: lr, loss, train and test
outputs; see :mod:`pynetbuilder.caffelog`), ``DIR/loss.png`` (training loss and test
loss against iterations) and ``DIR/accuracy.png`` (test scores; only when the log has
tests), written all or nothing.  Without ``-o`` the CSV goes to stdout.  Several logs
(a run and its resumed runs) are read in order into one table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pynetbuilder.caffelog import plot_files, read_logs
from pynetbuilder.cli import Parser
from pynetbuilder.io import write_files


def main(argv: Sequence[str]) -> None:
    p = Parser(prog="pynetbuilder plot",
               description="parse Caffe training logs into CSV and plot loss and accuracy")
    p.add_argument("logs", nargs="+", metavar="LOG", help="Caffe training log(s), in order")
    p.add_argument("-o", "--output_folder", metavar="DIR",
                   help="write log.csv, loss.png and accuracy.png here (default: CSV to stdout)")
    args = p.parse_args(argv)
    table = read_logs(args.logs)
    if not args.output_folder:
        sys.stdout.write(table.csv_text())
        return
    folder = Path(args.output_folder)
    written = write_files({folder / name: content
                             for name, content in plot_files(table).items()})
    its = table.iterations()
    print(f"{len(its)} rows, iterations {its[0]} to {its[-1]}")
    for column in table.score_columns() + [c for c in table.loss_columns() if c != "loss"]:
        last = table.last(column)
        if last:
            print(f"last {column} = {last[1]:g} (iteration {last[0]})")
    for path in written:
        print(f"wrote {path}")
