"""The torch engine against real Caffe: the same run folder, the same initial
``.caffemodel``, the same data order (no mirror, crop = stored size) give the same
training loss at every iteration and the same final test accuracy; its snapshots
are Caffe's files (``caffe test`` reads the weights, ``caffe train -snapshot`` the
solver state, both ways)."""

from __future__ import annotations

import re
import shutil
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


# ---------------------------------------------------------------- resume, both ways


def run_engine(engine: str, folder: Path, iterations: int, resume: Path) -> Path:
    """Train ``folder`` from the solver state ``resume`` with either engine; its log."""
    snap = training.read_snapshot(resume, folder)
    if engine == "caffe":
        training.train(folder, max_iter=iterations, resume=snap, emit=lambda line: None)
    else:
        torch_train(folder, resume=resume, log_name=training.log_name(snap))
    return folder / training.log_name(snap)


def lrs(log: Path) -> dict[int, float]:
    return {it: row["lr"] for it, row in parse_log(log.read_text()).rows.items() if "lr" in row}


@pytest.mark.slow  # about 25 s: two runs and two resumed runs per direction
@pytest.mark.parametrize("writer,reader", [("torch", "caffe"), ("caffe", "torch")])
def test_resume_across_engines(digits, tmp_path, writer, reader):
    """A snapshot at iteration 10 of one engine, resumed by both: the same learning rate
    and loss at every iteration after it (so the momentum history came through)."""
    solver = SOLVERS["sgd"][0].replace("stepvalue: 20", "stepvalue: 12") + " snapshot: 10"
    first = run_folder(digits, tmp_path / "first", solver, 20)
    run_engine(writer, first, 20, initial_state(first, tmp_path))
    state = first / "snapshots" / "net_iter_10.solverstate"
    assert state.is_file()
    logs = {}
    for engine in ("caffe", "torch"):
        again = run_folder(digits, tmp_path / engine, solver, 20)
        for name in ("net_iter_10.solverstate", "net_iter_10.caffemodel"):
            shutil.copy(first / "snapshots" / name, again / "snapshots" / name)
        logs[engine] = run_engine(engine, again, 20, again / "snapshots" /
                                  "net_iter_10.solverstate")
    ours, theirs = losses(logs["torch"]), losses(logs["caffe"])
    assert min(theirs) == min(ours) == 10
    assert lrs(logs["torch"]) == lrs(logs["caffe"])
    assert lrs(logs["torch"])[12] == pytest.approx(0.005)
    rel = [abs(ours[i] - theirs[i]) / abs(theirs[i]) for i in range(10, 20)]
    print(writer, "->", reader, "max relative loss difference after resuming", max(rel))
    assert max(rel) <= 1e-3
    # the history matters: without it the torch engine's loss at iteration 11 differs
    zero = tmp_path / "zero.solverstate"
    from pynetbuilder.schema import caffe_pb2

    s = caffe_pb2.SolverState.FromString(state.read_bytes())
    for h in s.history:
        del h.data[:]
        h.data.extend([0.0] * int(np.prod(h.shape.dim)))
    s.learned_net = str(first / "snapshots" / "net_iter_10.caffemodel")
    zero.write_bytes(s.SerializeToString())
    cold = run_folder(digits, tmp_path / "cold", solver, 20)
    cold_losses = losses(run_engine("torch", cold, 20, zero))
    assert abs(cold_losses[11] - theirs[11]) / theirs[11] > 1e-3


def test_resume_refuses_another_solvers_state(digits, tmp_path):
    """An SGD state resumed by an Adam solver: one line saying why."""
    from pynetbuilder.errors import UsageError

    sgd = run_folder(digits, tmp_path / "sgd", SOLVERS["sgd"][0], 5)
    state = initial_state(sgd, tmp_path)
    adam = run_folder(digits, tmp_path / "adam", SOLVERS["adam"][0], 5)
    with pytest.raises(UsageError, match=r"holds 56 history blobs \(SGD or Nesterov\), this "
                                         r"Adam solver of 56 parameter blobs needs 112"):
        torch_train(adam, resume=state, log_name="x.log")


# ---------------------------------------------------------------- the command, distributed


def pnb(*args: str, cwd, env=None, **kw):
    import os
    import subprocess
    import sys

    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pynetbuilder", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, **kw)


def command_args(digits, *extra: str) -> list[str]:
    folder = digits["folder"]
    return ["train", "resnet", "--depth", "8", "--initial_channels", "8",
            "--num_classes", "10", "--train_source", str(folder / "train_lmdb"),
            "--test_source", str(folder / "test_lmdb"), "--crop_size", "16",
            "--mean", "77.911", "--batch_size", "16", "--test_batch_size", "359",
            "--seed", "1", "--engine", "torch", *extra]


@pytest.mark.slow  # about 40 s: 534 iterations in two gloo processes, then caffe test
def test_two_processes_learn_the_digits_and_caffe_agrees(digits, tmp_path):
    proc = pnb(*command_args(digits, "--epochs", "6", "--test_every", "2",
                             "--nproc-per-node", "2", "-o", "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = re.search(r"final test: accuracy_top1 = ([\d.]+), loss = [\d.]+ \(iteration (\d+) of",
                  proc.stdout)
    assert m, proc.stdout
    printed, iterations = float(m[1]), int(m[2])
    assert "2 processes (2 per node): the effective batch is 2 x" in proc.stdout
    assert printed >= 0.90
    run = tmp_path / "run"
    weights = run / "snapshots" / f"{digits['name']}_iter_{iterations}.caffemodel"
    assert f"weights: {weights}" in proc.stdout
    scores = training.evaluate(run, net="train.prototxt", weights=weights, iterations=1)
    print("torch printed", printed, "caffe test", scores["accuracy_top1"])
    assert abs(scores["accuracy_top1"] - printed) <= 0.005
    assert parse_log((run / "train.log").read_text()).last("test_accuracy_top1")[1] == printed
    for name in ("log.csv", "loss.png", "accuracy.png"):
        assert (run / name).is_file()


def small_folder(digits, where: Path, iterations: int, extra: str = "") -> Path:
    return run_folder(digits, where, 'type: "SGD" base_lr: 0.05 momentum: 0.9 '
                      'lr_policy: "fixed"', iterations, extra)


@pytest.mark.slow  # about 25 s: two torchrun "nodes" on this machine
def test_two_nodes_on_localhost(digits, tmp_path):
    import subprocess
    import sys

    from pynetbuilder.pytorch.train.launch import free_port

    port = str(free_port())
    folders = [small_folder(digits, tmp_path / f"node{i}", 10) for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "pynetbuilder", "train", str(f),
                               "--engine", "torch", "--nnodes", "2", "--node-rank", str(i),
                               "--master-port", port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i, f in enumerate(folders)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    log = (folders[0] / "train.log").read_text()
    assert "(2 processes, cpu" in log and "Optimization Done." in log
    assert "final test: accuracy_top1 = " in outs[0][0]
    assert "node 1 done" in outs[1][0] and not (folders[1] / "train.log").exists()


@pytest.mark.slow  # about 20 s
def test_killing_one_rank_stops_the_run_and_keeps_the_snapshot(digits, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from pynetbuilder.pytorch.weights import read_caffemodel
    from pynetbuilder.schema import caffe_pb2

    folder = small_folder(digits, tmp_path / "run", 100000, "snapshot: 5")
    proc = subprocess.Popen([sys.executable, "-m", "pynetbuilder", "train", str(folder),
                             "--engine", "torch", "--nproc-per-node", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = folder / "train.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and "Snapshotting solver state" in log.read_text():
            break
        time.sleep(0.5)
    rank1 = {}  # pid -> parent pid: rank 1's process and its DataLoader workers
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"pynetbuilder.pytorch.train.worker" in cmd and str(folder).encode() in cmd \
                and b"RANK=1" in environ:
            rank1[int(pid)] = parent
    # the rank itself, not one of its DataLoader workers (they inherit its command line)
    victims = [pid for pid, parent in rank1.items() if parent not in rank1]
    assert len(victims) == 1, rank1
    victim = victims[0]
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    assert err.startswith("pynetbuilder: error: torch training failed at iteration ")
    assert err.count("\n") == 1
    assert "rank 1 was killed by SIGKILL; the other ranks were stopped" in err
    assert f"the full log is {log}" in err and log.is_file()
    snapshot = re.search(r"the last snapshot is (\S+);", err)[1]
    state = caffe_pb2.SolverState.FromString((folder / snapshot).read_bytes())
    assert state.iter % 5 == 0 and len(state.history) == 56  # 9 conv, 9 x 3 BN, 9 x 2 Scale, 2 fc
    assert len(read_caffemodel(folder / state.learned_net)) == 28  # layers with blobs
    assert not [p for p in (folder / "snapshots").iterdir() if not p.name.startswith("net_")]


def one_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("pynetbuilder: error: ") and proc.stderr.count("\n") == 1
    return proc.stderr


def test_bad_input_is_one_line(digits, tmp_path):
    import os

    from pynetbuilder.pytorch.train.launch import free_port

    folder = small_folder(digits, tmp_path / "ok", 5)
    cores = os.cpu_count() or 1
    err = one_line(pnb("train", str(folder), "--engine", "torch", "--nproc-per-node",
                       str(cores + 1), cwd=tmp_path))
    assert f"--nproc-per-node {cores + 1} exceeds the {cores} CPU cores" in err
    err = one_line(pnb("train", str(folder), "--engine", "torch", "--amp", "bf16",
                       cwd=tmp_path))
    assert "--amp needs CUDA devices" in err
    err = one_line(pnb("train", str(folder), "--nproc-per-node", "2", cwd=tmp_path))
    assert "--nproc-per-node need --engine torch" in err
    port = str(free_port())
    proc = pnb("train", str(folder), "--engine", "torch", "--nnodes", "2", "--node-rank",
               "1", "--master-port", port, cwd=tmp_path,
               env={"PYNETBUILDER_CONNECT_TIMEOUT": "2"}, timeout=60)
    err = one_line(proc)
    assert f"cannot reach the master 127.0.0.1:{port} within 2 s" in err
    rms = run_folder(digits, tmp_path / "rms", 'type: "RMSProp" base_lr: 0.01 '
                     'lr_policy: "fixed"', 5)
    err = one_line(pnb("train", str(rms), "--engine", "torch", cwd=tmp_path))
    assert "solver type 'RMSProp': the torch engine has SGD, Nesterov, Adam" in err
    for extra, words in [("rms_decay: 0.9", "solver field 'rms_decay' is set"),
                         ("debug_info: true", "'debug_info'"),
                         ('eval_type: "detection"', "eval_type 'detection'"),
                         ('snapshot_format: HDF5', "snapshot_format HDF5")]:
        bad = small_folder(digits, tmp_path / f"bad{len(words)}{extra[:4]}", 5, extra)
        assert words in one_line(pnb("train", str(bad), "--engine", "torch", cwd=tmp_path))
        assert not (bad / "train.log").exists()


def test_data_too_small_for_the_world(tmp_path):
    images, labels = dataio.digits(16)
    dataio.write_lmdb(tmp_path / "tiny_lmdb", images[:20], labels[:20])
    proc = pnb("train", "resnet", "--depth", "8", "--initial_channels", "8",
               "--num_classes", "10", "--train_source", "tiny_lmdb", "--mean", "77",
               "--test_source", "tiny_lmdb", "--crop_size", "16", "--batch_size", "16",
               "--engine", "torch",
               "--nproc-per-node", "2", "-o", "run", cwd=tmp_path)
    err = one_line(proc)
    assert "holds 20 records, fewer than one batch of 16 for each of 2 processes (32)" in err
    assert not (tmp_path / "run").exists()
