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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import debian  # noqa: E402  tools/debian.py, beside this script
from setup_script import SetupError, no_argument_main  # noqa: E402  beside this script

DEBIAN_PACKAGES = ("graphviz", "chromium")
BINARIES = {"graphviz": "dot", "chromium": "chromium"}


def log(msg: str) -> None:
    print(f"browser_setup: {msg}", file=sys.stderr, flush=True)


def ensure_packages() -> None:
    try:
        debian.ensure(DEBIAN_PACKAGES, log, binaries=BINARIES,
                      note=" (chromium is ~100 MB to download)")
    except debian.AptError as exc:
        raise SetupError(f"{exc}; Graphviz draws nets, Chromium tests the HTML report") from None


def main(argv: list[str] | None = None) -> int:
    return no_argument_main("browser_setup.py", __doc__, ensure_packages, argv)


if __name__ == "__main__":
    sys.exit(main())
