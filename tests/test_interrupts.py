"""One interrupt policy: SIGINT / SIGTERM end a command with one line, exit status
130 / 143, nothing half-written, and no child process left running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import VENV_PY


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_for_child(marker: str, parent: int, name: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _processes_with(marker):
            if pid == parent:
                continue
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                    return pid
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no {name} child appeared")


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_draw_interrupted_while_graphviz_runs(signum, status, tmp_path):
    marker = f"PNB_TEST_MARKER={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    out = tmp_path / "big.svg"
    proc = subprocess.Popen(
        [str(VENV_PY), "-m", "pynetbuilder", "draw", "resnet_imagenet:blocks=3,4,450,3",
         "-o", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dot = _wait_for_child(marker, proc.pid, "dot")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status
    name = signal.Signals(signum).name
    assert err.strip().splitlines() == [
        f"pynetbuilder: interrupted by {name}; outputs not complete were not written"]
    assert not out.exists() and list(tmp_path.iterdir()) == []
    deadline = time.monotonic() + 10
    while dot in _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dot not in _processes_with(marker), "Graphviz's dot outlived the command"


@pytest.mark.parametrize(
    "argv, start",
    [
        (["build", "resnet", "--dept", "20"], "pynetbuilder: error: resnet has no knob or flag "
         "'--dept'"),
        (["build", "resnet", "--num", "3"], "pynetbuilder: error: resnet has no knob or flag "
         "'--num'"),
        (["analyze", "resnet", "--input-shape", "0"], "pynetbuilder: error: analyze: argument "
         "--input-shape"),
    ],
)
def test_one_error_form_and_no_abbreviations(argv, start, tmp_path):
    done = subprocess.run([str(VENV_PY), "-m", "pynetbuilder", *argv], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(start), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
