"""Atomic output: a failed run never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def write_files(files: Mapping[str | Path, str | bytes]) -> list[Path]:
    """Write every ``path -> text`` (or bytes), all or nothing.

    Each file is first written in full to a temporary file beside its target;
    only when all are written are they renamed into place (``os.replace`` is
    atomic on POSIX), so a reader sees the old file or the complete new one and
    a failure part-way leaves no target touched.
    """
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []
    done = False
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask  # what open() would give; mkstemp makes files 0600
    try:
        for name, text in files.items():
            target = Path(name)
            missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            created.extend(missing)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            staged.append((Path(tmp), target))
            if isinstance(text, bytes):
                with os.fdopen(fd, "wb") as fh:
                    fh.write(text)
            else:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
            os.chmod(tmp, mode)
        for tmp, target in staged:
            os.replace(tmp, target)
        done = True
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if not done:  # leave no empty folders behind either
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return [target for _, target in staged]
