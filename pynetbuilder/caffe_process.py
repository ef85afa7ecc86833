"""Running one of Caffe's tools as a child process: its environment, its output line by
line into a log, interrupts, and why it failed.

Conventions:

- **Logging environment.**  The child gets the user's environment with glog's
  variables set so that every line pynetbuilder parses reaches it, whatever the user
  exported: ``GLOG_logtostderr=1`` (stderr only, no files in /tmp),
  ``GLOG_minloglevel=0`` (INFO lines: progress, test scores, timings),
  ``GLOG_log_prefix=1`` (``I1202 10:43:54.33 ... solver.cpp:231]``: fatal lines are
  recognised by it), ``GLOG_colorlogtostderr=0``.  stdout and stderr go together,
  line by line, to the log file (written and flushed as they come).
- **The child ends with its parent** (:func:`pynetbuilder.interrupts.die_with_parent`).
- **Interrupts** (SIGINT, SIGTERM, SIGHUP: raised as exceptions in the main thread by
  :mod:`pynetbuilder.interrupts`) while the child runs: with ``graceful`` the child
  gets SIGINT (``caffe train`` then stops after the iteration it is in, snapshots and
  exits) and its output is read to the end; a second interrupt kills it.  Without
  ``graceful`` the child is killed at once.  Either way the interrupt is returned in
  :attr:`Finished.interrupt` for the caller to re-raise once it said what was kept.
  The output is read by a helper thread, so an interrupt never loses a line.
- **A log that cannot be written** (disk full, file size limit) stops the child the
  same way (``graceful``: SIGINT, so Caffe may still save its state); the output keeps
  going to :attr:`Finished.tail` and the error is in :attr:`Finished.log_error`.
- ``on_line`` sees every line; when it returns a reason (a string), the child is
  killed at once and the reason is :attr:`Finished.stopped` (a loss that became NaN).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pynetbuilder.errors import UsageError
from pynetbuilder.interrupts import Terminated, die_with_parent

TAIL_LINES = 200
GLOG_ENV: Mapping[str, str] = {
    "GLOG_logtostderr": "1",
    "GLOG_minloglevel": "0",
    "GLOG_log_prefix": "1",
    "GLOG_colorlogtostderr": "0",
}
_GLOG_PREFIX = re.compile(r"^([IWEF])\d{4,8} [\d:.]+\s+\d+ \S+\] (.*)")
_CHECK_FAILED = re.compile(r"(Check failed: .*)")
_PYTHON_ERROR = re.compile(r"^\w*(Error|Exception)\b")
# what a signal that ends a process by itself means (the rest: its name)
_SIGNAL_MEANING = {
    signal.SIGXFSZ: "file size limit exceeded",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGFPE: "arithmetic error",
    signal.SIGBUS: "bus error",
    signal.SIGABRT: "aborted",
    signal.SIGKILL: "killed outright (out of memory?)",
}


def caffe_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Caffe child: ``base`` (default: this process's) with
    :data:`GLOG_ENV` over it."""
    return {**(os.environ if base is None else base), **GLOG_ENV}


@dataclass
class Finished:
    """How a child ended: ``status`` (negative: the signal that ended it), the last
    output lines, and what else happened (module doc)."""

    status: int
    tail: list[str] = field(default_factory=list)
    interrupt: BaseException | None = None
    log_error: OSError | None = None
    stopped: str = ""

    @property
    def failed(self) -> bool:
        return self.status != 0


def run_logged(cmd: Sequence[str], *, cwd: Path, log: Path | None = None,
               on_line: Callable[[str], str | None] | None = None,
               graceful: bool = False, env: Mapping[str, str] | None = None) -> Finished:
    """Run ``cmd`` in ``cwd`` (see the module doc); its output to ``log`` and
    ``on_line``.  UsageError when it cannot start or ``log`` cannot be created."""
    try:
        sink: IO[str] | None = (log.open("w", encoding="utf-8", buffering=1)
                                if log is not None else None)
    except OSError as exc:
        raise UsageError(f"cannot write the log {log}: {exc.strerror}") from None
    try:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=caffe_env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", preexec_fn=die_with_parent)
    except OSError as exc:
        if sink is not None:
            sink.close()
        raise UsageError(f"cannot run {cmd[0]}: {exc.strerror}") from None
    done = Finished(status=0)
    failure: list[BaseException] = []  # what on_line raised (a closed stdout ...)

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            if graceful:
                proc.send_signal(signal.SIGINT)
            else:
                proc.kill()

    def pump() -> None:
        nonlocal sink
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if sink is not None:
                    try:
                        sink.write(line)
                    except OSError as exc:
                        done.log_error = exc
                        with contextlib.suppress(OSError):
                            sink.close()
                        sink = None
                        stop()
                done.tail.append(line.rstrip("\n"))
                del done.tail[:-TAIL_LINES]
                if on_line is not None and not failure:
                    try:
                        reason = on_line(done.tail[-1])
                    except Exception as exc:  # noqa: BLE001 - re-raised in the main thread
                        failure.append(exc)
                        proc.kill()
                        continue
                    if reason and not done.stopped:
                        done.stopped = reason
                        proc.kill()
        finally:
            if sink is not None:
                try:
                    sink.close()
                except OSError as exc:
                    done.log_error = done.log_error or exc

    reader = threading.Thread(target=pump, name="caffe-output", daemon=True)
    reader.start()
    try:
        while reader.is_alive() or proc.poll() is None:
            try:
                reader.join(0.1)
                if not reader.is_alive():
                    proc.wait()
            except (KeyboardInterrupt, Terminated) as exc:
                if done.interrupt is None:
                    done.interrupt = exc
                    stop()
                else:  # a second interrupt: now
                    proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done.status = proc.returncode
    if failure:
        raise failure[0]
    return done


def describe_status(status: int) -> str:
    """``exit status 1``, ``killed by SIGXFSZ (file size limit exceeded)`` ..."""
    if status >= 0:
        return f"exit status {status}"
    try:
        sig = signal.Signals(-status)
    except ValueError:
        return f"killed by signal {-status}"
    meaning = _SIGNAL_MEANING.get(sig)
    return f"killed by {sig.name}" + (f" ({meaning})" if meaning else "")


def failure_reason(lines: Sequence[str]) -> str:
    """Why Caffe failed, from its output: its last fatal (``F``) line, else its last
    ``Check failed`` line, else a Python error line (a Python layer), else its last
    line (without glog's prefix)."""
    for line in reversed(lines):
        if (m := _GLOG_PREFIX.match(line)) and m[1] == "F":
            return m[2].strip()
    for line in reversed(lines):
        if m := _CHECK_FAILED.search(line):
            return m[1].strip()
    for line in reversed(lines):
        if _PYTHON_ERROR.match(line):
            return line.strip()
    rest = [line.strip() for line in lines if line.strip()]
    if not rest:
        return "no output"
    m = _GLOG_PREFIX.match(rest[-1])
    return f"its last line: {m[2].strip() if m else rest[-1]}"


def cpu_engine(layer: Any) -> list[str]:
    """Set ``engine: CUDNN`` (common in published prototxt) to ``engine: CAFFE`` in
    ``layer``'s settings, in place: Caffe's CPU build aborts on CUDNN ("unknown
    engine"); the engines compute one function.  The settings changed (``convolution_param``
    ...), for the caller to say so."""
    changed = []
    for descriptor, value in layer.ListFields():
        if descriptor.type != descriptor.TYPE_MESSAGE or not hasattr(value, "DESCRIPTOR"):
            continue  # not a settings message (a repeated field is a container)
        engine = value.DESCRIPTOR.fields_by_name.get("engine")
        if engine is None or engine.enum_type is None or not value.HasField("engine"):
            continue
        names = engine.enum_type.values_by_name
        if "CUDNN" in names and value.engine == names["CUDNN"].number:
            value.engine = names["CAFFE"].number
            changed.append(descriptor.name)
    return changed
