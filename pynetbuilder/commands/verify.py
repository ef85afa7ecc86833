"""``pynetbuilder verify NET [KNOB FLAGS] [--weights W] [--phase P] [--json [FILE]] ...``.

Runs real Caffe and the PyTorch module of NET on one random input (and random
weights that Caffe draws, unless ``--weights`` gives a ``.caffemodel``) and prints
each blob's largest difference.  Exit status 0 when every blob agrees within the
tolerance (``max |diff| <= tolerance * max |Caffe's|``), 1 when one does not (the
first is named), 2 for bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pynetbuilder.cli import Parser, torch_needed
from pynetbuilder.commands.analyze import add_net_flags, split_net_and_knobs
from pynetbuilder.errors import UsageError
from pynetbuilder.io import write_files


def parser(prog: str = "pynetbuilder verify") -> Parser:
    p = Parser(
        prog=prog, allow_abbrev=False,
        usage="%(prog)s NET [KNOB FLAGS] [--weights W.caffemodel] [--phase P] "
        "[--input-shape N,C,H,W] [--tolerance T] [--seed S] [--per-layer] [--gradients] "
        "[--json [FILE]]",
        description="Run real Caffe and the PyTorch module of a net on the same random "
        "input and compare every blob.",
    )
    add_net_flags(p)
    p.add_argument("--weights", metavar="W", help="a .caffemodel (default: random weights "
                   "drawn by Caffe, BatchNorm statistics positive)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest difference allowed, relative to the largest magnitude of "
                   "Caffe's blob (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random input and weights (default 0)")
    p.add_argument("--per-layer", action="store_true",
                   help="each layer reads Caffe's values of its inputs (rounding does not "
                   "build up through an ill-conditioned net, e.g. TRAIN-phase BatchNorm, "
                   "nor moves a max pooling's gradient to another of two near-equal inputs)")
    p.add_argument("--gradients", action="store_true",
                   help="also compare the input and parameter gradients of a backward pass")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the comparison as JSON, to FILE or (without FILE) to the screen")
    return p


def main(argv: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    p = parser()
    args, rest = p.parse_known_args(list(argv))
    net_arg, knobs = split_net_and_knobs(rest, p.prog)
    if not args.tolerance > 0:
        raise UsageError(f"--tolerance must be positive, got {args.tolerance}")
    if args.weights and not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights}: no such file")
    with torch_needed("verify"):
        from pynetbuilder.pytorch.caffe_oracle import CaffeError
        from pynetbuilder.pytorch.verify import verify
    try:
        result = verify(net_arg, knobs, phase=args.phase, weights=args.weights,
                        input_shape=args.input_shape, seed=args.seed,
                        tolerance=args.tolerance, gradients=args.gradients,
                        per_layer=args.per_layer)
    except CaffeError as exc:
        raise UsageError(f"{net_arg}: {exc}") from None
    data = {"net": result.net, "phase": result.phase, "tolerance": result.tolerance,
            "ok": result.ok, "blobs": [c.as_dict() for c in result.blobs],
            "params_after_forward": [c.as_dict() for c in result.params],
            "gradients": [c.as_dict() for c in result.gradients]}
    if args.json == "-":
        print(json.dumps(data, indent=1), file=out)
    else:
        if args.json:
            write_files({Path(args.json): json.dumps(data, indent=1) + "\n"})
        print_table(result, out)
    bad = result.first_failure
    if bad is not None:
        if bad.our_shape is not None:
            print(f"pynetbuilder: blob {bad.name!r} differs in size: "
                  f"{'x'.join(map(str, bad.shape))} in Caffe, "
                  f"{'x'.join(map(str, bad.our_shape))} in the module", file=sys.stderr)
            raise SystemExit(1)
        print(f"pynetbuilder: blob {bad.name!r} differs: max |diff| {bad.max_diff:.3g} > "
              f"{result.tolerance:g} x {bad.caffe_max:.3g}{result.hint}", file=sys.stderr)
        raise SystemExit(1)


def print_table(result, out: TextIO) -> None:
    rows = [("blob", "shape", "max |diff|", "max |Caffe|", "")]
    for c in result.checks:
        rows.append((c.name, "x".join(map(str, c.shape)) or "scalar", f"{c.max_diff:.3g}",
                     f"{c.caffe_max:.3g}", "ok" if c.ok else "DIFFERS"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1])]
                        + [c.rjust(w) for c, w in zip(r[2:4], widths[2:4])] + [r[4]]).rstrip(),
              file=out)
    worst = max((c.max_diff / c.caffe_max for c in result.checks if c.caffe_max), default=0.0)
    verdict = "agree" if result.ok else "DIFFER"
    print(f"{len(result.checks)} blobs {verdict} ({result.phase} phase; largest relative "
          f"difference {worst:.2g}, tolerance {result.tolerance:g})", file=out)
