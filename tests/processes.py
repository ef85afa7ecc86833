"""Helpers of the failure tests: run `pynetbuilder` as a child, catch it at a moment,
signal it, and describe what a folder holds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

MARKER = "PNB_TEST_MARKER"


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None,
          **popen) -> tuple[subprocess.Popen, str]:
    """`python -m pynetbuilder ARGS` in ``cwd``, its processes marked by a variable (so
    its children can be found); returns the process and the marker's value."""
    marker = uuid.uuid4().hex
    full = {**os.environ, **(env or {}), MARKER: marker}
    proc = subprocess.Popen([sys.executable, "-m", "pynetbuilder", *args], cwd=cwd, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    return proc, marker


def processes_with(marker: str) -> dict[int, str]:
    """pid -> command name of every process whose environment holds ``marker``."""
    found = {}
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found[int(entry.name)] = (entry / "comm").read_text().strip()
        except OSError:
            continue
    return found


def wait_until(check: Callable[[], object], proc: subprocess.Popen | None = None,
               timeout: float = 120, pause: float = 0.0) -> object:
    """Poll ``check`` until it returns something true (returned); None when ``proc``
    ended first or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            return check() or None
        if pause:
            time.sleep(pause)
    return None


def hidden_entries(folder: Path) -> list[str]:
    """Names starting with a dot anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def tree(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (folders as 'dir')."""
    found = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        found[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def send(proc: subprocess.Popen, signum: int, group: bool = False) -> None:
    """``signum`` to the process, or to its whole process group (as a terminal's Ctrl-C;
    the process must have been started with ``start_new_session=True``)."""
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)


def freeze_at(proc: subprocess.Popen, moment: Callable[[], object]) -> bool:
    """Stop ``proc`` (SIGSTOP) as soon as ``moment()`` is true; False when it ended
    first."""
    if wait_until(moment, proc) is None or proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGSTOP)
    return True


def handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (its SigCgt mask): a
    pynetbuilder command catches SIGTERM once it runs (pynetbuilder.interrupts)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False
