#!/usr/bin/env python3
"""Install what drawings and the HTML report tests need: Graphviz and a headless browser.

``python tools/browser_setup.py`` checks the Debian packages ``graphviz`` (the ``dot``
binary the ``graphviz`` Python package calls) and ``chromium`` (the headless browser the
HTML report is tested in) and, when run as root, installs the missing ones with
``apt-get`` (``--no-install-recommends``).  Idempotent: with both installed it only
checks, in well under a second, and prints nothing.  ``make test`` runs it.

Every failure ends with one line ``browser_setup: error: ...`` saying what failed and
what to do, and exit status 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

DEBIAN_PACKAGES = ("graphviz", "chromium")
BINARIES = {"graphviz": "dot", "chromium": "chromium"}


class SetupError(RuntimeError):
    """A failure the user can act on; its message is the one line printed."""


def log(msg: str) -> None:
    print(f"browser_setup: {msg}", file=sys.stderr, flush=True)


def missing_packages() -> list[str]:
    """The packages not installed (dpkg's view) or whose binary is not on PATH."""
    missing = []
    for pkg in DEBIAN_PACKAGES:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        installed = proc.returncode == 0 and "install ok installed" in proc.stdout
        if not installed or shutil.which(BINARIES[pkg]) is None:
            missing.append(pkg)
    return missing


def ensure_packages() -> None:
    if shutil.which("dpkg-query") is None:
        raise SetupError("this set-up needs a Debian/Ubuntu system (dpkg-query not found); "
                         "install Graphviz and Chromium by hand")
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SetupError(
            "missing Debian packages: " + " ".join(missing)
            + "; install them with: sudo apt-get install --no-install-recommends "
            + " ".join(missing)
        )
    log(f"installing Debian packages: {' '.join(missing)} (chromium is ~100 MB to download)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SetupError(f"`{' '.join(cmd[:3])}` failed ({last}); fix apt and run again")
    still = missing_packages()
    if still:
        raise SetupError(
            "still missing after apt-get: " + " ".join(still)
            + " (is the package in this system's apt sources? see `apt-cache policy "
            + still[0] + "`)"
        )


def main(argv: list[str] | None = None) -> int:
    if argv if argv is not None else sys.argv[1:]:
        print("usage: browser_setup.py   (no arguments)\n\n" + __doc__, file=sys.stderr)
        return 2
    try:
        ensure_packages()
    except SetupError as exc:
        print(f"browser_setup: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("browser_setup: error: interrupted; run it again", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
