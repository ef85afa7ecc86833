"""Caffe logs -> CSV and plots, and `caffe time` output -> per-layer table: both read from
real Caffe runs made here, and checked against the log text itself."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import CAFFE_TOOL
from PIL import Image

from pynetbuilder import caffelog, dataio

NUM = r"([-+]?[\d.]+(?:e[-+]?\d+)?|nan|inf)"


def pnb(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pynetbuilder", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def digits_db(tmp_path_factory):
    """Small train/test LMDBs of scikit-learn's digits (8x8) and their mean."""
    folder = tmp_path_factory.mktemp("digits")
    images, labels = dataio.digits(8)
    xtr, ytr, xte, yte = dataio.split(images[:600], labels[:600], 0.25, seed=0)
    dataio.write_lmdb(folder / "train", xtr, ytr)
    dataio.write_lmdb(folder / "test", xte, yte)
    return folder / "train", folder / "test", dataio.mean_values(xtr)[0]


NET = """name: "logreg"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ mean_value: {mean} scale: 0.0078125 }}
  data_param {{ source: "{train}" batch_size: 30 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ mean_value: {mean} scale: 0.0078125 }}
  data_param {{ source: "{test}" batch_size: 50 backend: LMDB }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.05 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 25
max_iter: 60 display: 10 test_iter: 3 test_interval: 20
snapshot_prefix: "snap" solver_mode: CPU type: "SGD"
"""


@pytest.fixture(scope="module")
def caffe_log(digits_db, tmp_path_factory):
    """A real training log: Caffe trains a softmax classifier for 60 iterations,
    testing at 0, 20, 40 and 60."""
    train, test, mean = digits_db
    folder = tmp_path_factory.mktemp("run")
    (folder / "net.prototxt").write_text(NET.format(train=train, test=test, mean=mean))
    (folder / "solver.prototxt").write_text(SOLVER)
    proc = subprocess.run([str(CAFFE_TOOL), "train", "-solver", "solver.prototxt"],
                          cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "GLOG_logtostderr": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = folder / "caffe.log"
    log.write_text(proc.stderr)
    return log


def log_numbers(text: str) -> dict[tuple[int, str], float]:
    """(iteration, column) -> value, read from the log text with plain regexes."""
    found: dict[tuple[int, str], float] = {}
    testing = None
    for line in text.splitlines():
        if m := re.search(r"Iteration (\d+), loss = " + NUM, line):
            found[int(m[1]), "loss"] = float(m[2])
            training = int(m[1])
        elif m := re.search(r"Iteration (\d+), lr = " + NUM, line):
            found[int(m[1]), "lr"] = float(m[2])
        elif m := re.search(r"Iteration (\d+), Testing net", line):
            testing = int(m[1])
        elif m := re.search(r"Train net output #\d+: (\w+) = " + NUM, line):
            found[training, f"train_{m[1]}"] = float(m[2])
        elif m := re.search(r"Test net output #\d+: (\w+) = " + NUM, line):
            found[testing, f"test_{m[1]}"] = float(m[2])
    return found


def csv_numbers(text: str) -> dict[tuple[int, str], float]:
    rows = list(csv.DictReader(io.StringIO(text)))
    return {(int(row["iteration"]), column): float(value)
            for row in rows for column, value in row.items()
            if value and column not in ("iteration", "seconds")}


def test_csv_holds_exactly_the_numbers_of_the_log(caffe_log):
    text = caffe_log.read_text()
    expected = log_numbers(text)
    table = caffelog.read_logs([caffe_log])
    assert csv_numbers(table.csv_text()) == expected
    # what the run did: displays every 10 iterations, tests at 0/20/40/60, lr halves at 25
    assert {it for it, col in expected if col == "loss"} == {0, 10, 20, 30, 40, 50, 60}
    assert {it for it, col in expected if col == "test_accuracy"} == {0, 20, 40, 60}
    assert expected[30, "lr"] == pytest.approx(0.025)
    header = table.csv_text().splitlines()[0].split(",")
    assert header == ["iteration", "seconds", "lr", "loss", "train_loss", "test_accuracy",
                      "test_loss"]
    seconds = [float(r["seconds"]) for r in csv.DictReader(io.StringIO(table.csv_text()))]
    assert seconds == sorted(seconds) and seconds[0] >= 0
    assert table.score_columns() == ["test_accuracy"]
    assert set(table.loss_columns()) == {"loss", "test_loss"}


def test_a_resumed_log_continues_the_table(caffe_log, tmp_path):
    lines = caffe_log.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "Iteration 30, loss" in line)
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text("\n".join(lines[:cut]))
    second.write_text("\n".join(lines[cut:]))
    table = caffelog.read_logs([first, second])
    whole = caffelog.read_logs([caffe_log])
    assert csv_numbers(table.csv_text()) == csv_numbers(whole.csv_text())


def test_plot_command_writes_csv_and_pictures(caffe_log, tmp_path):
    proc = pnb("plot", str(caffe_log), "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "log.csv", "loss.png"]
    assert csv_numbers((out / "log.csv").read_text()) == log_numbers(caffe_log.read_text())
    for name in ("loss.png", "accuracy.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size == (700, 420)
            assert len(np.unique(np.asarray(img.convert("L")))) > 10  # something is drawn
    last = log_numbers(caffe_log.read_text())[60, "test_accuracy"]
    assert f"last test_accuracy = {last:g} (iteration 60)" in proc.stdout
    to_stdout = pnb("plot", str(caffe_log), cwd=tmp_path)
    assert to_stdout.stdout == (out / "log.csv").read_text()


def test_plot_refuses_what_is_not_a_training_log(tmp_path):
    (tmp_path / "notes.txt").write_text("Iterations were fine.\nloss = 3\n")
    for args in (["notes.txt"], ["missing.log"]):
        proc = pnb("plot", *args, "-o", "out", cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("pynetbuilder: error:")
        assert not (tmp_path / "out").exists()
    assert "is it a Caffe training log" in pnb("plot", "notes.txt", cwd=tmp_path).stderr


@pytest.mark.parametrize("line,expected", [
    # classic glog prefix (no year), BVLC master's speed note, a NaN loss
    ("I0412 10:01:02.123456  77 solver.cpp:218] Iteration 100 (35.6 iter/s, 2.81s/100 "
     "iters), loss = 0.693", ("loss", 100, "loss", 0.693)),
    ("I0412 10:01:02.2 77 sgd_solver.cpp:105] Iteration 100, lr = 1e-05",
     ("lr", 100, "lr", 1e-05)),
    ("Iteration 7, loss = nan", ("loss", 7, "loss", "nan")),
    ("I0412 10:01:03 77 solver.cpp:404]     Test net output #1: acc/top-5 = 0.75",
     ("test", None, "acc/top-5", 0.75)),
    ("I0412 solver.cpp:404]     Train net output #0: loss = 2.3 (* 1 = 2.3 loss)",
     ("train", None, "loss", 2.3)),
])
def test_other_log_dialects(line, expected):
    r = caffelog.parse_line(line)
    kind, iteration, name, value = expected
    assert (r.kind, r.iteration, r.name) == (kind, iteration, name)
    assert np.isnan(r.value) if value == "nan" else r.value == value


def test_glog_times_with_and_without_year():
    a = caffelog.glog_time("I0412 10:01:02.500000  77 x.cpp:1] a")
    b = caffelog.glog_time("I20261123 05:29:22.524655  2322 caffe.cpp:197] Use CPU.")
    assert (a.month, a.day, a.second, a.microsecond) == (4, 12, 2, 500000)
    assert (b.year, b.hour, b.minute) == (2026, 5, 29)


# ---------------------------------------------------------------- caffe time


def test_time_a_model_per_layer(tmp_path):
    from pynetbuilder import models

    proc = pnb("time", "resnet", "--depth", "8", "--initial_channels", "4", "--batch_size",
               "4", "--iterations", "2", "--json", "t.json", "--keep", "kept", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "t.json").read_text())
    deploy = models.build("resnet", depth=8, initial_channels=4).to_proto("deploy")
    ours = [layer.name for layer in deploy.layer]
    timed = [layer["name"] for layer in report["layers"]]
    assert [n for n in timed if "_split" not in n] == ours  # every layer, in order
    assert {layer["type"] for layer in report["layers"] if "_split" in layer["name"]} == {"Split"}
    # the numbers are caffe time's own (its log was kept)
    log = (tmp_path / "kept" / "time.log").read_text()
    assert "Testing for 2 iterations." in log and report["iterations"] == 2
    forward = dict(re.findall(r"\]\s*(\S+)\tforward: " + NUM + " ms", log))
    assert {x["name"]: x["forward_ms"] for x in report["layers"]} == {
        k: float(v) for k, v in forward.items()}
    assert report["forward_ms"] == float(re.search(r"Average Forward pass: " + NUM, log)[1])
    # the deploy net was timed with a full backward pass, at the batch asked for
    kept = (tmp_path / "kept" / "net.prototxt").read_text()
    assert "force_backward: true" in kept and "dim: 4" in kept
    assert all(x["backward_ms"] > 0 for x in report["layers"] if x["type"] == "Convolution")
    assert "forward-backward" in proc.stdout and "stage3_block1_branch2b" in proc.stdout


def test_time_a_train_prototxt_reading_data(digits_db, tmp_path):
    train, test, mean = digits_db
    (tmp_path / "net.prototxt").write_text(NET.format(train=train, test=test, mean=mean))
    proc = pnb("time", "net.prototxt", "--iterations", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:-2]}
    assert rows == {"data": "Data", "fc": "InnerProduct", "loss": "SoftmaxWithLoss"}


def test_time_reports_caffe_failing(tmp_path):
    (tmp_path / "net.prototxt").write_text(
        NET.format(train=tmp_path / "nowhere", test=tmp_path / "nowhere", mean=0))
    proc = pnb("time", "net.prototxt", "--iterations", "2", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "caffe time failed" in proc.stderr and "No such file" in proc.stderr
    proc = pnb("time", "resnet", "--phase", "train", "--train_source", "nowhere", cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_time_runs_a_net_asking_for_cudnn_on_the_cpu(tmp_path):
    """Published prototxt often set ``engine: CUDNN``; Caffe's CPU build aborts on it
    ("unknown engine").  ``time`` on the CPU times Caffe's own engine and says so; real
    Caffe runs the net and reports every layer."""
    (tmp_path / "net.prototxt").write_text(
        'input: "data" input_shape { dim: 2 dim: 3 dim: 16 dim: 16 }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        'convolution_param { num_output: 4 kernel_size: 3 engine: CUDNN '
        'weight_filler { type: "xavier" } } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" '
        'relu_param { engine: CUDNN } }\n'
        'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" '
        'pooling_param { pool: MAX kernel_size: 2 stride: 2 engine: CAFFE } }\n')
    proc = pnb("time", "net.prototxt", "--iterations", "2", "--phase", "test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note: ")]
    assert notes == ["note: layer 'conv' (Convolution) asks for engine CUDNN; timed with "
                     "Caffe's own engine (CPU)",
                     "note: layer 'relu' (ReLU) asks for engine CUDNN; timed with Caffe's "
                     "own engine (CPU)"]
    assert all(name in proc.stdout for name in ("conv", "relu", "pool"))
