"""All-or-nothing outputs: build beside the target, then rename into place.

A database or file is written in full under a hidden temporary name in the
target's own folder (same filesystem, so the final ``rename`` is atomic); any
failure, including Ctrl-C, deletes the temporary and leaves the target as it was
(absent, or the old one).  An existing target is refused unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pynetbuilder.dataio.checks import DataError


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse an existing ``target`` unless ``overwrite``."""
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists; remove it, or replace it with "
                        "--overwrite (overwrite=True in Python)")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish(tmp: Path) -> None:
    """Give ``tmp`` (made private by tempfile) the permissions a plain create would."""
    mask = _umask()
    if tmp.is_dir():
        tmp.chmod(0o777 & ~mask)
        for child in tmp.rglob("*"):
            child.chmod((0o777 if child.is_dir() else 0o666) & ~mask)
    else:
        tmp.chmod(0o666 & ~mask)


def _missing_parents(target: Path) -> list[Path]:
    return [p for p in (target.parent, *target.parent.parents) if not p.exists()]


def _install(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``, replacing an existing target only once ``tmp`` is in."""
    if not target.exists():
        os.rename(tmp, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    os.rename(target, old / target.name)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old / target.name, target)  # put the old one back
        raise
    finally:
        remove(old)


@contextlib.contextmanager
def staged(target: Path, *, overwrite: bool = False, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (a folder if ``folder``); on a clean
    exit it becomes ``target``, on any exception it and the parent folders this made
    are removed."""
    target = Path(target)
    check_target(target, overwrite)
    created = _missing_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{target.name}.", ".partial"
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=suffix))
    else:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _publish(tmp)
        _install(tmp, target)
    except BaseException:
        remove(tmp)
        for parent in created:  # deepest first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def write_bytes(target: Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``target`` atomically (see :func:`staged`)."""
    target = Path(target)
    with staged(target, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return target
