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
  to it.  Its whole output goes, line by line, to the log file in the folder, with
  glog's variables set for the child whatever the user exported
  (:mod:`pynetbuilder.caffe_process`).
- Before Caffe starts, what it would fail on is refused in one line: the solver
  (:func:`pynetbuilder.solver.check_solver`), the data sources, labels outside the
  classes of the net's loss and accuracy layers (:func:`check_labels`).
- While it runs, a displayed loss that is NaN or infinite stops it (killed: its
  weights are no use).  SIGINT, SIGTERM and SIGHUP reach it as SIGINT: ``caffe train``
  stops after the iteration it is in and snapshots (``-sigint_effect stop``, the
  default); the interrupt is then raised again with what was kept.
- When it ends, the snapshots it wrote are checked newest first
  (:mod:`pynetbuilder.snapshots`): one cut short or holding non-finite weights is
  removed and named; the newest good one is the one to ``--resume`` from.
- A run that fails raises :class:`CaffeError` naming Caffe's own reason (its last
  fatal line, or how it was killed), the iteration reached, the snapshot kept and the
  log, which is kept.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynetbuilder import snapshots
from pynetbuilder.caffe_process import (
    Finished,
    describe_status,
    failure_reason,
    run_logged,
)
from pynetbuilder.caffelog import LogTable, Record, parse_line, parse_log
from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.kinds import kind_of
from pynetbuilder.schema import caffe_pb2

TOOL_ENV = "PYNETBUILDER_CAFFE"
CUDA_TOOL_ENV = "PYNETBUILDER_CAFFE_CUDA"
CUDA_TOOL = "caffe-cuda"
SNAPSHOT_DIR = "snapshots"
_ITERATION = re.compile(r"Iteration (\d+)")
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


def data_sources(net: Any) -> dict[str, DataSource]:
    """The first data layer reading a source (a kind with a ``source`` field: Data,
    HDF5Data, ImageData ...) of each phase of a ``NetParameter`` holding TRAIN and TEST
    layers (``include { phase }`` rules; a layer without rules serves both)."""
    found: dict[str, DataSource] = {}
    for layer in net.layer:
        field_name = kind_of(layer.type).source
        if not field_name:
            continue
        params = getattr(layer, field_name)
        phases = {rule.phase for rule in layer.include if rule.HasField("phase")}
        for phase, number in (("train", caffe_pb2.TRAIN), ("test", caffe_pb2.TEST)):
            if phase not in found and (not phases or number in phases):
                backend = (caffe_pb2.DataParameter.DB.Name(params.backend)
                           if field_name == "data_param" else "")
                found[phase] = DataSource(phase, layer.name, layer.type, params.source,
                                          params.batch_size, backend)
    return found


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def count_images(src: DataSource, base: Path) -> int:
    """Images in a data layer's source (relative paths from ``base``, where Caffe runs),
    counted by :mod:`pynetbuilder.datasource` as Caffe reads them.  UsageError when
    the source is missing or unreadable."""
    from pynetbuilder import datasource

    path = _resolve(src.source, base)
    what = f"the {src.phase} data source {src.source!r} (layer {src.layer})"
    if not path.exists():
        raise UsageError(f"{what} does not exist")
    kind = datasource.kind_of(src.type, src.backend or "LMDB")
    try:
        return datasource.count(path, kind, bases=(base,))
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}") from None


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


# ---------------------------------------------------------------- labels


def check_labels(net: Any, base: Path) -> None:
    """Refuse a label outside the classes of a layer that reads class indices (the
    registry's ``labels``: SoftmaxWithLoss, Accuracy, MultinomialLogisticLoss ...),
    in the TRAIN and TEST phases of ``net`` (a ``NetParameter``; relative sources from
    ``base``, where Caffe runs).  Caffe's release build does not check them (a
    ``DCHECK``): it reads outside its arrays and fails later with a corrupted heap, or
    trains on garbage.  Layers whose input shape cannot be inferred are left to Caffe."""
    from pynetbuilder import datasource
    from pynetbuilder.inspect import filter_phase, input_shapes
    from pynetbuilder.report import analyze

    done: set[tuple[str, str, int, int | None]] = set()
    for phase in ("train", "test"):
        kept = filter_phase(net, phase)
        users = [layer for layer in kept.layer
                 if kind_of(layer.type).labels is not None and len(layer.bottom) > 1]
        if not users:
            continue
        try:
            inputs, declared, _ = input_shapes(kept, None, base)
            shapes = analyze(kept, inputs=inputs, declared=declared).blob_shapes
        except (UsageError, NetError):
            continue  # the count of the sources, or Caffe, says what is wrong
        producers: dict[str, Any] = {}
        for layer in kept.layer:
            for top in layer.top:
                producers.setdefault(top, layer)
        for layer in users:
            scores, label_blob = layer.bottom[0], layer.bottom[1]
            source_layer = producers.get(label_blob)
            if scores not in shapes or source_layer is None \
                    or not kind_of(source_layer.type).source:
                continue
            rule = kind_of(layer.type).labels
            assert rule is not None
            classes, ignored = rule(layer, shapes[scores])
            kind, source, options = datasource.layer_source(source_layer)
            key = (source, label_blob, classes, ignored)
            if key in done:
                continue
            done.add(key)
            for where, label in datasource.labels(source, kind, options, bases=(base,),
                                                  dataset=label_blob):
                if (label < 0 or label >= classes) and label != ignored:
                    raise UsageError(
                        f"label {label} of {where} in the {phase} data source {source} is out "
                        f"of range for layer {layer.name!r} ({layer.type}), whose input "
                        f"{scores!r} has {classes} classes (labels 0..{classes - 1}); Caffe "
                        "would read outside its arrays (give the net as many classes as "
                        "the data has)")


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


class Watch:
    """What ``caffe train``'s output tells while it runs (fed every line): the progress
    lines (:class:`Progress`), the last iteration reached, the snapshot lines, whether
    Caffe stopped early, and a displayed loss that is not finite, whose reason it
    returns (which stops Caffe: :func:`~pynetbuilder.caffe_process.run_logged`)."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.iteration: int | None = None
        self.snapshot_lines: list[str] = []
        self.diverged: Record | None = None
        self.stopped_early = False

    def __call__(self, line: str) -> str | None:
        self.progress(line)
        if m := _ITERATION.search(line):
            self.iteration = int(m[1])
        if m := snapshots.LOG_LINE.search(line):
            self.snapshot_lines.append(line)
            if it := snapshots.ITERATION.search(m[2]):  # Caffe counts it done
                self.iteration = max(self.iteration or 0, int(it[1]))
        elif "Optimization stopped early" in line:
            self.stopped_early = True
        r = parse_line(line)
        if (self.diverged is None and r is not None and r.kind == "loss"
                and not math.isfinite(r.value)):
            self.diverged = r
            return f"the loss became {r.value:g} at iteration {r.iteration}"
        return None

    def reached(self) -> str:
        return (f"at iteration {self.iteration}" if self.iteration is not None
                else "before training began")


@dataclass
class TrainResult:
    """What a finished ``caffe train`` left: the log and its rows, the last test scores
    (``scores``: name -> value, measured at ``tested_at``), the final weights and
    solver state of its newest good snapshot (paths as Caffe's folder names them;
    None if Caffe wrote none)."""

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


def snapshot_note(checked: snapshots.Checked) -> str:
    """What became of a run's snapshots, for a message: the bad ones removed, the newest
    good one."""
    parts = [f"removed the bad snapshot of iteration {snap.iteration} ({why})"
             for snap, why in checked.removed]
    good = checked.good
    if good is not None:
        shown = good.state or good.weights
        parts.append(f"the last good snapshot is {shown} (iteration {good.iteration}; "
                     "continue with --resume)")
    else:
        parts.append("no snapshot was kept")
    return "; ".join(parts)


def train(folder: Path, *, solver: str = "solver.prototxt", max_iter: int,
          resume: Snapshot | None = None, weights: Path | None = None, gpu: str | None = None,
          emit: Callable[[str], None] = print) -> TrainResult:
    """Run ``caffe train`` in ``folder`` (everything was checked and written before):
    progress through ``emit``, the whole output in ``folder/log_name(resume)``.

    Raises :class:`CaffeError` when Caffe fails, the loss becomes NaN or infinite, the
    log cannot be written or the final snapshot is bad; an interrupt is raised again
    once Caffe stopped, with ``kept`` saying what is left (module doc)."""
    folder = Path(folder)
    (folder / SNAPSHOT_DIR).mkdir(exist_ok=True)
    log = folder / log_name(resume)
    cmd = [str(caffe_tool(gpu)), "train", "-solver", solver, *gpu_flag(gpu)]
    if resume is not None:
        cmd += ["-snapshot", str(resume.path)]
    start = None
    if weights is not None:  # this Caffe ignores -weights: see pynetbuilder.finetune
        from pynetbuilder.finetune import initial_state

        start = initial_state(folder, solver, Path(weights),
                              folder / SNAPSHOT_DIR / ".start_from_weights.solverstate")
        cmd += ["-snapshot", str(start.resolve())]
    watch = Watch(Progress(max_iter, emit))
    try:
        done = run_logged(cmd, cwd=folder, log=log, on_line=watch, graceful=True)
    finally:
        if start is not None:
            start.unlink(missing_ok=True)
    watch.progress.close()
    checked = snapshots.keep_good(snapshots.from_log(watch.snapshot_lines, folder))
    note = snapshot_note(checked)
    if done.interrupt is not None:
        if watch.iteration is None:
            stopped = "Caffe was stopped before training began"
        else:
            stopped = f"Caffe stopped {watch.reached()}"
        done.interrupt.kept = f"{stopped}; {note}; the log is {log}"  # type: ignore[attr-defined]
        raise done.interrupt
    failure = _failure(done, watch, log)
    if failure:
        log_state = (f"the log {log} is incomplete" if done.log_error
                     else f"the full log is {log}")
        raise CaffeError(f"{failure}; {note}; {log_state}")
    if checked.removed:
        raise CaffeError(f"Caffe finished, but {note}; the full log is {log}")
    return _result(log, checked, stopped_early=watch.stopped_early)


def _failure(done: Finished, watch: Watch, log: Path) -> str:
    """Why a run failed, in words ("" when it did not)."""
    if watch.diverged is not None:
        r = watch.diverged
        return (f"the loss became {r.value:g} at iteration {r.iteration}, so training was "
                "stopped (a learning rate too high? try a lower --base_lr)")
    caffe = (f"caffe train failed ({describe_status(done.status)}) {watch.reached()}: "
             f"{failure_reason(done.tail)}") if done.failed else ""
    if done.log_error is not None:
        why = done.log_error.strerror or str(done.log_error)
        stopped = f"cannot write the log {log} ({why}), so Caffe was stopped {watch.reached()}"
        return f"{stopped}; then {caffe}" if caffe else stopped
    return caffe


def _result(log: Path, checked: snapshots.Checked, *, stopped_early: bool) -> TrainResult:
    text = log.read_text(encoding="utf-8", errors="replace")
    table = parse_log(text)
    good = checked.good
    iteration = good.iteration if good else max(table.iterations(), default=0)
    result = TrainResult(log, table, iteration,
                         weights=good.weights.resolve() if good and good.weights else None,
                         state=good.state.resolve() if good and good.state else None,
                         stopped_early=stopped_early)
    last = {c: table.last(c) for c in table.test_columns()}
    if last:
        result.tested_at = max(it for it, _ in last.values())
        result.scores = {c.removeprefix("test_"): v for c, (it, v) in last.items()
                         if it == result.tested_at}
    return result


def evaluate(folder: Path, *, net: str, weights: Path, iterations: int,
             gpu: str | None = None, log: Path | None = None) -> dict[str, float]:
    """``caffe test``: the TEST phase of ``net`` with ``weights`` over ``iterations``
    batches; returns Caffe's mean of every output (name -> value).  An interrupt kills
    it and is raised again."""
    cmd = [str(caffe_tool(gpu)), "test", "-model", net, "-weights", str(weights),
           "-iterations", str(iterations), *gpu_flag(gpu)]
    done = run_logged(cmd, cwd=folder, log=log)
    if done.interrupt is not None:
        raise done.interrupt
    if done.failed:
        where = f"; the full log is {log}" if log else ""
        raise CaffeError(f"caffe test failed ({describe_status(done.status)}): "
                         f"{failure_reason(done.tail)}{where}")
    scores: dict[str, float] = {}
    for line in done.tail:
        if "caffe.cpp" in line and (m := _SCORE.search(line)):
            scores[m[1]] = float(m[2])
    return scores
