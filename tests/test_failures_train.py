"""`pynetbuilder train` when things go wrong, with real Caffe as the judge: a solver or
labels Caffe would fail on are refused before it starts (and real Caffe is shown to
fail on them); a loss that becomes NaN stops the run; a full disk or a file size limit
leaves no cut-short snapshot under its final name, and the message quotes Caffe's last
fatal line; glog variables of the user do not hide Caffe's output.  Every refusal is
one line, exit status 2, nothing written."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CAFFE_TOOL, write_digits_lmdb
from processes import tree

from pynetbuilder import dataio

LAST_GOOD = re.compile(r"the last good snapshot is (\S+) \(iteration (\d+); continue with "
                       r"--resume\)")


def pnb(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pynetbuilder", *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def one_line(done: subprocess.CompletedProcess, status: int = 2) -> str:
    assert done.returncode == status, done.stdout[-2000:] + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pynetbuilder: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's digits at 8x8, split 80/20 (1,438 / 359 images), as two LMDBs."""
    return write_digits_lmdb(tmp_path_factory.mktemp("digits8"), 8)


def train_args(digits: Path, *extra: str, epochs: str = "1") -> list[str]:
    """A ResNet-8, 4 channels wide, on the 8x8 digits: 44 iterations per epoch."""
    return ["train", "resnet", "--depth", "8", "--initial_channels", "4", "--num_classes", "10",
            "--train_source", str(digits / "train_lmdb"),
            "--test_source", str(digits / "test_lmdb"), "--crop_size", "8", "--mean", "78",
            "--batch_size", "32", "--test_batch_size", "359", "--seed", "1",
            "--epochs", epochs, *extra]


# ---------------------------------------------------------------- the solver, as Caffe


DUMMY_NET = """name: "dummy"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 }
                     data_filler { type: "gaussian" } data_filler { type: "constant" } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""
SOLVER = ('net: "train.prototxt" max_iter: 3 display: 1 snapshot_prefix: "snapshots/dummy" '
          'solver_mode: CPU ')

# (solver settings, what real Caffe does with them, our message)
SOLVERS = [
    ('base_lr: 0.1 lr_policy: "step" gamma: 0.1', "SIGFPE",
     'lr_policy "step" needs a positive stepsize'),
    ("base_lr: 0.1", "Unknown learning rate policy: ",
     "the solver sets no lr_policy; Caffe needs one of fixed, step"),
    ('base_lr: 0.1 lr_policy: "fixed" average_loss: 0',
     "Check failed: param_.average_loss() >= 1", "average_loss must be at least 1"),
    ('base_lr: 0.1 lr_policy: "fixed" type: "RMSProp" momentum: 0.9',
     "Momentum cannot be used with RMSProp", "momentum cannot be used with RMSProp"),
    ('base_lr: 0.1 lr_policy: "fixed" weight_decay: 0.001 regularization_type: "L3"',
     "Unknown regularization type: L3", "unknown regularization_type 'L3'; Caffe's: L1, L2"),
    ('base_lr: 0.1 lr_policy: "fixed" test_iter: 1',
     "Check failed: param_.test_interval() > 0", "test_interval must be positive"),
    ('base_lr: 0.1 lr_policy: "fixed" type: "Adamax"', "Unknown solver type: Adamax",
     "unknown solver type 'Adamax'"),
    ('base_lr: 0.1 lr_policy: "fixed" solver_type: ADAM type: "Adam"',
     "cannot be both specified", "both type and the deprecated solver_type"),
    ('base_lr: 0.1 lr_policy: "fixed" eval_type: "foo" test_iter: 1 test_interval: 1',
     "Unknown evaluation type: foo", "unknown eval_type 'foo'"),
    ('base_lr: 0.1 lr_policy: "fixed" iter_size: 0', "loss = -nan",
     "iter_size must be at least 1"),
    ('base_lr: nan lr_policy: "fixed"', "lr = nan", "base_lr must be a finite number"),
    ('base_lr: 0.1 lr_policy: "multistep" gamma: 0.1', "lr = 0.1 (at every iteration)",
     'lr_policy "multistep" needs stepvalue'),
]


def _caffe_on(folder: Path) -> tuple[int, str]:
    env = {**os.environ, "GLOG_logtostderr": "1", "GLOG_minloglevel": "0"}
    (folder / "snapshots").mkdir(exist_ok=True)
    done = subprocess.run([str(CAFFE_TOOL), "train", "-solver", "solver.prototxt"], cwd=folder,
                          capture_output=True, text=True, env=env)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("settings, caffe_does, ours", SOLVERS,
                         ids=[s[0] for s in SOLVERS])
def test_a_solver_caffe_fails_on_is_refused_before_it_starts(settings, caffe_does, ours,
                                                             tmp_path):
    for name in ("caffe", "ours"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.prototxt").write_text(DUMMY_NET)
        (tmp_path / name / "solver.prototxt").write_text(SOLVER + settings + "\n")
    status, log = _caffe_on(tmp_path / "caffe")
    if caffe_does == "SIGFPE":
        assert status == -signal.SIGFPE, log[-2000:]
    elif caffe_does.startswith("lr = 0.1 "):  # runs, and never changes the rate
        rates = re.findall(r"Iteration \d+, lr = (\S+)", log)
        assert status == 0 and len(rates) == 3 and set(rates) == {"0.1"}, log[-2000:]
    elif caffe_does.startswith(("loss = ", "lr = ")):  # runs, on numbers that are not
        assert caffe_does in log, log[-2000:]
    else:
        assert status == -signal.SIGABRT and caffe_does in log, log[-2000:]
    before = tree(tmp_path / "ours")
    line = one_line(pnb("train", "ours", cwd=tmp_path))
    assert ours in line, line
    assert tree(tmp_path / "ours") == before


# ---------------------------------------------------------------- labels


def test_labels_beyond_the_nets_classes_are_refused(digits, caffe, tmp_path):
    """10-class digits into a 3-class net: the first record whose label is 3 or more, as
    Caffe's Datum reads it, is named."""
    import lmdb

    env = lmdb.open(str(digits / "train_lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        key, label = next((k.decode(), d.label) for k, v in txn.cursor()
                          if (d := caffe.proto.caffe_pb2.Datum.FromString(v)).label >= 3)
    env.close()
    args = train_args(digits, "-o", "run")
    args[args.index("--num_classes") + 1] = "3"
    line = one_line(pnb(*args, cwd=tmp_path))
    assert line == (
        f"pynetbuilder: error: label {label} of record {key} in the train data source "
        f"{digits / 'train_lmdb'} is out of range for layer 'loss' (SoftmaxWithLoss), whose "
        "input 'fc' has 3 classes (labels 0..2); Caffe would read outside its arrays (give "
        "the net as many classes as the data has)")
    assert list(tmp_path.iterdir()) == []


def test_the_label_reader_reads_what_caffe_reads(caffe, tmp_path, monkeypatch):
    """datasource.labels against Caffe's own Data and HDF5Data layers (this build has no
    ImageData): the same labels, negative and large ones included."""
    from conftest import write_lmdb

    from pynetbuilder import datasource

    labels = np.array([3, -2, 0, 2**24, 7, -(2**31)])  # exact in float32, as Caffe holds them
    images = np.random.default_rng(0).integers(0, 256, (6, 1, 2, 2), dtype=np.uint8)
    write_lmdb(tmp_path / "db", images, labels)
    dataio.write_hdf5(tmp_path / "part.h5", images, np.abs(labels) % 100)
    layers = {
        "LMDB": ('type: "Data" data_param { source: "db" batch_size: 6 backend: LMDB }',
                 datasource.labels(tmp_path / "db", "LMDB")),
        "HDF5": ('type: "HDF5Data" hdf5_data_param { source: "part.txt" batch_size: 6 }',
                 datasource.labels(tmp_path / "part.txt", "HDF5",
                                   datasource.Options(tops=("data", "label")))),
    }
    monkeypatch.chdir(tmp_path)
    for kind, (layer, ours) in layers.items():
        (tmp_path / "net.prototxt").write_text(
            f'layer {{ name: "d" {layer} top: "data" top: "label" }}\n')
        net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
        net.forward()
        theirs = net.blobs["label"].data.astype(np.int64).tolist()
        assert [label for _, label in ours] == theirs, kind
        del net


# ---------------------------------------------------------------- NaN


def test_a_loss_that_becomes_nan_stops_the_run_keeping_the_last_good_snapshot(digits, caffe,
                                                                             tmp_path):
    """lr 1e6: the loss Caffe displays becomes NaN within a few iterations.  The run stops,
    the log stays, the snapshots holding NaN are removed, the last good one stays (its
    weights load in Caffe and are finite)."""
    done = pnb(*train_args(digits, "--base_lr", "1e6", "--display", "1",
                           "--snapshot_every", str(1 / 44), "-o", "run"), cwd=tmp_path)
    line = one_line(done)
    log = (tmp_path / "run" / "train.log").read_text()
    losses = re.findall(r"Iteration (\d+), loss = (\S+)", log)
    first_bad = next(int(i) for i, v in losses if not np.isfinite(float(v)))
    assert line.startswith(f"pynetbuilder: error: the loss became nan at iteration "
                           f"{first_bad}, so training was stopped"), line
    assert line.endswith("; the full log is run/train.log")
    found = LAST_GOOD.search(line)
    assert found, line
    kept, good = Path(found[1]), int(found[2])
    assert good <= first_bad and (tmp_path / kept).is_file()
    assert "holds weights that are not finite numbers" in line
    snapshots = sorted((tmp_path / "run" / "snapshots").glob("*.caffemodel"))
    assert snapshots and all(int(p.stem.rsplit("_", 1)[1]) <= good for p in snapshots)
    for weights in snapshots:
        net = caffe.Net(str(tmp_path / "run" / "deploy.prototxt"), str(weights), caffe.TEST)
        assert all(np.isfinite(b.data).all() for blobs in net.params.values() for b in blobs)
    assert not (tmp_path / "run" / "log.csv").exists()


# ---------------------------------------------------------------- full disk, size limits


WRAPPER = """#!{python}
import os, resource, signal, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
signal.signal(signal.SIGXFSZ, signal.{handler})
os.execv({caffe!r}, [{caffe!r}] + sys.argv[1:])
"""


@pytest.mark.parametrize("handler", ["SIG_DFL", "SIG_IGN"])
def test_a_file_size_limit_on_caffe_leaves_no_cut_short_snapshot(handler, digits, tmp_path):
    """Caffe's snapshot outgrows RLIMIT_FSIZE: it is killed by SIGXFSZ (default action) or
    its write fails and it aborts on its own check (SIGXFSZ ignored).  The message names
    Caffe's reason (its last fatal line, from its log), the iteration and the log; the
    cut-short weights file is gone."""
    wrapper = tmp_path / "caffe_limited"
    wrapper.write_text(WRAPPER.format(python=sys.executable, limit=20_000, handler=handler,
                                      caffe=str(CAFFE_TOOL)))
    wrapper.chmod(0o755)
    done = pnb(*train_args(digits, "-o", "run"), cwd=tmp_path,
               env={"PYNETBUILDER_CAFFE": str(wrapper)})
    line = one_line(done)
    log = (tmp_path / "run" / "train.log").read_text()
    if handler == "SIG_DFL":
        reason = ("killed by SIGXFSZ (file size limit exceeded)) at iteration 44: its last "
                  "line: Snapshotting to binary proto file snapshots/resnet8_basic_iter_44"
                  ".caffemodel")
    else:
        fatal = re.findall(r"^F\d+ [\d:.]+ +\d+ \S+\] (.*)$", log, re.M)[-1].strip()
        assert fatal == "Check failed: proto.SerializeToOstream(&output)"
        reason = f"killed by SIGABRT (aborted)) at iteration 44: {fatal}"
    assert line == (
        f"pynetbuilder: error: caffe train failed ({reason}; removed the bad snapshot of "
        "iteration 44 (resnet8_basic_iter_44.caffemodel is cut short (it does not parse as "
        "Caffe weights)); no snapshot was kept; the full log is run/train.log")
    assert list((tmp_path / "run" / "snapshots").iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 160 KiB tmpfs (tests run as root in CI); skipped where mounting is refused."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_keeps_the_last_good_snapshot(small_disk, digits, tmp_path):
    """Periodic snapshots fill the disk: the run fails naming why (Caffe's fatal line, or
    the log that could not be written), the snapshot cut short is removed, and the one
    named as the last good snapshot resumes in real Caffe (copied to a disk with room)."""
    done = pnb(*train_args(digits, "--snapshot_every", "0.25", "-o", str(small_disk / "run"),
                           epochs="3"), cwd=tmp_path)
    line = one_line(done)
    assert ("Check failed: proto.SerializeToOstream(&output)" in line
            or "(No space left on device), so Caffe was stopped" in line), line
    assert re.search(r"at iteration \d+", line) and "removed the bad snapshot" in line
    found = LAST_GOOD.search(line)
    assert found, line
    state, iteration = Path(found[1]), int(found[2])
    copy = tmp_path / "copy"
    shutil.copytree(small_disk / "run", copy)
    solver = (copy / "solver.prototxt").read_text()
    (copy / "solver.prototxt").write_text(re.sub(r"max_iter: \d+", f"max_iter: {iteration + 1}",
                                                 solver))
    snapshot = copy / state.relative_to(small_disk / "run")
    resumed = subprocess.run([str(CAFFE_TOOL), "train", "-solver", "solver.prototxt",
                              "-snapshot", str(snapshot)], cwd=copy, capture_output=True,
                             text=True, env={**os.environ, "GLOG_logtostderr": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # one more iteration from the snapshot's: Caffe's final snapshot is at iteration + 1
    assert (f"Snapshotting to binary proto file snapshots/resnet8_basic_iter_{iteration + 1}."
            "caffemodel") in resumed.stderr
    left = sorted(p.name for p in (small_disk / "run" / "snapshots").iterdir())
    assert all(int(re.search(r"_iter_(\d+)", n)[1]) <= iteration for n in left), left


def _file_size_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_log_that_cannot_be_written_stops_caffe_which_saves_its_state(digits, caffe,
                                                                        tmp_path):
    """A 30,000-byte file size limit on the whole command: the log (a line per
    iteration) outgrows it first, so Caffe is stopped with SIGINT, and the snapshot it
    then writes (26 KB) is whole: named, at the iteration the message gives."""
    done = subprocess.run(
        [sys.executable, "-m", "pynetbuilder", *train_args(digits, "--display", "1", "-o", "run",
                                                           epochs="10")],
        cwd=tmp_path, capture_output=True, text=True, preexec_fn=_file_size_limit(30_000))
    line = one_line(done)
    found = re.fullmatch(r"pynetbuilder: error: cannot write the log run/train.log \(File too "
                         r"large\), so Caffe was stopped at iteration (\d+); (.*); the log "
                         r"run/train.log is incomplete", line)
    assert found, line
    iteration = int(found[1])
    assert LAST_GOOD.fullmatch(found[2])[2] == str(iteration), line
    assert (tmp_path / "run" / "train.log").stat().st_size == 30_000
    prefix = tmp_path / "run" / "snapshots" / f"resnet8_basic_iter_{iteration}"
    state = caffe.proto.caffe_pb2.SolverState.FromString(
        prefix.with_suffix(".solverstate").read_bytes())
    assert state.iter == iteration
    caffe.Net(str(tmp_path / "run" / "deploy.prototxt"), str(prefix.with_suffix(".caffemodel")),
              caffe.TEST)


# ---------------------------------------------------------------- glog variables


GLOG = [{"GLOG_minloglevel": "1"}, {"GLOG_minloglevel": "2"},
        {"GLOG_minloglevel": "2", "GLOG_logtostderr": "0"},
        {"GLOG_minloglevel": "1", "GLOG_logtostderr": "1", "GLOG_log_prefix": "0"}]


@pytest.mark.parametrize("variables", GLOG, ids=[" ".join(f"{k}={v}" for k, v in g.items())
                                                 for g in GLOG])
def test_the_users_glog_variables_do_not_hide_caffes_output(variables, digits, tmp_path):
    done = pnb(*train_args(digits, "-o", "run"), cwd=tmp_path, env=variables)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    accuracy = re.findall(r"Test net output #\d+: accuracy_top1 = (\S+)", log)[-1]
    assert re.search(r"^iteration +0/44: loss ", done.stdout, re.M)
    assert f"final test: accuracy_top1 = {float(accuracy):g}" in done.stdout
    done = pnb("time", "resnet", "--depth", "8", "--initial_channels", "4", "--batch_size", "2",
               "--iterations", "2", cwd=tmp_path, env=variables)
    assert done.returncode == 0, done.stderr
    assert "average per iteration (2 iterations, TEST phase): forward " in done.stdout
