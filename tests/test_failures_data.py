"""`pynetbuilder data` under bad input and interrupts: one line, exit status 2 (130 / 143
for SIGINT / SIGTERM), and on disk either the complete old set or the complete new one,
never a mix, and no hidden leftovers after a later run.  The databases are read back
with the lmdb library and Caffe's own ``Datum`` (pycaffe's caffe_pb2)."""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from processes import freeze_at, handles, hidden_entries, start

DATA = ["data", "--digits", "--size", "64", "--no-progress"]


def pnb(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pynetbuilder", *args], cwd=cwd,
                          capture_output=True, text=True, **kwargs)


def one_line(proc: subprocess.CompletedProcess | tuple, status: int = 2) -> str:
    code, err = (proc.returncode, proc.stderr) if hasattr(proc, "stderr") else proc
    assert code == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def set_content(caffe, folder: Path) -> dict[str, object]:
    """What a data set holds: every LMDB's records in key order (Caffe's Datum: label,
    shape, pixels) and the bytes of every other file (hidden entries left out)."""
    import lmdb

    content: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue  # hidden copies: see hidden_entries
        if path.is_dir():
            records = []
            env = lmdb.open(str(path), readonly=True, lock=False)
            with env.begin() as txn:
                for key, value in txn.cursor():
                    datum = caffe.proto.caffe_pb2.Datum.FromString(value)
                    records.append((key, datum.label, datum.channels, datum.height,
                                    datum.width, datum.data))
            env.close()
            content[path.name] = records
        else:
            content[path.name] = path.read_bytes()
    return content


# ---------------------------------------------------------------- bad input


def _limit_memory(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def test_a_set_larger_than_memory_is_refused_before_allocating(tmp_path):
    """4,000 x 4,000 digits: 1,797 images of 16 MB, held twice = 53.6 GiB, refused under an
    8 GiB address-space limit (the count is scikit-learn's)."""
    from sklearn.datasets import load_digits

    n = len(load_digits().images)
    needed = 2 * n * 4000 * 4000
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = pnb("data", "--digits", "-o", "big", "--size", "4000", cwd=tmp_path,
               preexec_fn=_limit_memory(8 << 30), env=one_thread)
    line = one_line(done)
    assert line.startswith(f"pynetbuilder: error: {n:,} images of 1x4000x4000 ")
    assert f"need {needed / 2**30:.1f} GiB of memory, but only " in line
    assert "is available: give a smaller --size" in line
    assert list(tmp_path.iterdir()) == []


BAD = [
    (["--size", "100000"], "an image of 1x100000x100000 (C x H x W) holds 10,000,000,000 "
     "values; Caffe's blobs hold at most 2,147,483,647 (INT_MAX)"),
    (["--size", "99999999999"], "an image of 1x99999999999x99999999999"),
    (["--size", "20000"], "images of 1x20000x20000 (held about twice while a part is "
     "written) need 1.3 TiB of memory"),
    (["--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'"),
    (["--test_fraction", "nan"], "expected a finite number, got 'nan'"),
    (["--mean", "nan"], "argument --mean: invalid choice: 'nan'"),
    (["--format", "hdf5", "--scale", "inf"], "argument --scale: expected a finite number"),
    (["--format", "hdf5", "--scale", "nan"], "argument --scale: expected a finite number"),
]


@pytest.mark.parametrize("extra, words", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_data_flags_one_line_nothing_written(extra, words, tmp_path):
    line = one_line(pnb("data", "--digits", "-o", "out", *extra, cwd=tmp_path))
    assert line.startswith("pynetbuilder: error: ") and words in line, line
    assert list(tmp_path.iterdir()) == []


def test_an_npz_with_no_images(tmp_path):
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 1, 8, 8), np.uint8),
             labels=np.zeros(0, np.int64))
    line = one_line(pnb("data", "empty.npz", "-o", "out", cwd=tmp_path))
    assert line == ("pynetbuilder: error: the array 'images' of empty.npz is empty: there is "
                    "nothing to write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.npz"]


NON_FINITE = [
    ["build", "resnet", "--mean", "nan", "-o", "out"],
    ["build", "resnet", "--mean", "104,inf,3", "-o", "out"],
    ["analyze", "resnet", "--mean", "1,-inf"],
    ["build", "mobilenet", "--width_multiplier", "nan", "-o", "out"],
    ["build", "densenet", "--compression_rate", "inf", "-o", "out"],
    ["train", "resnet", "--base_lr", "nan", "-o", "out"],
    ["train", "resnet", "--momentum", "inf", "-o", "out"],
    ["train", "resnet", "--gamma", "1e999", "-o", "out"],
    ["train", "resnet", "--epochs", "inf", "-o", "out"],
    ["train", "resnet", "--test_every", "nan", "-o", "out"],
]


@pytest.mark.parametrize("argv", NON_FINITE, ids=[" ".join(a) for a in NON_FINITE])
def test_non_finite_numbers_are_refused(argv, tmp_path):
    line = one_line(pnb(*argv, cwd=tmp_path))
    assert "finite" in line, line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- interrupts


@pytest.fixture(scope="module")
def sets(tmp_path_factory, caffe):
    """An old set (seed 0) and, written apart, the new set (seed 5) the interrupted
    runs write: their contents."""
    folder = tmp_path_factory.mktemp("sets")
    for name, seed in (("old", "0"), ("new", "5")):
        done = pnb(*DATA, "-o", name, "--seed", seed, cwd=folder)
        assert done.returncode == 0, done.stderr
    old, new = set_content(caffe, folder / "old"), set_content(caffe, folder / "new")
    assert old["train_lmdb"] != new["train_lmdb"]  # the seeds split differently
    return folder, old, new


def _staged(folder: Path) -> list[str]:
    """The targets whose new copies are staged (hidden) in ``folder``."""
    return sorted(p.name.split(".pnb")[0][1:] for p in folder.iterdir()
                  if p.name.startswith(".") and p.name.endswith(".partial"))


def _replaced(d: Path, inode: int) -> bool:
    """The train database copied in (inode ``inode``) was replaced: the new set is in."""
    return (d / "train_lmdb").stat().st_ino != inode


# moments: the command runs and nothing is staged yet (reading, resizing, splitting);
# the train database is being written; the test database is being written
MOMENTS = {
    "started": lambda proc, d, inode: (handles(proc.pid, signal.SIGTERM) and not _staged(d)
                                       and not _replaced(d, inode)),
    "train_lmdb": lambda proc, d, inode: _staged(d) == ["train_lmdb"],
    "test_lmdb": lambda proc, d, inode: "test_lmdb" in _staged(d),
}


def _interrupted_run(base: Path, moment: str, signum: int, attempts: int = 5):
    """Copy the old set to d/ and run `data --overwrite --seed 5` into it, signalled at
    ``moment`` (the process is stopped there first, and the moment checked again).
    Returns (d, exit status, stderr)."""
    for _ in range(attempts):
        d = base / "d"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(base / "old", d)
        inode = (d / "train_lmdb").stat().st_ino
        proc, _ = start([*DATA, "-o", "d", "--overwrite", "--seed", "5"], cwd=base)
        now = functools.partial(MOMENTS[moment], proc, d, inode)
        if freeze_at(proc, now) and now():
            proc.send_signal(signum)
            proc.send_signal(signal.SIGCONT)
            _, err = proc.communicate(timeout=120)
            return d, proc.returncode, err
        proc.send_signal(signal.SIGCONT)
        proc.communicate(timeout=120)
    raise AssertionError(f"the run was never caught at the moment {moment!r}")


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_interrupted_overwrite_keeps_the_old_set_whole(sets, caffe, moment, signum, status):
    base, old, new = sets
    d, code, err = _interrupted_run(base, moment, signum)
    name = signal.Signals(signum).name
    kept = {"no output was changed (the new set was not complete)"}
    if moment == "started":  # while the command's module still loads: the general words
        kept.add("outputs not complete were not written")
    line = one_line((code, err), status)
    assert line.startswith(f"pynetbuilder: interrupted by {name}; ")
    assert line.split("; ", 1)[1] in kept, line
    assert set_content(caffe, d) == old
    assert hidden_entries(d) == []


def test_killed_outright_then_a_later_run_leaves_no_hidden_copies(sets, caffe):
    """SIGKILL while the test database is staged leaves hidden copies; the next run that
    writes those targets removes them, and the folder holds the new set alone."""
    base, old, new = sets
    d, code, _ = _interrupted_run(base, "test_lmdb", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert hidden_entries(d) != []  # what a killed process cannot clean up
    assert set_content(caffe, d) == old  # still the old set, whole
    done = pnb(*DATA, "-o", "d", "--overwrite", "--seed", "5", cwd=base)
    assert done.returncode == 0, done.stderr
    assert hidden_entries(d) == []
    assert set_content(caffe, d) == new
