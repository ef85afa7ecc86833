"""The snapshots Caffe writes while training, checked before anyone resumes from them.

Caffe writes a snapshot as two files, in this order (``Solver::Snapshot``): the
weights (``PREFIX_iter_N.caffemodel``, a ``NetParameter``; ``.caffemodel.h5`` in
HDF5 format), then the solver state (``PREFIX_iter_N.solverstate``: iteration,
weights file, history blobs, current step; ``.solverstate.h5``).  A full disk, a
file size limit or a kill while it writes leaves a file cut short under its final
name; a loss that became NaN leaves weights that are not numbers.

A snapshot is **good** when both files are there and

- the weights parse, every blob holds as many values as its shape says, and every
  value is finite;
- the solver state parses and is complete (its last field, ``current_step``, which
  Caffe always sets, is present), is at the iteration of its name, names the weights
  file, and holds one history blob per learnable parameter blob of the weights (two
  for Adam and AdaDelta), each of its blob's size.

:func:`problem` says what is wrong with one; :func:`keep_good` removes the bad ones
of a run, newest first, until it finds a good one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pynetbuilder.io import remove
from pynetbuilder.schema import caffe_pb2

# Caffe's log lines when it writes a snapshot (Solver::SnapshotToBinaryProto ...)
LOG_LINE = re.compile(r"Snapshotting (solver state )?to (?:binary proto|HDF5) file (\S+)")
ITERATION = re.compile(r"_iter_(\d+)\.(?:caffemodel|solverstate)(?:\.h5)?$")


@dataclass(frozen=True)
class SnapshotFiles:
    """One snapshot: its iteration and its two files (None: not written)."""

    iteration: int
    weights: Path | None = None
    state: Path | None = None

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.weights, self.state) if p is not None]


def from_log(lines: Iterable[str], folder: Path) -> list[SnapshotFiles]:
    """The snapshots a Caffe log says were written, in order (relative paths are
    relative to ``folder``, where Caffe ran)."""
    found: dict[int, SnapshotFiles] = {}
    for line in lines:
        m = LOG_LINE.search(line)
        if m is None or not (it := ITERATION.search(m[2])):
            continue
        iteration = int(it[1])
        path = Path(m[2]) if Path(m[2]).is_absolute() else folder / m[2]
        old = found.pop(iteration, SnapshotFiles(iteration))
        found[iteration] = (SnapshotFiles(iteration, old.weights, path) if m[1]
                            else SnapshotFiles(iteration, path, old.state))
    return list(found.values())


def _count(blob: caffe_pb2.BlobProto) -> int:
    if blob.HasField("shape"):
        return math.prod(blob.shape.dim)
    return math.prod((blob.num, blob.channels, blob.height, blob.width))


def _weights_problem(path: Path) -> tuple[str | None, list[int]]:
    """(what is wrong with a .caffemodel, the sizes of its learnable blobs in order)."""
    try:
        net = caffe_pb2.NetParameter.FromString(path.read_bytes())
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror})", []
    except Exception:  # protobuf's DecodeError: cut short
        return f"{path.name} is cut short (it does not parse as Caffe weights)", []
    if not net.layer:  # an empty file parses as an empty message
        return f"{path.name} is cut short (it holds no layer)", []
    owners: set[str] = set()
    learnable: list[int] = []
    for layer in net.layer:
        for i, blob in enumerate(layer.blobs):
            size = _count(blob)
            values = blob.data if len(blob.data) else blob.double_data
            if len(values) != size:
                return (f"{path.name} is cut short (layer {layer.name!r} blob {i} holds "
                        f"{len(values)} of its {size} values)"), []
            if size and not np.isfinite(np.asarray(values, dtype=np.float64)).all():
                return (f"{path.name} holds weights that are not finite numbers (layer "
                        f"{layer.name!r})"), []
            name = layer.param[i].name if i < len(layer.param) else ""
            if not name or name not in owners:  # Net::AppendParam: an owner is learnable
                owners.add(name)
                learnable.append(size)
    return None, learnable


def _state_problem(snap: SnapshotFiles, learnable: Sequence[int]) -> str | None:
    assert snap.state is not None and snap.weights is not None
    name = snap.state.name
    try:
        state = caffe_pb2.SolverState.FromString(snap.state.read_bytes())
    except OSError as exc:
        return f"{name} cannot be read ({exc.strerror})"
    except Exception:  # protobuf's DecodeError
        return f"{name} is cut short (it does not parse as a Caffe solver state)"
    if not state.HasField("current_step"):  # also an empty file
        return f"{name} is cut short (it ends before its last field, current_step)"
    if state.iter != snap.iteration:
        return f"{name} is at iteration {state.iter}, not {snap.iteration}"
    if Path(state.learned_net).name != snap.weights.name:
        return f"{name} names the weights {state.learned_net!r}, not {snap.weights.name}"
    history = [_count(h) for h in state.history]
    n = len(learnable)
    if len(history) not in (n, 2 * n) or history != list(learnable) * (len(history) // max(n, 1)):
        return (f"{name} holds {len(history)} history blobs that do not match the "
                f"{n} learnable blobs of {snap.weights.name}")
    return None


def _datasets(group: Any) -> list[Any]:
    """Every dataset under an HDF5 group."""
    import h5py

    found: list[Any] = []
    group.visititems(lambda _, item: found.append(item) if isinstance(item, h5py.Dataset)
                     else None)
    return found


def _hdf5_problem(snap: SnapshotFiles) -> str | None:
    import h5py

    assert snap.weights is not None and snap.state is not None
    for path in (snap.weights, snap.state):
        try:
            with h5py.File(path, "r") as h5:
                if path is snap.state:
                    if "iter" not in h5 or int(h5["iter"][()]) != snap.iteration:
                        return f"{path.name} is cut short (no iteration {snap.iteration})"
                    continue
                for d in _datasets(h5):
                    if d.size and not np.isfinite(d[()]).all():
                        return (f"{path.name} holds weights that are not finite numbers "
                                f"({d.name})")
        except OSError as exc:
            return f"{path.name} is cut short or unreadable ({exc})"
    return None


def problem(snap: SnapshotFiles) -> str | None:
    """What is wrong with a snapshot (module doc), or None when it is good."""
    if snap.weights is None or not snap.weights.is_file():
        return f"the weights of iteration {snap.iteration} are missing"
    hdf5 = snap.weights.suffix == ".h5"
    wrong, learnable = (None, []) if hdf5 else _weights_problem(snap.weights)
    if wrong:
        return wrong
    if snap.state is None or not snap.state.is_file():
        return (f"the solver state of iteration {snap.iteration} is missing (Caffe stopped "
                f"after writing {snap.weights.name})")
    return _hdf5_problem(snap) if hdf5 else _state_problem(snap, learnable)


@dataclass(frozen=True)
class Checked:
    """The newest good snapshot of a run (None: none) and the bad ones removed
    (snapshot, what was wrong)."""

    good: SnapshotFiles | None
    removed: tuple[tuple[SnapshotFiles, str], ...] = ()


def keep_good(snaps: Sequence[SnapshotFiles]) -> Checked:
    """Check ``snaps`` newest first; remove the files of each bad one, stop at the first
    good one (older ones are not read)."""
    removed = []
    for snap in reversed(snaps):
        wrong = problem(snap)
        if wrong is None:
            return Checked(snap, tuple(removed))
        for path in snap.files:
            remove(path)
        removed.append((snap, wrong))
    return Checked(None, tuple(removed))
