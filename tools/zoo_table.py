#!/usr/bin/env python3
"""Print (or check, or write into README.md) the model zoo table.

    .venv/bin/python tools/zoo_table.py            print the Markdown table
    .venv/bin/python tools/zoo_table.py --write    replace the table in README.md
    .venv/bin/python tools/zoo_table.py --check    exit 1 if README.md's table is stale

One row per named reference configuration of every registered family: learnable
parameters and multiply-accumulates of the deploy net at the family's native
input size, batch 1 (the conventions of README "Conventions").
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pynetbuilder.models import FAMILIES  # noqa: E402
from pynetbuilder.models.datasets import INPUT_SIZE  # noqa: E402

BEGIN, END = "<!-- zoo-table: begin -->", "<!-- zoo-table: end -->"


def _word(value: object) -> str:
    """A knob value as typed on the command line."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def knob_flags(knobs: dict) -> str:
    """The command-line flags that give ``knobs``."""
    return " ".join(
        f"--{k} {' '.join(map(_word, v)) if isinstance(v, tuple) else _word(v)}"
        for k, v in knobs.items()
    )


def table() -> str:
    lines = [
        "| family | configuration | knobs | input | params | MACs |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for family in FAMILIES:
        size = INPUT_SIZE[family.dataset]
        for label, knobs in family.references.items():
            t = family.build(**knobs).report().totals
            lines.append(
                f"| `{family.name}` | {label} | `{knob_flags(knobs) or '(defaults)'}` | "
                f"{size}x{size} | {t.params:,} | {t.macs:,} |"
            )
    return "\n".join(lines) + "\n"


def readme_with(text: str, new_table: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + new_table + text[end:]


def main(argv: list[str]) -> int:
    new = table()
    readme = ROOT / "README.md"
    if "--write" in argv:
        readme.write_text(readme_with(readme.read_text(), new))
    elif "--check" in argv:
        text = readme.read_text()
        if readme_with(text, new) != text:
            print("README.md's zoo table is stale: run tools/zoo_table.py --write",
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
