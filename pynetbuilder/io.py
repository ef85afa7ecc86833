"""The one writer of pynetbuilder's outputs: files and folders, all or nothing.

Every output (prototxt, JSON, drawings, reports, plots, databases, mean files)
goes through an :class:`OutputSet`, or :func:`write_files` for plain contents:

- **A set is replaced as a unit.**  Each output is written in full under a hidden
  name beside its target (``.NAME.pnb<pid>-<token>.partial``, same folder, so the
  rename is atomic); only when every one is complete are they renamed into place,
  so until then every old output is untouched.  An old target is first moved aside
  (``.NAME.pnb<pid>-<token>.old``) and deleted once the whole set is in; if a
  rename fails, the targets already replaced are put back.  SIGINT and SIGTERM
  wait while the renames and those deletions run (:func:`signals_held`).  A
  failure before (an exception, Ctrl-C) deletes the hidden copies and the folders
  the set made.
- **Leftovers of a killed run are cleaned** when a target of the same name is
  written again: hidden copies of a process that no longer runs are deleted, and
  an old target it had moved aside is put back if its place is empty (else deleted).
- **A symlink is written through**: its final target is replaced and the link
  stays (a dangling link gets its target created).
- **A target that is not a regular file or folder** (``/dev/stdout``, ``/dev/fd/N``,
  a FIFO, ``/dev/null``) is written to directly, after the rest of the set is in
  place; nothing replaces it.  ``/dev/stdout``, ``/dev/stderr`` and ``/dev/fd/N``
  write to this process's descriptor (so a redirected stdout keeps its position).
- **Permissions** are those a plain write gives: a new file ``0666``, a new folder
  (and what a staged folder holds) ``0777``, minus the umask; a replaced target
  keeps its mode.
- An existing target is replaced only with ``overwrite`` (else the set's ``error``,
  naming the target).  A file never replaces a folder, nor a folder a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pynetbuilder.errors import UsageError

_HIDDEN = re.compile(r"^\.(?P<name>.+)\.pnb(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>partial|old)$")
# paths that name one of this process's descriptors
_DESCRIPTOR = re.compile(r"^/(?:dev/(?P<std>stdout|stderr)|dev/fd/(?P<fd>\d+)"
                         r"|proc/(?P<pid>self|\d+)/fd/(?P<pfd>\d+))$")
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def umask() -> int:
    """The process's umask (read without changing it where Linux says it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove(path: Path) -> None:
    """Delete a file, link or folder tree if it is there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_target(target: str | Path, overwrite: bool,
                 error: type[Exception] = UsageError) -> None:
    """Refuse an existing ``target`` unless ``overwrite`` (``error`` names it)."""
    target = Path(target)
    if (target.exists() or target.is_symlink()) and not overwrite \
            and not _is_device(target):
        raise error(f"{target} already exists; remove it, or replace it with "
                    "--overwrite (overwrite=True in Python)")


def _descriptor(path: Path) -> int | None:
    """This process's descriptor that ``path`` names (/dev/stdout, /dev/fd/3 ...)."""
    m = _DESCRIPTOR.match(os.path.abspath(path))
    if m is None:
        return None
    if m["std"]:
        return 1 if m["std"] == "stdout" else 2
    if m["fd"]:
        return int(m["fd"])
    if m["pid"] == "self" or int(m["pid"]) == os.getpid():
        return int(m["pfd"])
    return None


def _is_device(path: Path) -> bool:
    """Whether ``path`` is written through rather than replaced."""
    if _descriptor(path) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (this one does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(target: Path) -> list[Path]:
    """Remove what killed runs left beside ``target`` (see the module doc); returns the
    hidden paths it removed or put back."""
    cleaned: list[Path] = []
    folder = target.parent
    if not folder.is_dir():
        return cleaned
    prefix = f".{target.name}.pnb"
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return cleaned
    for name in sorted(names, key=lambda n: not n.endswith(".old")):  # put back first
        m = _HIDDEN.match(name)
        if m is None or m["name"] != target.name or process_alive(int(m["pid"])):
            continue
        path = folder / name
        if m["kind"] == "old" and not (target.exists() or target.is_symlink()):
            with contextlib.suppress(OSError):
                os.rename(path, target)
                cleaned.append(path)
                continue
        remove(path)
        cleaned.append(path)
    return cleaned


def _hidden(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.pnb{os.getpid()}-{os.urandom(4).hex()}.{kind}"


@dataclass
class _Output:
    shown: Path  # as the caller named it
    target: Path  # where it goes: symlinks resolved
    tmp: Path
    folder: bool
    device: bool  # written through at the end, not replaced
    existing_mode: int | None = None
    aside: Path | None = None
    installed: bool = False


class OutputSet:
    """Outputs written as one unit (see the module doc)::

        with OutputSet(overwrite=True) as out:
            out.write("run/train.prototxt", text)
            fill_database(out.folder("run/train_lmdb"))
        # here every output is in place, or (after an exception) none changed

    ``file(target)`` / ``folder(target)`` return the hidden path to fill;
    ``write(target, data)`` stages text or bytes.  ``written`` lists the targets as
    named, once the set is in place.  ``error`` is the exception raised for an
    existing target without ``overwrite``.
    """

    def __init__(self, *, overwrite: bool = True, error: type[Exception] = UsageError):
        self.overwrite, self.error = overwrite, error
        self._outputs: list[_Output] = []
        self._created: list[Path] = []  # parent folders this set made, deepest first
        self.written: list[Path] = []
        self.in_place = False  # every regular output is in place (the set is committed)
        self._done = False

    # ------------------------------------------------------------ staging

    def file(self, target: str | Path) -> Path:
        """A new empty hidden file that becomes ``target``."""
        return self._stage(Path(target), folder=False).tmp

    def folder(self, target: str | Path) -> Path:
        """A new empty hidden folder that becomes ``target``."""
        return self._stage(Path(target), folder=True).tmp

    def write(self, target: str | Path, data: str | bytes) -> Path:
        """Stage ``data`` (text is written as UTF-8) for ``target``."""
        tmp = self.file(target)
        try:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        except OSError as exc:  # name the target, not the hidden copy
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        return tmp

    def _stage(self, shown: Path, folder: bool) -> _Output:
        if self._done:
            raise RuntimeError("this output set is already written")
        if any(o.shown == shown for o in self._outputs):
            raise UsageError(f"{shown} is named twice among the outputs")
        if not _is_device(shown):  # what a killed run left is put right before any check
            clean_leftovers(Path(os.path.realpath(shown)))
        check_target(shown, self.overwrite, self.error)
        if _is_device(shown):
            if folder:
                raise UsageError(f"{shown} is not a folder: a database cannot be written there")
            import tempfile

            fd, name = tempfile.mkstemp(prefix="pynetbuilder-", suffix=".partial")
            os.close(fd)
            output = _Output(shown, shown, Path(name), False, True)
            self._outputs.append(output)
            return output
        target = Path(os.path.realpath(shown))
        if target.is_dir() != folder and target.exists():
            what = "folder" if target.is_dir() else "file"
            raise UsageError(f"{shown} is a {what}; it cannot be replaced by a "
                             f"{'folder' if folder else 'file'}")
        missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
        self._created = [p for p in missing if p not in self._created] + self._created
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _hidden(target, "partial")
        output = _Output(shown, target, tmp, folder, False)
        with contextlib.suppress(FileNotFoundError):
            output.existing_mode = stat.S_IMODE(os.stat(target).st_mode)
        self._outputs.append(output)  # first: an interrupt from here on is undone by abort
        if folder:
            tmp.mkdir(mode=0o700)
        else:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return output

    # ------------------------------------------------------------ installing

    def commit(self) -> list[Path]:
        """Put every staged output in place (see the module doc); returns the targets
        as named.  On failure nothing changed and the hidden copies are gone."""
        if self._done:
            return self.written
        regular = [o for o in self._outputs if not o.device]
        try:
            mask = umask()
            for o in regular:
                check_target(o.shown, self.overwrite, self.error)  # appeared meanwhile?
                _publish(o, mask)
            with signals_held():
                self._install(regular)
                self._done = self.in_place = True
                for o in regular:  # the old outputs go before an interrupt can stop it
                    if o.aside is not None:
                        remove(o.aside)
        except BaseException:
            if not self._done:
                self.abort()
            raise
        for o in self._outputs:
            if o.device:
                _write_through(o.shown, o.tmp)
                remove(o.tmp)
        self.written = [o.shown for o in self._outputs]
        return self.written

    def _install(self, outputs: list[_Output]) -> None:
        for o in outputs:
            if o.target.exists() or o.target.is_symlink():
                o.aside = _hidden(o.target, "old")
                os.rename(o.target, o.aside)
            os.rename(o.tmp, o.target)
            o.installed = True

    def abort(self) -> None:
        """Undo: put back what was replaced, delete the hidden copies and new folders."""
        self._done = True
        for o in reversed(self._outputs):
            with contextlib.suppress(OSError):
                if o.installed:
                    remove(o.target)
                if o.aside is not None and not o.target.exists():
                    os.rename(o.aside, o.target)
            remove(o.tmp)
        for folder in self._created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def _publish(o: _Output, mask: int) -> None:
    """Give a staged output the permissions a plain write would (module doc)."""
    if o.folder:
        for root, dirs, files in os.walk(o.tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~mask)
    default = (0o777 if o.folder else 0o666) & ~mask
    os.chmod(o.tmp, o.existing_mode if o.existing_mode is not None else default)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT / SIGTERM wait (delivered afterwards) while the renames run."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _write_through(target: Path, staged: Path) -> None:
    data = staged.read_bytes()
    fd = _descriptor(target)
    if fd is None:
        with open(target, "wb") as fh:
            fh.write(data)
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_files(files: Mapping[str | Path, str | bytes], *,
                overwrite: bool = True) -> list[Path]:
    """Write every ``path -> text`` (or bytes) as one :class:`OutputSet`; returns the
    paths as named."""
    with OutputSet(overwrite=overwrite) as out:
        for name, data in files.items():
            out.write(name, data)
    return out.written


def write_bytes(target: str | Path, data: bytes, *, overwrite: bool = False,
                error: type[Exception] = UsageError) -> Path:
    """Write one file (an existing one only with ``overwrite``)."""
    with OutputSet(overwrite=overwrite, error=error) as out:
        out.write(target, data)
    return Path(target)


@contextlib.contextmanager
def joining(outputs: OutputSet | None, *, overwrite: bool = False,
            error: type[Exception] = UsageError) -> Iterator[OutputSet]:
    """``outputs`` when given (its owner commits it, with everything else it holds),
    else a new set, committed when the block ends without an exception."""
    if outputs is not None:
        yield outputs
        return
    with OutputSet(overwrite=overwrite, error=error) as out:
        yield out
