"""One interrupt policy for every command.

- SIGINT (Ctrl-C) raises ``KeyboardInterrupt`` as usual, and SIGTERM raises
  :class:`Terminated` while a command runs (:func:`signals_as_exceptions`), so both
  unwind the same way: ``finally`` blocks run, the output writer drops what was not
  complete, ``subprocess.run`` kills the child it waits for.
- The command then ends with one line saying what happened and what was kept, and
  exit status 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
- Child processes the project starts itself (Caffe, ``torchrun``) also get
  :func:`die_with_parent`, so they end even if the parent is killed outright.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator


class Terminated(BaseException):
    """SIGTERM (or SIGHUP) arrived while a command ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` inside the block (main thread)."""
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[signum] = signal.signal(signum, _raise)
        except ValueError:  # not the main thread: leave the process's own handling
            pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def signal_of(exc: BaseException) -> int:
    """The signal behind an interrupt exception."""
    return exc.signum if isinstance(exc, Terminated) else signal.SIGINT


def exit_status(exc: BaseException) -> int:
    """128 + the signal's number, as a shell reports a process its signal ended."""
    return 128 + signal_of(exc)


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when its parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
