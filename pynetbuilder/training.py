"""Running real Caffe's command-line tool: ``caffe train`` with progress and a kept log,
``caffe test`` for a final score, and what a run needs checked before it starts.

Conventions:

- The tool is ``$PYNETBUILDER_CAFFE`` if set, else ``caffe`` beside this Python
  (``.venv/bin/caffe``, written by ``make caffe``), else ``caffe`` on ``PATH``.
  With a GPU (``--gpu``) it is the CUDA build: ``$PYNETBUILDER_CAFFE_CUDA``, else
  ``$PYNETBUILDER_CAFFE``, else ``caffe-cuda`` beside this Python (written by ``make
  caffe-cuda``) or on ``PATH``; the GPUs asked for must be visible to the NVIDIA driver
  first (:func:`visible_gpus`).
- Caffe runs inside the run folder: paths in ``solver.prototxt`` (``net``,
  ``snapshot_prefix``) and relative data sources in ``train.prototxt`` are relative
  to it.  glog writes to stderr only (``GLOG_logtostderr=1``, no files in /tmp);
  stdout and stderr together go, line by line, to the log file in the folder.
- A run that Caffe ends with a non-zero status raises :class:`CaffeError` naming
  Caffe's own fatal line, the last iteration reached and the log, which is kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynetbuilder.caffelog import LogTable, Record, parse_line, parse_log
from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.schema import caffe_pb2

TOOL_ENV = "PYNETBUILDER_CAFFE"
CUDA_TOOL_ENV = "PYNETBUILDER_CAFFE_CUDA"
CUDA_TOOL = "caffe-cuda"
SNAPSHOT_DIR = "snapshots"
_SNAPSHOT = re.compile(r"Snapshotting (solver state )?to binary proto file (\S+)")
_ITERATION = re.compile(r"Iteration (\d+)")
_GLOG_FATAL = re.compile(r"^F\d{4,8} [\d:.]+\s+\d+ \S+\] (.*)")
_SCORE = re.compile(r"\] (?!Batch )([\w./-]+) = ([-+]?[\d.]+(?:[eE][-+]?\d+)?|nan|-?inf)")


class CaffeError(NetError):
    """Caffe ran and failed (a fatal check, a crash): the message names why and the log."""


def caffe_tool(gpu: str | None = None) -> Path:
    """Caffe's command-line tool (see the module docstring); UsageError if there is none.
    With ``gpu`` (``0``, ``0,1``, ``all``): the CUDA build, once :func:`check_gpus`
    found those GPUs."""
    if gpu is not None:
        check_gpus(gpu)
        return cuda_caffe_tool()
    configured = os.environ.get(TOOL_ENV)
    if configured:
        tool = Path(configured)
        if not (tool.is_file() and os.access(tool, os.X_OK)):
            raise UsageError(f"${TOOL_ENV} names {configured}, which is not an executable file")
        return tool
    beside = Path(sys.prefix) / "bin" / "caffe"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("caffe")
    if found:
        return Path(found)
    raise UsageError("Caffe's command-line tool was not found (not beside this Python, not on "
                     f"PATH): run `make caffe`, or set ${TOOL_ENV} to the caffe binary")


def cuda_caffe_tool() -> Path:
    """The CUDA build of Caffe's tool (see the module docstring); UsageError saying how
    to get it when there is none."""
    for env in (CUDA_TOOL_ENV, TOOL_ENV):
        configured = os.environ.get(env)
        if configured:
            tool = Path(configured)
            if not (tool.is_file() and os.access(tool, os.X_OK)):
                raise UsageError(f"${env} names {configured}, which is not an executable file")
            return tool
    beside = Path(sys.prefix) / "bin" / CUDA_TOOL
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(CUDA_TOOL)
    if found:
        return Path(found)
    raise UsageError("--gpu needs Caffe built with CUDA, which is not here: run `make "
                     "caffe-cuda` (needs nvcc, the CUDA compiler), or set "
                     f"${CUDA_TOOL_ENV} to a CUDA caffe binary")


def visible_gpus() -> tuple[int, str]:
    """(number of CUDA GPUs the NVIDIA driver shows this process, why none when 0),
    asked of the driver itself (``libcuda``), so ``CUDA_VISIBLE_DEVICES`` holds."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no NVIDIA driver: libcuda.so.1 is not installed"
    status = cuda.cuInit(0)
    count = ctypes.c_int(0)
    if status == 0:
        status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(status, ctypes.byref(name))
        what = name.value.decode() if name.value else f"error {status}"
        return 0, f"the NVIDIA driver reports {what}"
    return count.value, "" if count.value else "the NVIDIA driver lists no GPU"


def check_gpus(gpu: str) -> list[str]:
    """Check ``--gpu`` (its form, and that those GPUs are visible); the caffe flags.
    UsageError in one line otherwise."""
    flag = gpu_flag(gpu)
    count, why = visible_gpus()
    if count == 0:
        raise UsageError(f"--gpu {gpu}: no CUDA GPU is visible here ({why}); leave out --gpu "
                         "to run on the CPU")
    missing = [int(i) for i in gpu.split(",") if gpu != "all" and int(i) >= count]
    if missing:
        raise UsageError(f"--gpu {gpu}: GPU {missing[0]} is not visible; this machine shows "
                         f"{count} CUDA GPU(s), numbered 0 to {count - 1}")
    return flag


def gpu_flag(gpu: str | None) -> list[str]:
    """``-gpu IDS`` for the caffe tool (``0``, ``0,1`` or ``all``), checked."""
    if gpu is None:
        return []
    if gpu != "all" and not re.fullmatch(r"\d+(,\d+)*", gpu):
        raise UsageError(f"--gpu takes device numbers (0 or 0,1) or all, got {gpu!r}")
    return ["-gpu", gpu]


def run_logged(cmd: Sequence[str], *, cwd: Path, log: Path | None = None,
               on_line: Callable[[str], None] | None = None) -> tuple[int, list[str]]:
    """Run ``cmd`` in ``cwd``, its stdout and stderr line by line into ``log`` (written
    and flushed as they come) and ``on_line``.  Returns (status, the last 200 lines).

    Ctrl-C reaches Caffe too (same process group): ``caffe train`` then snapshots and
    stops, so the first Ctrl-C keeps reading its output to the end; a second one
    kills it."""
    env = {**os.environ, "GLOG_logtostderr": "1"}
    tail: list[str] = []
    try:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot run {cmd[0]}: {exc.strerror}") from None
    sink = log.open("w", encoding="utf-8", buffering=1) if log is not None else None

    def take(line: str) -> None:
        if sink is not None:
            sink.write(line)
        tail.append(line.rstrip("\n"))
        del tail[:-200]
        if on_line is not None:
            on_line(tail[-1])

    try:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                take(line)
        except KeyboardInterrupt:
            for line in proc.stdout:
                take(line)
        status = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if sink is not None:
            sink.close()
    return status, tail


def failure_reason(lines: Sequence[str]) -> str:
    """Why Caffe failed, from its output: its first fatal (``F``) line, else a Python
    error line, else the last line."""
    for line in lines:
        if m := _GLOG_FATAL.match(line):
            return m[1].strip()
    for line in reversed(lines):
        if re.match(r"^\w*(Error|Exception)\b", line):
            return line.strip()
    rest = [line.strip() for line in lines if line.strip()]
    return rest[-1] if rest else "no output"


def _how(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


# ---------------------------------------------------------------- data and snapshots


@dataclass(frozen=True)
class DataSource:
    """The data layer of one phase of a train net, as far as sizing needs it."""

    phase: str  # "train" or "test"
    layer: str
    type: str
    source: str
    batch_size: int
    backend: str = "LMDB"


_DATA_TYPES = {"Data": "data_param", "HDF5Data": "hdf5_data_param",
               "ImageData": "image_data_param"}


def data_sources(net: Any) -> dict[str, DataSource]:
    """The first data layer (Data, HDF5Data, ImageData) of each phase of a
    ``NetParameter`` holding TRAIN and TEST layers (``include { phase }`` rules; a
    layer without rules serves both)."""
    found: dict[str, DataSource] = {}
    for layer in net.layer:
        field_name = _DATA_TYPES.get(layer.type)
        if field_name is None:
            continue
        params = getattr(layer, field_name)
        phases = {rule.phase for rule in layer.include if rule.HasField("phase")}
        for phase, number in (("train", caffe_pb2.TRAIN), ("test", caffe_pb2.TEST)):
            if phase not in found and (not phases or number in phases):
                backend = (caffe_pb2.DataParameter.DB.Name(params.backend)
                           if layer.type == "Data" else "")
                found[phase] = DataSource(phase, layer.name, layer.type, params.source,
                                          params.batch_size, backend)
    return found


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def count_images(src: DataSource, base: Path) -> int | None:
    """Images in a data layer's source (relative paths from ``base``): LMDB entries,
    HDF5 rows, ImageData list lines; None where it cannot be counted (LevelDB).
    UsageError when the source is missing or unreadable."""
    path = _resolve(src.source, base)
    what = f"the {src.phase} data source {src.source!r} (layer {src.layer})"
    if not path.exists():
        raise UsageError(f"{what} does not exist")
    if src.type == "Data":
        if src.backend != "LMDB":
            return None
        with _lmdb(path, what) as env:
            return int(env.stat()["entries"])
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if src.type == "ImageData":
        return len(lines)
    import h5py  # HDF5Data: the source lists .h5 files, each holding N rows per top

    total = 0
    for name in lines:
        h5 = _resolve(name, base)
        try:
            with h5py.File(h5, "r") as fh:
                first = next(iter(fh.values()))
                total += int(first.shape[0])
        except (OSError, StopIteration) as exc:
            raise UsageError(f"{what} lists {name}, which is not a readable HDF5 file "
                             f"({exc})") from None
    return total


@contextlib.contextmanager
def _lmdb(path: Path, what: str) -> Iterator[Any]:
    """An LMDB opened read-only without a lock file (nothing is written next to it);
    UsageError naming ``what`` when it is not one."""
    import lmdb

    try:
        env = lmdb.open(str(path), readonly=True, lock=False, subdir=path.is_dir())
    except lmdb.Error as exc:
        raise UsageError(f"{what} is not a readable LMDB: {exc}") from None
    try:
        yield env
    finally:
        env.close()


def lmdb_image_shape(path: str | Path) -> tuple[int, int, int] | None:
    """(channels, height, width) of the first Datum of an LMDB, None if it is empty."""
    with _lmdb(Path(path), f"the data source {path}") as env, env.begin() as txn:
        cursor = txn.cursor()
        if not cursor.first():
            return None
        datum = caffe_pb2.Datum.FromString(cursor.value())
        return datum.channels, datum.height, datum.width


@dataclass(frozen=True)
class Snapshot:
    """A ``.solverstate``: the iteration it was taken at and its weights file."""

    path: Path
    iteration: int
    weights: Path


def read_snapshot(path: str | Path, folder: Path) -> Snapshot:
    """Read a solver state Caffe wrote; its weights path is relative to ``folder`` (where
    Caffe ran).  UsageError when either file is missing or not a solver state."""
    p = Path(path)
    if p.suffix != ".solverstate":
        raise UsageError(f"--resume takes a .solverstate file Caffe wrote, got {str(p)!r}")
    try:
        state = caffe_pb2.SolverState.FromString(p.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot resume: snapshot {p} {_missing(exc)}") from None
    except Exception:  # protobuf's DecodeError: not a solver state
        raise UsageError(f"cannot resume: {p} is not a Caffe solver state") from None
    if not state.learned_net:
        raise UsageError(f"cannot resume: {p} names no weights file (learned_net)")
    weights = _resolve(state.learned_net, folder)
    if not weights.is_file():
        raise UsageError(f"cannot resume: the weights {state.learned_net} that {p.name} "
                         f"names are missing (looked in {folder})")
    return Snapshot(p.resolve(), state.iter, weights)


def _missing(exc: OSError) -> str:
    return "does not exist" if isinstance(exc, FileNotFoundError) else f"({exc.strerror})"


# ---------------------------------------------------------------- training


class Progress:
    """Turns Caffe's output into short progress lines (``iteration 40/600: loss ...``)
    printed through ``emit``; one line per display step and one per test."""

    def __init__(self, max_iter: int, emit: Callable[[str], None]):
        self.max_iter, self.emit = max_iter, emit
        self._train: dict[str, Any] | None = None
        self._test: dict[str, Any] | None = None

    def __call__(self, line: str) -> None:
        r = parse_line(line)
        if self._test is not None and (r is None or r.kind not in ("test", "test_loss")):
            self._flush_test()
        if r is None:
            return
        if r.kind == "loss":
            self._flush_train()
            self._train = {"iteration": r.iteration, "loss": r.value}
        elif r.kind == "lr" and self._train is not None:
            self._train["lr"] = r.value
            self._flush_train()
        elif r.kind == "testing":
            self._flush_train()
            self._test = {"iteration": r.iteration, "values": []}
        elif r.kind in ("test", "test_loss") and self._test is not None:
            self._test["values"].append(r)

    def close(self) -> None:
        self._flush_train()
        self._flush_test()

    def _head(self, iteration: int) -> str:
        width = len(str(self.max_iter))
        return f"iteration {iteration:>{width}}/{self.max_iter}:"

    def _flush_train(self) -> None:
        t, self._train = self._train, None
        if t is not None:
            lr = f", lr {t['lr']:g}" if "lr" in t else ""
            self.emit(f"{self._head(t['iteration'])} loss {t['loss']:.4g}{lr}")

    def _flush_test(self) -> None:
        t, self._test = self._test, None
        if t is not None and t["values"]:
            values: list[Record] = t["values"]
            shown = ", ".join(f"{r.name} {r.value:.4g}" for r in values)
            self.emit(f"{self._head(t['iteration'])} test {shown}")


@dataclass
class TrainResult:
    """What a finished ``caffe train`` left: the log and its rows, the last test scores
    (``scores``: name -> value, measured at ``tested_at``), the final weights and
    solver state (absolute paths; None if Caffe wrote none)."""

    log: Path
    table: LogTable
    iteration: int
    scores: dict[str, float] = field(default_factory=dict)
    tested_at: int | None = None
    weights: Path | None = None
    state: Path | None = None
    stopped_early: bool = False


def log_name(resume: Snapshot | None) -> str:
    """``train.log`` for a fresh run, ``train_resumed_<iteration>.log`` for a resumed one."""
    return "train.log" if resume is None else f"train_resumed_{resume.iteration}.log"


def train(folder: Path, *, solver: str = "solver.prototxt", max_iter: int,
          resume: Snapshot | None = None, weights: Path | None = None, gpu: str | None = None,
          emit: Callable[[str], None] = print) -> TrainResult:
    """Run ``caffe train`` in ``folder`` (everything was checked and written before):
    progress through ``emit``, the whole output in ``folder/log_name(resume)``.
    Raises :class:`CaffeError` when Caffe fails."""
    folder = Path(folder)
    (folder / SNAPSHOT_DIR).mkdir(exist_ok=True)
    log = folder / log_name(resume)
    cmd = [str(caffe_tool(gpu)), "train", "-solver", solver, *gpu_flag(gpu)]
    if resume is not None:
        cmd += ["-snapshot", str(resume.path)]
    if weights is not None:
        cmd += ["-weights", str(Path(weights).resolve())]
    progress = Progress(max_iter, emit)
    status, tail = run_logged(cmd, cwd=folder, log=log, on_line=progress)
    progress.close()
    if status != 0:
        reached = [int(m[1]) for line in tail if (m := _ITERATION.search(line))]
        where = f" at iteration {reached[-1]}" if reached else " before training began"
        raise CaffeError(f"caffe train failed ({_how(status)}){where}: "
                          f"{failure_reason(tail)}; the full log is {log}")
    return _result(folder, log)


def _result(folder: Path, log: Path) -> TrainResult:
    text = log.read_text(encoding="utf-8", errors="replace")
    table = parse_log(text)
    weights = state = None
    for m in _SNAPSHOT.finditer(text):
        if m[1]:
            state = (folder / m[2]).resolve()
        else:
            weights = (folder / m[2]).resolve()
    found = re.search(r"_iter_(\d+)\.caffemodel$", str(weights)) if weights else None
    iteration = int(found[1]) if found else max(table.iterations(), default=0)
    result = TrainResult(log, table, iteration, weights=weights, state=state,
                         stopped_early="Optimization stopped early" in text)
    last = {c: table.last(c) for c in table.test_columns()}
    if last:
        result.tested_at = max(it for it, _ in last.values())
        result.scores = {c.removeprefix("test_"): v for c, (it, v) in last.items()
                         if it == result.tested_at}
    return result


def evaluate(folder: Path, *, net: str, weights: Path, iterations: int,
             gpu: str | None = None, log: Path | None = None) -> dict[str, float]:
    """``caffe test``: the TEST phase of ``net`` with ``weights`` over ``iterations``
    batches; returns Caffe's mean of every output (name -> value)."""
    cmd = [str(caffe_tool(gpu)), "test", "-model", net, "-weights", str(weights),
           "-iterations", str(iterations), *gpu_flag(gpu)]
    status, tail = run_logged(cmd, cwd=folder, log=log)
    if status != 0:
        where = f"; the full log is {log}" if log else ""
        raise CaffeError(f"caffe test failed ({_how(status)}): {failure_reason(tail)}{where}")
    scores: dict[str, float] = {}
    for line in tail:
        if "caffe.cpp" in line and (m := _SCORE.search(line)):
            scores[m[1]] = float(m[2])
    return scores
