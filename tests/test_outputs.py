"""The one writer of outputs (pynetbuilder.io): sets replaced as a unit, leftovers of
killed runs cleaned, symlinks written through, devices written to, usual permissions."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import ROOT

from pynetbuilder import dataio
from pynetbuilder.errors import UsageError
from pynetbuilder.io import OutputSet, write_files


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def old_set(folder) -> dict:
    files = {folder / name: f"old {name}\n" for name in ("a.txt", "b.txt", "c.txt")}
    write_files(files)
    return files


def contents(files) -> dict:
    return {p: p.read_text() for p in files}


def run_python(code: str, cwd, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, timeout=60,
                          **kwargs)


# --- a set is replaced as a unit --------------------------------------------------------


def test_old_set_stays_until_the_new_one_is_complete(tmp_path):
    files = old_set(tmp_path)
    before = contents(files)
    with OutputSet() as out:
        for path in files:
            out.write(path, f"new {path.name}\n")
            assert contents(files) == before  # nothing replaced while the set is written
        db = out.folder(tmp_path / "db")
        (db / "data.bin").write_bytes(b"x")
        assert not (tmp_path / "db").exists()
    assert contents(files) == {p: f"new {p.name}\n" for p in files}
    assert (tmp_path / "db" / "data.bin").read_bytes() == b"x"
    assert out.written == [*files, tmp_path / "db"]
    assert listing(tmp_path) == ["a.txt", "b.txt", "c.txt", "db"]


def test_a_failure_while_writing_changes_nothing(tmp_path):
    files = old_set(tmp_path)
    before = contents(files)
    for failure in (RuntimeError("disk on fire"), KeyboardInterrupt()):
        with pytest.raises(type(failure)):
            with OutputSet() as out:
                out.write(tmp_path / "a.txt", "new")
                out.folder(tmp_path / "new" / "deeper" / "db")
                raise failure
        assert contents(before) == before
        assert listing(tmp_path) == ["a.txt", "b.txt", "c.txt"]  # no copies, no folders


def test_a_failed_rename_puts_back_what_was_replaced(tmp_path, monkeypatch):
    """The third target cannot be renamed into place: the first two get their old
    contents back."""
    files = old_set(tmp_path)
    before = contents(files)
    real = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if str(src).endswith(".partial") and os.path.basename(dst) == "c.txt":
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        write_files({p: "new" for p in files})
    monkeypatch.undo()
    assert contents(files) == before
    assert listing(tmp_path) == ["a.txt", "b.txt", "c.txt"]
    assert len([c for c in calls if str(c[0]).endswith(".partial")]) == 3  # a, b done first


def test_an_existing_target_needs_overwrite_and_no_file_replaces_a_folder(tmp_path):
    files = old_set(tmp_path)
    with pytest.raises(UsageError, match="a.txt already exists; remove it, or replace it"):
        write_files({tmp_path / "a.txt": "new", tmp_path / "d.txt": "new"}, overwrite=False)
    assert listing(tmp_path) == ["a.txt", "b.txt", "c.txt"]
    with pytest.raises(UsageError, match="is a file; it cannot be replaced by a folder"):
        with OutputSet() as out:
            out.folder(tmp_path / "a.txt")
    (tmp_path / "sub").mkdir()
    with pytest.raises(UsageError, match="sub is a folder; it cannot be replaced by a file"):
        write_files({tmp_path / "b.txt": "new", tmp_path / "sub": "new"})
    assert contents(files) == {p: f"old {p.name}\n" for p in files}


# --- leftovers of killed runs -----------------------------------------------------------


def test_copies_of_a_killed_run_are_cleaned_by_the_next_write(tmp_path):
    (tmp_path / "f.txt").write_text("old")
    done = run_python(
        "import os, signal\nfrom pynetbuilder.io import OutputSet\n"
        "out = OutputSet()\nout.write('f.txt', 'half')\nout.folder('db')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n", cwd=tmp_path)
    assert done.returncode == -signal.SIGKILL
    left = listing(tmp_path)
    assert len(left) == 3 and left[2] == "f.txt" and (tmp_path / "f.txt").read_text() == "old"
    assert left[0].startswith(".db.pnb") and left[1].startswith(".f.txt.pnb")
    assert all(n.endswith(".partial") for n in left[:2])
    write_files({tmp_path / "f.txt": "new"})  # cleans what was left for f.txt
    assert listing(tmp_path) == [left[0], "f.txt"]
    with OutputSet() as out:  # and for db
        out.folder(tmp_path / "db")
    assert listing(tmp_path) == ["db", "f.txt"]
    assert (tmp_path / "f.txt").read_text() == "new"


def test_a_target_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    """Killed between moving the old target aside and renaming the new one in: the next
    write of that target puts the old one back first (so a failure there keeps it)."""
    (tmp_path / "f.txt").write_text("old")
    done = run_python(
        "import os, signal\nfrom pynetbuilder.io import write_files\nreal = os.rename\n"
        "def rename(src, dst):\n"
        "    real(src, dst)\n"
        "    if str(dst).endswith('.old'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.rename = rename\nwrite_files({'f.txt': 'new'})\n", cwd=tmp_path)
    assert done.returncode == -signal.SIGKILL
    left = listing(tmp_path)
    assert "f.txt" not in left and any(n.endswith(".old") for n in left)
    with pytest.raises(RuntimeError):
        with OutputSet() as out:
            out.write(tmp_path / "f.txt", "newer")
            raise RuntimeError("fails before it is complete")
    assert listing(tmp_path) == ["f.txt"] and (tmp_path / "f.txt").read_text() == "old"


def test_copies_of_a_running_process_are_left_alone(tmp_path):
    mine = tmp_path / f".f.txt.pnb{os.getpid()}-0123abcd.partial"
    mine.write_text("in progress")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = tmp_path / f".f.txt.pnb{int(gone.stdout)}-0123abcd.partial"
    dead.write_text("left over")
    other = tmp_path / f".g.txt.pnb{int(gone.stdout)}-0123abcd.partial"
    other.write_text("another target's")
    write_files({tmp_path / "f.txt": "new"})
    assert listing(tmp_path) == sorted([mine.name, other.name, "f.txt"])


# --- symlinks and devices ---------------------------------------------------------------


def test_a_symlink_is_written_through(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "report.json").write_text("old")
    link = tmp_path / "report.json"
    link.symlink_to(real / "report.json")
    chain = tmp_path / "chain.json"
    chain.symlink_to(link)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(real / "created.json")
    write_files({link: "new", dangling: "made"})
    assert link.is_symlink() and os.readlink(link) == str(real / "report.json")
    assert (real / "report.json").read_text() == "new"
    assert dangling.is_symlink() and (real / "created.json").read_text() == "made"
    write_files({chain: "newer"})
    assert chain.is_symlink() and link.is_symlink()
    assert (real / "report.json").read_text() == "newer"
    assert listing(tmp_path) == ["chain.json", "dangling.json", "real", "report.json"]
    assert listing(real) == ["created.json", "report.json"]


def test_a_symlinked_folder_output_replaces_the_folder_it_names(tmp_path):
    real = tmp_path / "dbs" / "train_lmdb"
    dataio.write_lmdb(real, np.zeros((5, 1, 2, 2), np.uint8), np.arange(5))
    link = tmp_path / "train_lmdb"
    link.symlink_to(real)
    dataio.write_lmdb(link, np.ones((3, 1, 2, 2), np.uint8), np.arange(3), overwrite=True)
    assert link.is_symlink() and real.is_dir() and not real.is_symlink()
    images, labels = dataio.read_lmdb(real)
    assert images.shape == (3, 1, 2, 2) and labels.tolist() == [0, 1, 2]


def test_a_command_writes_into_a_symlinked_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "pynetbuilder"), "build", "resnet",
                           "--depth", "8", "-o", "out"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").is_symlink()
    assert listing(tmp_path / "real") == ["deploy.prototxt", "test.prototxt", "train.prototxt"]


def test_stdout_is_written_through_in_place(tmp_path):
    """``--json /dev/stdout`` with stdout redirected to a file: the JSON lands between
    what was printed before and after, in the same file (not a replacement)."""
    target = tmp_path / "out.txt"
    code = ("from pynetbuilder.io import write_files\nprint('before', flush=True)\n"
            "print(write_files({'/dev/stdout': 'JSON\\n'}))\nprint('after')\n")
    with target.open("w") as fh:
        inode = os.fstat(fh.fileno()).st_ino
        done = run_python(code, cwd=tmp_path, stdout=fh)
    assert done.returncode == 0
    assert target.read_text() == "before\nJSON\n[PosixPath('/dev/stdout')]\nafter\n"
    assert target.stat().st_ino == inode and listing(tmp_path) == ["out.txt"]
    piped = run_python(code, cwd=tmp_path, capture_output=True, text=True)
    assert piped.stdout == "before\nJSON\n[PosixPath('/dev/stdout')]\nafter\n"


def test_a_command_prints_json_to_stdout(tmp_path):
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "pynetbuilder"), "analyze",
                           "resnet:depth=8", "--json", "/dev/stdout"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("{") and '"params": ' in done.stdout


def test_devices_and_fifos_are_written_to_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_files({fifo: "through the pipe", tmp_path / "file.txt": "plain"})
    reader.join(timeout=30)
    assert got == ["through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    write_files({"/dev/null": "gone"})
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert listing(tmp_path) == ["file.txt", "pipe"]
    with pytest.raises(UsageError, match="/dev/null is not a folder"):
        dataio.write_lmdb("/dev/null", np.zeros((1, 1, 1, 1), np.uint8), [0])


# --- permissions ------------------------------------------------------------------------


def test_new_outputs_get_the_umask_and_replaced_ones_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        (path,) = write_files({tmp_path / "new.txt": "x"})
        db = dataio.write_lmdb(tmp_path / "db", np.zeros((2, 1, 2, 2), np.uint8), [0, 1])
        kept = tmp_path / "private.txt"
        kept.write_text("old")
        kept.chmod(0o600)
        write_files({kept: "new"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(db.stat().st_mode) == 0o750
    assert {stat.S_IMODE(p.stat().st_mode) for p in db.iterdir()} == {0o640}
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.read_text() == "new"


# --- the data command writes one set ----------------------------------------------------


def test_data_command_replaces_its_outputs_as_one_set(tmp_path):
    """With --overwrite, a failure after the databases were written keeps the old ones."""
    pnb = str(ROOT / ".venv" / "bin" / "pynetbuilder")
    first = subprocess.run([pnb, "data", "--digits", "-o", "out", "--no-progress"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    before = {p.name: dataio.read_lmdb(p)[1].tolist()
              for p in (tmp_path / "out" / "train_lmdb", tmp_path / "out" / "test_lmdb")}
    (tmp_path / "out" / "mean.binaryproto").mkdir()  # cannot be replaced by a file
    again = subprocess.run([pnb, "data", "--digits", "-o", "out", "--no-progress", "--seed",
                            "3", "--mean", "binaryproto", "--overwrite"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "mean.binaryproto is a folder" in again.stderr
    after = {p.name: dataio.read_lmdb(p)[1].tolist()
             for p in (tmp_path / "out" / "train_lmdb", tmp_path / "out" / "test_lmdb")}
    assert after == before
    assert listing(tmp_path / "out") == ["labels.txt", "mean.binaryproto", "test_lmdb",
                                         "train_lmdb"]
