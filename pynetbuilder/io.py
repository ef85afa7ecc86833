"""Atomic output: a failed run never leaves a half-written file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def write_files(folder: str | Path, files: Mapping[str, str]) -> list[Path]:
    """Write every ``name -> text`` into ``folder``, all or nothing.

    Each file is first written in full to a temporary file beside its target;
    only when all are written are they renamed into place (``os.replace`` is
    atomic on POSIX), so readers see either the old file or the complete new one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, text in files.items():
            target = folder / name
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            staged.append((Path(tmp), target))
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return [target for _, target in staged]


def write_file(path: str | Path, text: str) -> Path:
    path = Path(path)
    return write_files(path.parent, {path.name: text})[0]
