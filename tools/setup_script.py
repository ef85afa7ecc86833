"""What the set-up scripts beside this file share: their one error type and the
``main`` of a script that takes no arguments (one line on failure, exit status 1;
an interrupt is one line, status 130)."""

from __future__ import annotations

import sys
from collections.abc import Callable


class SetupError(RuntimeError):
    """A failure the user can act on; its message is the one line printed."""


def no_argument_main(name: str, doc: str, ensure: Callable[[], None], argv: list[str] | None,
                     after_interrupt: str = "run it again") -> int:
    """Run ``ensure()`` as script ``name`` (``doc``: its usage text)."""
    if argv if argv is not None else sys.argv[1:]:
        print(f"usage: {name}   (no arguments)\n\n{doc}", file=sys.stderr)
        return 2
    try:
        ensure()
    except SetupError as exc:
        print(f"{name.removesuffix('.py')}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name.removesuffix('.py')}: error: interrupted; {after_interrupt}",
              file=sys.stderr)
        return 130
    return 0
