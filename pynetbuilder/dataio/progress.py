"""A dependency-free progress bar on stderr: ``label [#######.......]  52%  520/1000``.

Shown only when the stream is a terminal, unless told (``enabled=True`` forces it,
``False`` turns it off); redrawn at most every ``interval`` seconds, and always at
0 and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Count ``total`` steps; use as a context manager, call :meth:`update` per step."""

    def __init__(self, total: int, label: str, *, enabled: bool | None = None,
                 stream: TextIO | None = None, width: int = 30, interval: float = 0.1):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled, self.total, self.label = enabled, max(int(total), 0), label
        self.width, self.interval = width, interval
        self.done = 0
        self._last = float("-inf")
        self._shown = -1  # the count last drawn

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, steps: int = 1) -> None:
        self.done = min(self.done + steps, self.total)
        self._draw(force=self.done == self.total)

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label} [{bar}] {frac:4.0%}  {self.done}/{self.total}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last, self._shown = now, self.done
        self.stream.write("\r" + self.line())
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            if self._shown != self.done:
                self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
