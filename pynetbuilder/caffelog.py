"""Caffe's logs as numbers: training logs -> rows -> CSV and PNG plots; ``caffe time`` output.

Any Caffe training log in glog's format is read (``I1123 05:29:22.52 ... solver.cpp:231]
Iteration 20, loss = 2.0``; the glog prefix is optional, so logs that lost it read too).
The lines used:

- ``Iteration N, loss = X`` (also BVLC's ``Iteration N (1.2 iter/s, ...), loss = X``):
  column ``loss``, the loss Caffe displays (averaged over ``average_loss`` iterations);
- ``Train net output #k: NAME = X`` -> ``train_NAME`` (that iteration's value);
- ``Iteration N, lr = X`` -> ``lr``;
- ``Iteration N, Testing net (#k)`` then ``Test net output #j: NAME = X`` ->
  ``test_NAME`` for test net 0, ``test<k>_NAME`` for others; ``Test loss: X`` ->
  ``test_net_loss``.

An output printed with ``(* weight = ... loss)`` is a loss; the others (accuracy)
are scores.  One row per iteration that logged anything; ``seconds`` is the time
since the log's first timestamped line (when the lines carry glog's prefix; further
logs of a resumed run continue from the previous log's last time).
Values are Python floats parsed from the log's text, written back with ``repr``,
which reproduces Caffe's 6-significant-digit numbers exactly.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pynetbuilder.errors import UsageError

_NUM = r"([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))"
_GLOG = re.compile(r"^[IWEF](\d{4}|\d{8}) (\d\d:\d\d:\d\d(?:\.\d+)?)")
_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = " + _NUM)
_LR = re.compile(r"Iteration (\d+), lr = " + _NUM)
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(r"(Train|Test) net output #\d+: (\S+) = " + _NUM + r"( \(\*)?")
_TEST_LOSS = re.compile(r"Test loss: " + _NUM)


@dataclass(frozen=True)
class Record:
    """One fact from one log line.  ``kind``: loss, lr, testing, train, test, test_loss."""

    kind: str
    iteration: int | None = None
    name: str = ""
    value: float = math.nan
    is_loss: bool = False
    net: int = 0


def _float(text: str) -> float:
    return float(text)  # accepts nan / inf as Caffe prints them


def parse_line(line: str) -> Record | None:
    """The record a log line holds, or None for every other line."""
    if "Iteration" in line:
        if m := _LOSS.search(line):
            return Record("loss", int(m[1]), "loss", _float(m[2]), True)
        if m := _LR.search(line):
            return Record("lr", int(m[1]), "lr", _float(m[2]))
        if m := _TESTING.search(line):
            return Record("testing", int(m[1]), net=int(m[2]))
    elif "net output #" in line:
        if m := _OUTPUT.search(line):
            return Record(m[1].lower(), None, m[2], _float(m[3]), bool(m[4]))
    elif "Test loss:" in line and (m := _TEST_LOSS.search(line)):
        return Record("test_loss", None, "test_net_loss", _float(m[1]), True)
    return None


def glog_time(line: str) -> datetime | None:
    """The timestamp of a glog line (``I1123 05:29:22.524`` or ``I20261123 ...``)."""
    m = _GLOG.match(line)
    if not m:
        return None
    day = m[1] if len(m[1]) == 8 else f"2000{m[1]}"  # no year in classic glog
    try:
        return datetime.strptime(f"{day} {m[2]}", "%Y%m%d %H:%M:%S.%f" if "." in m[2]
                                  else "%Y%m%d %H:%M:%S")
    except ValueError:
        return None


@dataclass
class LogTable:
    """Rows of a training log, keyed by iteration, filled line by line (:meth:`feed`)."""

    rows: dict[int, dict[str, float]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    losses: set[str] = field(default_factory=set)
    _train_iter: int | None = None
    _test_iter: int | None = None
    _test_net: int = 0
    _start: datetime | None = None
    _now: float | None = None
    _offset: float = 0.0  # seconds of the logs read before this one

    def feed(self, line: str) -> Record | None:
        """Take one log line; return its record (None for lines without numbers)."""
        when = glog_time(line)
        if when is not None:
            self._start = self._start or when
            self._now = self._offset + (when - self._start).total_seconds()
        record = parse_line(line)
        if record is not None:
            self.add(record)
        return record

    def new_file(self) -> None:
        """Start a further log (a resumed run): its times continue from the last time
        seen, so ``seconds`` is the training time of all logs read."""
        self._offset = self._now if self._now is not None else self._offset
        self._start = self._now = None
        self._train_iter = self._test_iter = None

    def add(self, r: Record) -> None:
        if r.kind == "testing":
            self._test_iter, self._test_net = r.iteration, r.net
            return
        if r.kind in ("loss", "lr"):
            self._train_iter = r.iteration
            self._set(r.iteration, r.name, r.value, r.is_loss)
        elif r.kind == "train" and self._train_iter is not None:
            self._set(self._train_iter, f"train_{r.name}", r.value, r.is_loss)
        elif r.kind in ("test", "test_loss") and self._test_iter is not None:
            prefix = "test" if self._test_net == 0 else f"test{self._test_net}"
            name = r.name if r.kind == "test_loss" else f"{prefix}_{r.name}"
            self._set(self._test_iter, name, r.value, r.is_loss)

    def _set(self, iteration: int | None, column: str, value: float, is_loss: bool) -> None:
        assert iteration is not None
        row = self.rows.get(iteration)
        if row is None:
            row = self.rows[iteration] = {}
            if self._now is not None:
                row["seconds"] = self._now
        if column not in self.columns:
            self.columns.append(column)
        if is_loss:
            self.losses.add(column)
        row[column] = value

    # ------------------------------------------------------------ views

    def iterations(self) -> list[int]:
        return sorted(self.rows)

    def series(self, column: str) -> tuple[list[int], list[float]]:
        """(iterations, values) where ``column`` has a value."""
        its = [i for i in self.iterations() if column in self.rows[i]]
        return its, [self.rows[i][column] for i in its]

    def last(self, column: str) -> tuple[int, float] | None:
        its, values = self.series(column)
        return (its[-1], values[-1]) if its else None

    def test_columns(self) -> list[str]:
        return [c for c in self.columns if c.startswith("test")]

    def score_columns(self) -> list[str]:
        """Test outputs that are not losses (accuracy ...)."""
        return [c for c in self.test_columns() if c not in self.losses]

    def loss_columns(self) -> list[str]:
        """The displayed training loss and every test loss."""
        return [c for c in self.columns if c in self.losses and not c.startswith("train_")]

    def ordered_columns(self) -> list[str]:
        """``lr``, ``loss``, the train outputs, then the test columns (each group in
        order of first appearance)."""
        def group(c: str) -> int:
            return {"lr": 0, "loss": 1}.get(c, 2 if c.startswith("train_") else 3)

        return sorted(self.columns, key=group)  # stable: keeps appearance order

    def csv_text(self) -> str:
        """``iteration,seconds,`` then :meth:`ordered_columns`; a cell is empty where the
        log has no value for that iteration."""
        has_time = any("seconds" in row for row in self.rows.values())
        header = ["iteration", *(["seconds"] if has_time else []), *self.ordered_columns()]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for it in self.iterations():
            row = self.rows[it]
            writer.writerow([it, *(_cell(row.get(c)) for c in header[1:])])
        return out.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


def parse_log(lines: Iterable[str] | str, table: LogTable | None = None) -> LogTable:
    """Every row of a log (its text or its lines), added to ``table`` if given."""
    table = table if table is not None else LogTable()
    for line in lines.splitlines() if isinstance(lines, str) else lines:
        table.feed(line)
    return table


def read_logs(paths: Iterable[str | Path]) -> LogTable:
    """The rows of one or more logs (a run and its resumed runs, in order; a later
    value for the same iteration and column wins).  UsageError if a file cannot be
    read or no line of any holds training numbers."""
    table = LogTable()
    names = []
    for path in map(Path, paths):
        names.append(str(path))
        table.new_file()
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                parse_log(fh, table)
        except OSError as exc:
            raise UsageError(f"cannot read log {path}: {exc.strerror}") from None
    if not table.rows:
        raise UsageError(f"{', '.join(names)}: no Caffe training lines (\"Iteration N, loss = "
                         "X\", \"Test net output #k: NAME = X\"); is it a Caffe training log?")
    return table


# ---------------------------------------------------------------- plots


def plot_png(table: LogTable, columns: list[str], *, title: str, ylabel: str,
             unit_range: bool = False) -> bytes:
    """A PNG of ``columns`` against iterations (matplotlib's Agg canvas, no pyplot
    state).  A loss plot uses a log scale when every value is positive; ``unit_range``
    fixes the y axis to 0..1 when the values lie there (accuracy)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    every: list[float] = []
    for column in columns:
        its, values = table.series(column)
        every += values
        style = "-" if len(its) > 30 else "-o"
        ax.plot(its, values, style, markersize=3, label=column)
    finite = [v for v in every if math.isfinite(v)]
    if unit_range and finite and 0 <= min(finite) and max(finite) <= 1:
        ax.set_ylim(0, 1.0)
    elif not unit_range and finite and min(finite) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if columns:
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_files(table: LogTable) -> dict[str, str | bytes]:
    """``log.csv``, ``loss.png`` and (when the log has test scores) ``accuracy.png``."""
    files: dict[str, str | bytes] = {"log.csv": table.csv_text()}
    if table.loss_columns():
        files["loss.png"] = plot_png(table, table.loss_columns(), title="loss",
                                     ylabel="loss")
    if table.score_columns():
        files["accuracy.png"] = plot_png(table, table.score_columns(), title="test accuracy",
                                         ylabel="accuracy", unit_range=True)
    return files


# ---------------------------------------------------------------- caffe time

_LAYER_TIME = re.compile(r"\]\s*(\S.*?)\t(forward|backward): " + _NUM + " ms")
_AVERAGE = re.compile(r"Average (Forward pass|Backward pass|Forward-Backward): " + _NUM + " ms")
_ITERATIONS = re.compile(r"Testing for (\d+) iterations")


@dataclass(frozen=True)
class LayerTime:
    """Average milliseconds of one layer per iteration."""

    name: str
    forward_ms: float
    backward_ms: float


@dataclass(frozen=True)
class Timing:
    """What ``caffe time`` printed: per-layer averages in the net's order, and the
    average forward, backward and forward-backward pass (ms per iteration)."""

    layers: list[LayerTime]
    forward_ms: float
    backward_ms: float
    forward_backward_ms: float
    iterations: int


def parse_time(text: str) -> Timing:
    """Parse ``caffe time``'s output; UsageError when it holds no timing summary."""
    forward: dict[str, float] = {}
    backward: dict[str, float] = {}
    averages: dict[str, float] = {}
    iterations = 0
    for line in text.splitlines():
        if m := _LAYER_TIME.search(line):
            (forward if m[2] == "forward" else backward)[m[1].strip()] = float(m[3])
        elif m := _AVERAGE.search(line):
            averages[m[1]] = float(m[2])
        elif m := _ITERATIONS.search(line):
            iterations = int(m[1])
    if len(averages) < 3:
        raise UsageError("no timing summary in caffe time's output (\"Average Forward pass\")")
    layers = [LayerTime(n, ms, backward.get(n, math.nan)) for n, ms in forward.items()]
    return Timing(layers, averages["Forward pass"], averages["Backward pass"],
                  averages["Forward-Backward"], iterations)
