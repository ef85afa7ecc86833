"""The torch engine against real Caffe: the same run folder, the same initial
``.caffemodel``, the same data order (no mirror, crop = stored size) give the same
training loss at every iteration and the same final test accuracy; its snapshots
are Caffe's files (``caffe test`` reads the weights, ``caffe train -snapshot`` the
solver state, both ways)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pynetbuilder import dataio, training
from pynetbuilder.caffelog import parse_log

torch = pytest.importorskip("torch")

SOLVERS = {
    "sgd": ('type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 '
            'lr_policy: "multistep" gamma: 0.1 stepvalue: 20 stepvalue: 35', 50),
    "nesterov": ('type: "Nesterov" base_lr: 0.05 momentum: 0.9 weight_decay: 0.0001 '
                 'lr_policy: "step" gamma: 0.5 stepsize: 8', 20),
    "adam": ('type: "Adam" base_lr: 0.002 momentum: 0.9 momentum2: 0.999 delta: 1e-8 '
             'weight_decay: 0.0001 lr_policy: "poly" power: 1.0', 20),
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits at 16x16 as LMDBs (1,438 train / 359 test) and a depth-8 CIFAR ResNet run
    folder (8 channels wide) written by `pynetbuilder train`'s model form (no mirror)."""
    folder = tmp_path_factory.mktemp("digits")
    images, labels = dataio.digits(16)
    xtr, ytr, xte, yte = dataio.split(images, labels, 0.2, seed=0)
    dataio.write_lmdb(folder / "train_lmdb", xtr, ytr)
    dataio.write_lmdb(folder / "test_lmdb", xte, yte)
    mean = dataio.mean_values(xtr)[0]
    from pynetbuilder.graph import prototxt_files
    from pynetbuilder.models.spec import parse_model_spec

    spec = parse_model_spec(["resnet", "--depth", "8", "--initial_channels", "8",
                       "--num_classes", "10", "--train_source", str(folder / "train_lmdb"),
                       "--test_source", str(folder / "test_lmdb"), "--crop_size", "16",
                       "--mean", f"{mean:.3f}", "--no-mirror", "--batch_size", "32",
                       "--test_batch_size", "359"])
    net = spec.build()
    nets = prototxt_files(net)
    return {"folder": folder, "train": nets["train.prototxt"], "name": net.name}


def run_folder(digits, where: Path, solver: str, iterations: int, extra: str = "") -> Path:
    where.mkdir(parents=True)
    (where / "train.prototxt").write_text(digits["train"])
    (where / "solver.prototxt").write_text(
        f'net: "train.prototxt" {solver} max_iter: {iterations} display: 1 '
        f'test_iter: 1 test_interval: {iterations} snapshot_prefix: "snapshots/net" '
        f'solver_mode: CPU random_seed: 3 {extra}\n')
    (where / "snapshots").mkdir()
    return where


def initial_state(folder: Path, where: Path, seed: int = 7) -> Path:
    """The engine's filler initialisation of the folder's train net as
    ``where/init.caffemodel``, and ``where/init.solverstate``: iteration 0, zero
    history, naming those weights.  (The pinned Caffe's ``caffe train`` ignores
    ``-weights``; ``-snapshot`` is how both engines start from the same weights.)"""
    from pynetbuilder.pytorch import save_caffemodel, to_module
    from pynetbuilder.pytorch.train.engine import read_net
    from pynetbuilder.pytorch.train.fillers import fill
    from pynetbuilder.pytorch.train.solver import CaffeSolver, net_blobs
    from pynetbuilder.solver import read_solver

    s = read_solver(folder / "solver.prototxt")
    net = to_module(read_net(folder, s), phase="train")
    fill(net, torch.Generator().manual_seed(seed))
    save_caffemodel(net, where / "init.caffemodel")
    state = CaffeSolver(s, net_blobs(net)).state_bytes(str(where / "init.caffemodel"))
    (where / "init.solverstate").write_bytes(state)
    return where / "init.solverstate"


def torch_train(folder: Path, **options):
    from pynetbuilder.pytorch.train.engine import Options, train

    torch.set_num_threads(1)
    return train(Options(folder, workers=1, **options), emit=lambda line: None)


def losses(log: Path) -> dict[int, float]:
    table = parse_log(log.read_text())
    return {it: row["loss"] for it, row in table.rows.items() if "loss" in row}


def final_accuracy(log: Path) -> float:
    table = parse_log(log.read_text())
    return table.last("test_accuracy_top1")[1]


@pytest.mark.slow  # about 30 s: three pairs of short runs, Caffe and torch
@pytest.mark.parametrize("name", list(SOLVERS))
def test_same_loss_as_caffe(digits, tmp_path, name):
    solver, iterations = SOLVERS[name]
    caffe_dir = run_folder(digits, tmp_path / "caffe", solver, iterations)
    torch_dir = run_folder(digits, tmp_path / "torch", solver, iterations)
    init = initial_state(caffe_dir, tmp_path)
    snap = training.read_snapshot(init, caffe_dir)
    training.train(caffe_dir, max_iter=iterations, resume=snap, emit=lambda line: None)
    torch_train(torch_dir, resume=init, log_name="train_resumed_0.log")
    ours = losses(torch_dir / "train_resumed_0.log")
    theirs = losses(caffe_dir / "train_resumed_0.log")
    assert sorted(theirs) == list(range(iterations + 1)) == sorted(ours)
    rel = [abs(ours[i] - theirs[i]) / abs(theirs[i]) for i in range(iterations)]
    print(name, "max relative loss difference", max(rel), "at", int(np.argmax(rel)))
    assert max(rel) <= 1e-3, list(zip(range(iterations), rel))
    a = final_accuracy(torch_dir / "train_resumed_0.log")
    b = final_accuracy(caffe_dir / "train_resumed_0.log")
    print(name, "test accuracy torch", a, "caffe", b)
    assert abs(a - b) <= 0.01
