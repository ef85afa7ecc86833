"""`pynetbuilder train` and its run folder: a folder holding a run is reused only with
--overwrite (or --resume), a refused run changes nothing, and an interrupted run (SIGTERM,
SIGINT to the process or to its group as a terminal's Ctrl-C) stops Caffe cleanly: Caffe
snapshots, the user is told what was kept, the status is 143 / 130, the folder holds the
previous run whole or the new run alone, and Caffe never outlives the command."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_digits_lmdb
from processes import (
    freeze_at,
    handles,
    hidden_entries,
    processes_with,
    send,
    start,
    tree,
    wait_until,
)

KEPT = re.compile(r"pynetbuilder: interrupted by (SIG\w+); Caffe stopped at iteration (\d+); "
                  r"the last good snapshot is (\S+) \(iteration (\d+); continue with "
                  r"--resume\); the log is (\S+)")


def pnb(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pynetbuilder", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_lmdb(tmp_path_factory.mktemp("digits8"), 8)


def train_args(digits: Path, epochs: str, *extra: str) -> list[str]:
    """ResNet-8, 4 channels wide, on the 8x8 digits: 44 iterations per epoch; 300 epochs
    (13,200 iterations) run long enough to be interrupted."""
    return ["train", "resnet", "--depth", "8", "--initial_channels", "4", "--num_classes", "10",
            "--train_source", str(digits / "train_lmdb"),
            "--test_source", str(digits / "test_lmdb"), "--crop_size", "8", "--mean", "78",
            "--batch_size", "32", "--test_batch_size", "359", "--epochs", epochs, *extra]


@pytest.fixture
def old_run(digits, tmp_path):
    """A finished one-epoch run in tmp_path/run, and what it holds."""
    done = pnb(*train_args(digits, "1", "--seed", "1", "-o", "run"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "run"
    assert {"train.log", "log.csv", "loss.png", "accuracy.png", "snapshots"} <= {
        p.name for p in run.iterdir()}
    return run, tree(run)


def one_line(done: subprocess.CompletedProcess, status: int = 2) -> str:
    assert done.returncode == status, done.stdout[-2000:] + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# ---------------------------------------------------------------- reusing a run folder


def test_a_run_folder_is_reused_only_when_asked(old_run, digits, tmp_path):
    run, before = old_run
    line = one_line(pnb(*train_args(digits, "2", "-o", "run"), cwd=tmp_path))
    assert line.startswith("pynetbuilder: error: run holds a previous run (train.log, "), line
    assert "give --overwrite to replace it, --resume SNAPSHOT to continue it" in line
    # a refused run writes nothing, --overwrite or not
    line = one_line(pnb(*train_args(digits, "2", "--mean", "/nonexist.binaryproto",
                                    "--overwrite", "-o", "run"), cwd=tmp_path))
    assert "--mean /nonexist.binaryproto: cannot read /nonexist.binaryproto: No such file" in line
    # the folder form too: DIR holding train.prototxt and a previous run
    line = one_line(pnb("train", "run", cwd=tmp_path))
    assert "run holds a previous run (train.log, " in line
    assert tree(run) == before


def test_overwrite_replaces_the_previous_run_as_a_unit(old_run, digits, tmp_path):
    """The new run (2 epochs, 88 iterations) leaves no file of the old one (44
    iterations): logs, snapshots, CSV and plots all describe the new run."""
    run, before = old_run
    done = pnb(*train_args(digits, "2", "--seed", "2", "--overwrite", "-o", "run"),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "replaced the previous run in run" in done.stdout
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "resnet8_basic_iter_88.caffemodel", "resnet8_basic_iter_88.solverstate"]
    log = (run / "train.log").read_text()
    assert "max_iter: 88" in log and "random_seed: 2" in log
    csv_last = (run / "log.csv").read_text().strip().splitlines()[-1]
    assert csv_last.startswith("88,")
    after = tree(run)
    changed = {name for name in before if before[name] != after.get(name)}
    assert changed >= {"train.log", "log.csv", "loss.png", "solver.prototxt"}
    assert hidden_entries(run) == []


# ---------------------------------------------------------------- signals


def _progress_line(proc: subprocess.Popen) -> str:
    """Read the command's output up to its first progress line of Caffe's training."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if re.match(r"iteration +\d+/\d+: loss ", line):
            return line
    raise AssertionError("no progress line")


def _check_kept(line: str, name: str, cwd: Path, caffe) -> int:
    """The message names the signal, the iteration Caffe stopped at and its snapshot,
    which Caffe wrote whole at that iteration; returns the iteration."""
    found = KEPT.fullmatch(line)
    assert found, line
    assert found[1] == name and found[2] == found[4] and found[5] == "run/train.log"
    iteration = int(found[2])
    state = caffe.proto.caffe_pb2.SolverState.FromString((cwd / found[3]).read_bytes())
    assert state.iter == iteration
    log = (cwd / "run" / "train.log").read_text()
    assert "Optimization stopped early." in log
    assert (f"Snapshotting solver state to binary proto file snapshots/resnet8_basic_iter_"
            f"{iteration}.solverstate") in log
    return iteration


def _no_caffe_left(marker: str) -> bool:
    return wait_until(lambda: "caffe" not in processes_with(marker).values(), timeout=10,
                      pause=0.05) is not None


@pytest.mark.parametrize("signum, group, status", [
    (signal.SIGTERM, False, 143),
    (signal.SIGINT, False, 130),
    (signal.SIGINT, True, 130),
], ids=["SIGTERM", "SIGINT to the process", "SIGINT to the group (Ctrl-C)"])
def test_a_signal_stops_caffe_which_snapshots(signum, group, status, digits, caffe, tmp_path):
    proc, marker = start(train_args(digits, "300", "--seed", "1", "-o", "run"), cwd=tmp_path,
                         start_new_session=True)
    try:
        _progress_line(proc)
        send(proc, signum, group)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    _check_kept(lines[0], signal.Signals(signum).name, tmp_path, caffe)
    assert _no_caffe_left(marker)
    assert hidden_entries(tmp_path / "run") == []


def test_caffe_ends_with_its_parent(old_run, digits, tmp_path):
    """The command killed outright (SIGKILL, no chance to clean up): Caffe goes too.  The
    previous run it had moved aside is left hidden; the next run into the folder
    deletes it."""
    run, _ = old_run
    proc, marker = start(train_args(digits, "300", "--overwrite", "-o", "run"), cwd=tmp_path)
    _progress_line(proc)
    assert "caffe" in processes_with(marker).values()
    proc.kill()
    proc.communicate(timeout=60)
    assert _no_caffe_left(marker)
    assert [p.name for p in run.iterdir() if p.name.startswith(".pnb-previous-run-")]
    done = pnb(*train_args(digits, "1", "--overwrite", "-o", "run"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert hidden_entries(run) == []


# moment -> (when, what the folder then holds)
MOMENTS = {
    # the command runs, checking and counting; nothing written yet: the old run, whole
    "planning": (lambda proc, run: (handles(proc.pid, signal.SIGTERM)
                                    and (run / "log.csv").exists()
                                    and "max_iter: 44" in _text(run / "solver.prototxt")),
                 "old"),
    # the new run's files are in place, the old run moved aside; Caffe starting
    "caffe starting": (lambda proc, run: "max_iter: 13200" in _text(run / "solver.prototxt"),
                       "new"),
    # Caffe trains: it stops and snapshots
    "training": (lambda proc, run: "Iteration 100," in _text(run / "train.log"), "snapshot"),
}


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.parametrize("moment", MOMENTS)
def test_an_interrupted_overwrite_leaves_the_old_run_whole_or_the_new_run_alone(
        moment, old_run, digits, caffe, tmp_path):
    run, before = old_run
    proc, marker = start(train_args(digits, "300", "--seed", "3", "--overwrite", "-o", "run"),
                         cwd=tmp_path)
    at, holds = MOMENTS[moment]
    try:  # stopped at the moment (and checked again), then signalled
        assert freeze_at(proc, lambda: at(proc, run)), moment
        assert at(proc, run), moment
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pynetbuilder: interrupted by SIGTERM; ")
    assert _no_caffe_left(marker)
    assert [p for p in hidden_entries(run) if not p.startswith("snapshots/")] == []
    if holds == "old":
        assert tree(run) == before, lines[0]
        assert lines[0] == ("pynetbuilder: interrupted by SIGTERM; outputs not complete were "
                            "not written")
        return
    # the new run alone: nothing of the old one is left
    names = {str(p.relative_to(run)) for p in run.rglob("*")}
    assert not names & {"log.csv", "loss.png", "accuracy.png",
                        "snapshots/resnet8_basic_iter_44.caffemodel"}, names
    assert "max_iter: 13200" in _text(run / "solver.prototxt")
    log = _text(run / "train.log")
    assert "max_iter: 13200" in log or not log
    if holds == "snapshot":
        _check_kept(lines[0], "SIGTERM", tmp_path, caffe)
    else:
        assert lines[0].endswith(("; no snapshot was kept; the log is run/train.log",
                                  "; training had not started")), lines[0]
        assert "stopped at iteration" not in lines[0] or "no snapshot" in lines[0]


def test_sighup_is_an_interrupt_too(digits, caffe, tmp_path):
    """SIGHUP (a closed terminal): the same as SIGTERM, status 129."""
    proc, _ = start(train_args(digits, "300", "-o", "run"), cwd=tmp_path)
    _progress_line(proc)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 129, err
    _check_kept(err.strip(), "SIGHUP", tmp_path, caffe)


SWALLOWED = """
import os, signal, sys, time
from pynetbuilder.interrupts import Terminated, signals_as_exceptions

class Finaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(10000))  # the handler raises here, where Python can only print it

try:
    with signals_as_exceptions():
        Finaliser()
        time.sleep(5)
        print("not interrupted")
except Terminated:
    print("interrupted")
"""


def test_an_interrupt_raised_inside_a_finaliser_is_not_lost(tmp_path):
    """Python swallows an exception raised while a ``__del__`` (or a collected
    generator's ``finally``) runs; the interrupt policy sends such a signal again."""
    done = subprocess.run([sys.executable, "-c", SWALLOWED], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.stdout == "interrupted\n", done.stdout + done.stderr
    assert done.stderr == ""
