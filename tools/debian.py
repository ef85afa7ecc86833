"""Installing Debian packages the project needs (shared by the set-up scripts)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence


class AptError(RuntimeError):
    """A package could not be installed; the message says what to do."""


def missing(packages: Sequence[str], binaries: Mapping[str, str] | None = None) -> list[str]:
    """The packages dpkg does not list as installed (or whose binary is not on PATH)."""
    absent = []
    for pkg in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        installed = proc.returncode == 0 and "install ok installed" in proc.stdout
        binary = (binaries or {}).get(pkg)
        if not installed or (binary is not None and shutil.which(binary) is None):
            absent.append(pkg)
    return absent


def ensure(packages: Sequence[str], log: Callable[[str], None], *,
           binaries: Mapping[str, str] | None = None, note: str = "") -> None:
    """Install the missing ``packages`` with apt-get (as root), or say how to."""
    if shutil.which("dpkg-query") is None:
        raise AptError("this set-up needs a Debian/Ubuntu system (dpkg-query not found)")
    todo = missing(packages, binaries)
    if not todo:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise AptError(
            "missing Debian packages: " + " ".join(todo)
            + "; install them with: sudo apt-get install --no-install-recommends "
            + " ".join(todo)
        )
    log(f"installing {len(todo)} Debian packages: {' '.join(todo)}{note}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *todo],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise AptError(f"`{' '.join(cmd[:3])}` failed ({last}); fix apt and run again")
    still = missing(packages, binaries)
    if still:
        raise AptError(
            "still missing after apt-get: " + " ".join(still)
            + f" (is it in this system's apt sources? see `apt-cache policy {still[0]}`)"
        )
