"""The run folder of ``pynetbuilder train``: one run per folder, replaced as a unit.

A run writes its nets (``train MODEL``), ``solver.prototxt``, Caffe's log
(``train.log``, ``train_resumed_<N>.log``), ``test.log``, ``snapshots/``, ``log.csv``
and the plots.  :func:`previous_run` finds those of an earlier run;
:func:`start_run` writes the new run's files as one set and, in the same step, moves
the previous run's files aside into one hidden folder (``.pnb-previous-run-<pid>-<token>``),
which the caller deletes when the run ends, however it ends.  So a folder never holds
parts of two runs; one left by a run killed outright is deleted by the next
:func:`start_run` in that folder.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from pynetbuilder.io import OutputSet, process_alive, remove, signals_held
from pynetbuilder.training import SNAPSHOT_DIR

# What a run writes in its folder besides the nets (``log.csv`` and the plots:
# :func:`pynetbuilder.caffelog.plot_files`; train_resumed_<N>.log too).
RUN_OUTPUTS = ("train.log", "test.log", "log.csv", "loss.png", "accuracy.png", SNAPSHOT_DIR)
NET_FILES = ("train.prototxt", "test.prototxt", "deploy.prototxt", "solver.prototxt")
_ASIDE = re.compile(r"^\.pnb-previous-run-(\d+)-[0-9a-f]{8}$")


def previous_run(folder: Path, nets_are_ours: bool) -> list[Path]:
    """The files of a previous run in ``folder``: its logs, snapshots, log.csv, plots,
    and with ``nets_are_ours`` (the nets were written by ``train MODEL``) its nets.  An
    empty ``snapshots/`` holds nothing to lose and is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = [*RUN_OUTPUTS, *(NET_FILES if nets_are_ours else ())]
    found = [folder / n for n in names if (folder / n).exists() or (folder / n).is_symlink()]
    snaps = folder / SNAPSHOT_DIR
    if snaps in found and snaps.is_dir() and not any(snaps.iterdir()):
        found.remove(snaps)
    return found + sorted(folder.glob("train_resumed_*.log"))


def start_run(folder: Path, files: Mapping[Path, str],
              previous: Sequence[Path] = ()) -> tuple[list[Path], Path | None]:
    """Write a run's ``files`` as one set (:class:`~pynetbuilder.io.OutputSet`) and, in
    the same step (signals held), move the ``previous`` run's files aside into one
    hidden folder of ``folder``, so that the folder never holds parts of both runs.
    Returns (the files written, the hidden folder, None when nothing was moved): the
    caller deletes it when the run ends.  Hidden folders left by runs killed outright
    are deleted first.  On any failure (an interrupt) nothing changed."""
    folder = Path(folder)
    for entry in folder.iterdir() if folder.is_dir() else ():
        m = _ASIDE.match(entry.name)
        if m is not None and not process_alive(int(m[1])):
            remove(entry)
    out = OutputSet(overwrite=True)
    try:
        for path, text in files.items():
            out.write(path, text)
        with signals_held():
            aside = _move_aside(folder, previous) if previous else None
            try:
                written = out.commit()
            except BaseException:
                if aside is not None:
                    _put_back(aside, folder)
                raise
    except BaseException:
        out.abort()
        raise
    return written, aside


def _move_aside(folder: Path, paths: Sequence[Path]) -> Path:
    aside = folder / f".pnb-previous-run-{os.getpid()}-{secrets.token_hex(4)}"
    aside.mkdir()
    try:
        for path in paths:
            os.rename(path, aside / path.name)
    except BaseException:
        _put_back(aside, folder)
        raise
    return aside


def _put_back(aside: Path, folder: Path) -> None:
    for entry in list(aside.iterdir()):
        if not (folder / entry.name).exists():
            os.rename(entry, folder / entry.name)
    remove(aside)
