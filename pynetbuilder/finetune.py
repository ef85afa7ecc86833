"""Starting ``caffe train`` from weights (fine-tuning) with the pinned Caffe.

The pinned Caffe's ``caffe train`` accepts ``-weights`` and then never copies them
into the net (its ``tools/caffe.cpp`` lost BVLC's ``CopyLayers`` call): training would
silently start from the fillers.  So :func:`initial_state` writes what the solver's
own restore reads instead: an iteration-0 ``.solverstate`` whose ``learned_net`` is
the weights file and whose history (momentum; Adam's and AdaDelta's second one too)
is zero, shaped as the solver's learnable parameters.  ``caffe train -snapshot``
then copies the weights layer by layer, by name, exactly as ``-weights`` does in BVLC
Caffe (layers the file does not have keep their fillers), and starts at iteration 0
with the schedule and history of a fresh run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2

# solver types that keep a second history blob per parameter (Caffe's *PreSolve)
_TWO_HISTORIES = {"Adam", "AdaDelta"}
_LEGACY_TYPES = {caffe_pb2.SolverParameter.ADAM: "Adam",
                 caffe_pb2.SolverParameter.ADADELTA: "AdaDelta"}


def _solver_type(solver: caffe_pb2.SolverParameter) -> str:
    if solver.HasField("type"):
        return solver.type
    return _LEGACY_TYPES.get(solver.solver_type, "SGD")


def learnable_shapes(net_path: Path) -> list[tuple[int, ...]]:
    """The shapes of Caffe's ``learnable_params`` of a net's TRAIN phase, in its order:
    every parameter blob of every layer, a blob shared by ``param { name }`` once."""
    from pynetbuilder.inspect import load

    inspected = load(str(net_path), phase="train")
    rows = {row.name: row for row in inspected.report.rows}
    seen: set[str] = set()
    shapes: list[tuple[int, ...]] = []
    for layer in inspected.net.layer:
        row = rows.get(layer.name)
        if row is None:
            raise UsageError(f"cannot start from weights: layer {layer.name!r} of {net_path} "
                             "could not be analysed, so its parameter blobs are unknown")
        for j, blob in enumerate(row.blobs):
            name = layer.param[j].name if j < len(layer.param) else ""
            if name:
                if name in seen:
                    continue
                seen.add(name)
            shapes.append(tuple(blob.shape))
    return shapes


def initial_state(folder: Path, solver_file: str, weights: Path, target: Path) -> Path:
    """Write the iteration-0 solver state that starts ``caffe train`` in ``folder`` from
    ``weights`` (see the module's docstring) to ``target``; return it."""
    from pynetbuilder import prototext

    solver = prototext.parse((folder / solver_file).read_text(encoding="utf-8"),
                             caffe_pb2.SolverParameter())
    net = solver.net or solver.train_net
    if not net:
        raise UsageError(f"{folder / solver_file} names no net (net: or train_net:)")
    shapes = learnable_shapes(folder / net)
    copies = 2 if _solver_type(solver) in _TWO_HISTORIES else 1
    state = caffe_pb2.SolverState(iter=0, current_step=0,
                                  learned_net=str(Path(weights).resolve()))
    for _ in range(copies):
        for shape in shapes:
            blob = state.history.add()
            blob.shape.dim.extend(shape)
            blob.data.extend(np.zeros(int(np.prod(shape)), np.float32))
    target.write_bytes(state.SerializeToString())
    return target
