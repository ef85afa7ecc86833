"""``pynetbuilder check NET --target NAME[,NAME ...] [--json [FILE]]``.

Checks a prototxt or registry model (its deploy net unless ``--phase`` says
otherwise) against deploy-target profiles and prints, per violation, the layer,
the value, the limit, the vendor document the rule comes from and a fix.  Exit
status 1 when anything is violated, 0 when the net is clean for every target, 2
for bad input (an unknown target lists the known ones).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pynetbuilder.cli import Parser
from pynetbuilder.commands.analyze import add_net_flags, split_net_and_knobs
from pynetbuilder.inspect import load
from pynetbuilder.io import write_files
from pynetbuilder.targets import ReadFacts, check, known_targets, load_profile


def parser() -> Parser:
    p = Parser(
        prog="pynetbuilder check", allow_abbrev=False,
        usage="%(prog)s NET [KNOB FLAGS] --target NAME[,NAME ...] [--json [FILE]] "
        "[--input-shape N,C,H,W] [--phase P]",
        description="Check a net against deploy-target profiles (layer types, limits, "
        "format). Exit status 1 when a rule is violated.",
        epilog="targets: " + ", ".join(known_targets()) + " (or a profile .toml file)",
    )
    p.add_argument("--target", required=True, metavar="NAME[,NAME ...]",
                   help="target profile(s): " + ", ".join(known_targets()) + ", or 'all'")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the verdicts as JSON to FILE (standard output without FILE)")
    add_net_flags(p)
    return p


def main(argv: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    p = parser()
    args, rest = p.parse_known_args(list(argv))
    net_arg, knobs = split_net_and_knobs(rest, p.prog)
    names = known_targets() if args.target == "all" else args.target.split(",")
    profiles = [load_profile(name) for name in names]  # bad names fail before any work
    inspected = load(net_arg, knobs, phase=args.phase, input_shape=args.input_shape)
    facts = read_facts(net_arg) if inspected.source == "prototxt" else ReadFacts()
    shapes = inspected.report.blob_shapes
    verdicts = []
    for profile in profiles:
        found = check(inspected.net, shapes, profile, facts)
        verdicts.append({"target": profile.name, "title": profile.title,
                         "ok": not found, "violations": [v.as_dict() for v in found],
                         "not_checked": [f"{what} ({src.cite()})"
                                         for what, src in profile.unverified],
                         "_found": found})
    skipped = [s.as_dict() for s in inspected.report.skipped]
    if args.json:
        doc = {"net": inspected.name, "phase": inspected.phase, "not_analysed": skipped,
               "targets": [{k: v for k, v in d.items() if k != "_found"} for d in verdicts]}
        text = json.dumps(doc, indent=2) + "\n"
        if args.json == "-":
            out.write(text)
        else:
            write_files({Path(args.json): text})
            print(f"wrote {args.json}", file=out)
    if args.json != "-":
        for d in verdicts:
            found = d["_found"]
            head = f"{d['target']} ({d['title']}): "
            print(head + ("ok" if not found else f"{len(found)} violation(s)"), file=out)
            for v in found:
                print("  " + v.line().replace("\n", "\n  "), file=out)
        for s in skipped:
            print(f"  not analysed: {s['name']} ({s['type']}): {s['reason']}", file=out)
    if any(not d["ok"] for d in verdicts):
        out.flush()
        raise SystemExit(1)


def read_facts(path: str) -> ReadFacts:
    """What the file looked like before reading normalised it (see :class:`ReadFacts`)."""
    from pynetbuilder.dialects import read_dialect

    return read_dialect(path).facts
