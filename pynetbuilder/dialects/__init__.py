"""Reading prototxt written for Caffe's widespread forks (placeholder: V1 detection)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

from pynetbuilder.targets.checker import ReadFacts


class DialectRead(NamedTuple):
    net: Any
    facts: ReadFacts


def read_dialect(path: str | Path) -> DialectRead:
    from pynetbuilder.inspect import read_prototxt

    text = Path(path).read_text(encoding="utf-8")
    v1 = re.search(r"^\s*layers\s*[{<]", text, flags=re.M) is not None
    return DialectRead(read_prototxt(path), ReadFacts(v1=v1))
