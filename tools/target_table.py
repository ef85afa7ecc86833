#!/usr/bin/env python3
"""Print (or write, or check) the table of deploy-target verdicts for the model zoo.

    .venv/bin/python tools/target_table.py           print the Markdown table
    .venv/bin/python tools/target_table.py --write   replace it in README.md (Deploy targets)
    .venv/bin/python tools/target_table.py --check   exit 1 if that table is stale

One row per family (its default knobs), one column per target: "ok" when
`pynetbuilder check FAMILY --target T` finds nothing, else each violation as
"layer: rule" (several of one kind counted).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pynetbuilder.models import FAMILIES  # noqa: E402
from pynetbuilder.targets import check, known_targets, load_profile  # noqa: E402

README = ROOT / "README.md"
BEGIN, END = "<!-- target-table: begin -->", "<!-- target-table: end -->"
ORDER = ("bvlc", "opencv", "mnn", "tpu-mlir", "ascend", "rknn2", "nnie")


def verdict(violations: list) -> str:
    """"ok", or per kind of violation (an unsupported type, a field, another rule) its
    count when several, else the layer for a rule or a field."""
    if not violations:
        return "ok"
    kinds: Counter = Counter()
    layers: dict[str, str] = {}
    for v in violations:
        what = v.value if v.rule == "layer type not supported" or v.rule.startswith("field") \
            else v.rule
        kinds[what] += 1
        layers.setdefault(what, v.layer)
    cells = []
    for what, n in sorted(kinds.items()):
        if n > 1:
            cells.append(f"{what} x{n}")
        elif what in {v.value for v in violations if v.rule == "layer type not supported"}:
            cells.append(what)
        else:
            cells.append(f"{what} ({layers[what]})")
    return "; ".join(cells)


def rows() -> dict[str, dict[str, str]]:
    targets = [t for t in ORDER if t in known_targets()]
    targets += [t for t in known_targets() if t not in targets]
    profiles = [load_profile(t) for t in targets]
    table = {}
    for family in FAMILIES:
        net = family.build()
        report = net.report("deploy")
        proto = net.to_proto("deploy")
        table[family.name] = {p.name: verdict(check(proto, report.blob_shapes, p))
                              for p in profiles}
    return table


def table() -> str:
    data = rows()
    targets = list(next(iter(data.values())))
    lines = ["| family | " + " | ".join(f"`{t}`" for t in targets) + " |",
             "| --- |" + " --- |" * len(targets)]
    for family, cells in data.items():
        lines.append(f"| `{family}` | " + " | ".join(cells[t] for t in targets) + " |")
    return "\n".join(lines)


def current() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main(argv: list[str]) -> int:
    fresh = table()
    if "--check" in argv:
        return 0 if current() == fresh else 1
    if "--write" in argv:
        text = README.read_text(encoding="utf-8")
        head, rest = text.split(BEGIN, 1)
        README.write_text(head + BEGIN + "\n" + fresh + "\n" + END + rest.split(END, 1)[1],
                          encoding="utf-8")
        return 0
    print(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
