"""`pynetbuilder train` end to end with real Caffe: a small residual net learns
scikit-learn's digits, a run resumes from its snapshot, and bad input or a Caffe
failure is one clear line with the log kept."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pynetbuilder import dataio

NUM = r"([-+]?[\d.]+(?:e[-+]?\d+)?)"


def pnb(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pynetbuilder", *args], cwd=cwd,
                          capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits at 16x16, a stratified 80/20 split (1,438 / 359 images) as two LMDBs."""
    folder = tmp_path_factory.mktemp("digits")
    images, labels = dataio.digits(16)
    xtr, ytr, xte, yte = dataio.split(images, labels, 0.2, seed=0)
    dataio.write_lmdb(folder / "train_lmdb", xtr, ytr)
    dataio.write_lmdb(folder / "test_lmdb", xte, yte)
    return {"folder": folder, "mean": dataio.mean_values(xtr)[0], "test": (xte, yte),
            "train_size": len(ytr), "test_size": len(yte)}


def train_args(digits, *extra: str) -> list[str]:
    """ResNet-8 (8 channels wide) on the digits: batch 32, 30 epochs with the reference
    CIFAR ResNet recipe (Nesterov, lr 0.1, x0.1 at 50% and 75%), tests every 5 epochs."""
    return ["train", "resnet", "--depth", "8", "--initial_channels", "8",
            "--num_classes", "10", "--train_source", "train_lmdb", "--test_source", "test_lmdb",
            "--crop_size", "16", "--mean", f"{digits['mean']:.3f}", "--batch_size", "32",
            "--test_batch_size", str(digits["test_size"]), "--epochs", "30",
            "--test_every", "5", "--seed", "1", *extra]


@pytest.fixture(scope="module")
def trained(digits):
    proc = pnb(*train_args(digits, "--snapshot_every", "15", "-o", "run"),
               cwd=digits["folder"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return digits["folder"] / "run", proc


def last_test(log_text: str, name: str = "accuracy_top1") -> tuple[int, float]:
    """(iteration, value) of the log's last test of ``name``, read with plain regexes."""
    tests = re.findall(r"Iteration (\d+), Testing net \(#0\)\n(?:.*\n)*?.*"
                       rf"Test net output #\d+: {name} = {NUM}", log_text)
    iteration, value = tests[-1]
    return int(iteration), float(value)


def test_resnet_learns_the_digits(trained, digits):
    run, proc = trained
    iterations = 30 * (digits["train_size"] // 32)  # 30 epochs of 44 full batches
    solver = (run / "solver.prototxt").read_text()
    assert f"max_iter: {iterations}" in solver and 'type: "Nesterov"' in solver
    log = (run / "train.log").read_text()
    assert "Optimization Done." in log
    iteration, accuracy = last_test(log)
    assert iteration == iterations
    assert accuracy >= 0.90, f"Caffe's test accuracy {accuracy}"
    # what the command printed is Caffe's number
    assert (f"final test: accuracy_top1 = {accuracy:g}, loss = "
            f"{last_test(log, 'loss')[1]:g} (iteration {iterations} of {iterations})"
            in proc.stdout)
    weights = run / "snapshots" / f"resnet8_basic_iter_{iterations}.caffemodel"
    assert f"weights: {weights}" in proc.stdout and weights.is_file()
    # progress while it ran: display lines and each test
    assert re.search(rf"^iteration +0/{iterations}: loss [\d.]+, lr 0\.1$", proc.stdout, re.M)
    assert len(re.findall(r"^iteration +\d+/\d+: test accuracy_top1 ", proc.stdout, re.M)) == 6
    for name in ("log.csv", "loss.png", "accuracy.png", "deploy.prototxt"):
        assert (run / name).is_file()


def test_deploy_net_and_weights_reproduce_caffes_accuracy(trained, digits, caffe):
    """The trained weights in the deploy net, fed the test images minus the mean, score
    what Caffe's test net printed (the deploy input has the LMDB's single channel)."""
    run, _ = trained
    iteration, accuracy = last_test((run / "train.log").read_text())
    net = caffe.Net(str(run / "deploy.prototxt"),
                    str(run / "snapshots" / f"resnet8_basic_iter_{iteration}.caffemodel"),
                    caffe.TEST)
    images, labels = digits["test"]
    net.blobs["data"].reshape(*images.shape)
    net.blobs["data"].data[...] = images.astype(np.float32) - np.float32(f"{digits['mean']:.3f}")
    prob = net.forward()["prob"]
    assert np.mean(prob.argmax(axis=1) == labels) == pytest.approx(accuracy, abs=1e-6)


def test_resume_continues_from_the_snapshot(trained, digits):
    run, _ = trained
    snapshot = run / "snapshots" / "resnet8_basic_iter_660.solverstate"
    proc = pnb("train", "run", "--resume", str(snapshot), cwd=digits["folder"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (run / "train_resumed_660.log").read_text()
    assert f"Resuming from {snapshot}" in log
    steps = [int(i) for i in re.findall(r"Iteration (\d+)", log)]
    assert steps[0] == 660 and max(steps) == steps[-1] == 1320 and "Optimization Done." in log
    assert "Snapshotting to binary proto file snapshots/resnet8_basic_iter_1320" in log
    assert "caffe train from iteration 660" in proc.stdout
    assert "(iteration 1320 of 1320)" in proc.stdout
    assert (run / "train.log").is_file()  # the first run's log is kept


def test_a_folder_with_its_own_solver_trains_as_it_is(digits, tmp_path):
    """`train DIR`: DIR's train.prototxt and solver.prototxt, as written by hand."""
    folder = tmp_path / "own"
    folder.mkdir()
    (folder / "train.prototxt").write_text(LOGREG.format(source=digits["folder"] / "train_lmdb"))
    (folder / "solver.prototxt").write_text(
        'net: "train.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 7 display: 7 '
        'snapshot_prefix: "snapshots/own" solver_mode: CPU type: "Adam"\n')
    proc = pnb("train", str(folder), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Adam base_lr 0.01" in proc.stdout
    assert (folder / "snapshots" / "own_iter_7.caffemodel").is_file()
    proc = pnb("train", str(folder), "--epochs", "3", cwd=tmp_path)
    assert proc.returncode == 2 and "solver.prototxt exists" in proc.stderr


LOGREG = """name: "logreg"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ crop_size: {crop} scale: 0.004 }}
  data_param {{ source: "{source}" batch_size: 8 backend: LMDB }} }}
{middle}layer {{ name: "fc" type: "InnerProduct" bottom: "{fc_in}" top: "fc"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
"""
LOGREG = LOGREG.replace("{crop}", "16").replace("{middle}", "").replace("{fc_in}", "data")

BOOM_LAYER = '''import caffe


class Boom(caffe.Layer):
    """Passes its input through; fails on its 26th forward pass."""

    def setup(self, bottom, top):
        self.calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        self.calls += 1
        if self.calls > 25:
            raise RuntimeError("boom on forward pass 26")
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("pynetbuilder: error: ") and proc.stderr.count("\n") == 1
    return proc.stderr


def test_caffe_failing_at_setup_is_one_line_and_the_log_is_kept(digits, tmp_path):
    folder = tmp_path / "crop"
    folder.mkdir()
    net = LOGREG.replace("crop_size: 16", "crop_size: 20")
    (folder / "train.prototxt").write_text(net.format(source=digits["folder"] / "train_lmdb"))
    err = one_line_error(pnb("train", "crop", "--epochs", "1", cwd=tmp_path))
    assert "caffe train failed" in err and "before training began" in err
    assert "Check failed: datum_height >= crop_h (16 vs. 20)" in err
    assert f"the full log is {Path('crop') / 'train.log'}" in err
    assert "Check failed: datum_height" in (folder / "train.log").read_text()


def test_caffe_failing_mid_run_names_the_iteration(digits, tmp_path):
    (tmp_path / "boom_layer.py").write_text(BOOM_LAYER)
    folder = tmp_path / "boom"
    folder.mkdir()
    middle = ('layer { name: "boom" type: "Python" bottom: "data" top: "boomed"\n'
              '  python_param { module: "boom_layer" layer: "Boom" } }\n')
    net = (LOGREG.replace('bottom: "data" top: "fc"', 'bottom: "boomed" top: "fc"')
           .replace('layer {{ name: "fc"', middle.replace("{", "{{").replace("}", "}}")
                    + 'layer {{ name: "fc"'))
    (folder / "train.prototxt").write_text(net.format(source=digits["folder"] / "train_lmdb"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = pnb("train", "boom", "--epochs", "1", "--display", "5", cwd=tmp_path, env=env)
    err = one_line_error(proc)
    assert "caffe train failed" in err and "at iteration 20" in err
    assert "RuntimeError: boom on forward pass 26" in err
    assert "iteration  20/179: loss" in proc.stdout  # progress shown until then
    log = (folder / "train.log").read_text()
    assert "Iteration 20, lr" in log and "RuntimeError: boom" in log


BAD = [
    (["--policy", "cosine"], ["'cosine' learning-rate schedule", "fixed, step, multistep"]),
    (["--policy", "triangle"], ["unknown learning-rate policy 'triangle'"]),
    (["--recipe", "cifar/shake_shake"], ["cosine", "(recipe cifar/shake_shake)"]),
    (["--recipe", "cifar/resnet+mixup"], ["mixup", "refused"]),
    (["--warmup_epochs", "2"], ["no learning-rate warm-up"]),
    (["--optimizer", "lars"], ["no 'lars' optimizer"]),
    (["--resume", "run9/snapshots/x_iter_5.solverstate"], ["snapshot", "does not exist"]),
    (["--resume", "train_lmdb/data.mdb"], ["takes a .solverstate file"]),
    (["--milestones", "20", "10"], ["milestones must rise"]),
    (["--test_source", "nowhere_lmdb"], ["test data source", "does not exist"]),
    (["--crop_size", "20"], ["--crop_size 20 exceeds the 16x16 images"]),
    (["--mean", "1,2,3"], ["--mean has 3 values", "1 channel(s)"]),
    (["--gpu", "first"], ["--gpu takes device numbers"]),
    (["--depth", "9"], ["knob depth accepts 6n+2"]),
]


@pytest.mark.parametrize("extra,words", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_one_line_exit_2_nothing_written(digits, extra, words):
    out = digits["folder"] / "never"
    err = one_line_error(pnb(*train_args(digits, *extra, "-o", "never"), cwd=digits["folder"]))
    for word in words:
        assert word in err
    assert not out.exists()


def test_resume_past_max_iter_and_without_folder(trained, digits):
    run, _ = trained
    final = run / "snapshots" / "resnet8_basic_iter_1320.solverstate"
    err = one_line_error(pnb("train", "run", "--resume", str(final), cwd=digits["folder"]))
    assert "nothing to train" in err
    err = one_line_error(pnb(*train_args(digits, "--resume", str(final), "-o", "elsewhere"),
                             cwd=digits["folder"]))
    assert "resnet8_basic_iter_1320.caffemodel" in err and "missing" in err
    assert not (digits["folder"] / "elsewhere").exists()


def test_no_target_and_no_folder(tmp_path):
    assert "needs a model name or a folder" in one_line_error(pnb("train", cwd=tmp_path))
    err = one_line_error(pnb("train", "resnt", "-o", "x", cwd=tmp_path))
    assert "unknown model 'resnt'" in err and "folder holding train.prototxt" in err
    err = one_line_error(pnb("train", "resnet", cwd=tmp_path))
    assert "train needs -o DIR" in err


def test_weights_start_the_run_from_them(trained, digits):
    """--weights (fine-tuning): Caffe's own loss at iteration 0 is the trained net's
    (near 0), not a fresh net's (near ln 10 = 2.3); this Caffe's -weights flag is
    ignored, see finetune.py."""
    run, _ = trained
    weights = max((run / "snapshots").glob("*.caffemodel"), key=lambda p: p.stat().st_mtime)
    proc = pnb(*train_args(digits, "--weights", str(weights), "--epochs", "1", "-o", "ft"),
               cwd=digits["folder"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    fresh = pnb(*train_args(digits, "--epochs", "1", "-o", "fresh"), cwd=digits["folder"])
    assert fresh.returncode == 0, fresh.stderr[-2000:]

    def first_loss(name: str) -> float:
        log = (digits["folder"] / name / "train.log").read_text()
        return float(re.search(rf"Iteration 0, loss = {NUM}", log)[1])

    assert first_loss("ft") < 0.2 < 1.5 < first_loss("fresh")
    assert not list((digits["folder"] / "ft" / "snapshots").glob(".start*"))
