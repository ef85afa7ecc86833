"""Shared test helpers.  Real Caffe is the oracle: it must import (no skipping)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
CAFFE_TOOL = ROOT / ".venv" / "bin" / "caffe"
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def caffe():
    import caffe as caffe_module  # real pycaffe, linked into the venv by `make caffe`

    caffe_module.set_mode_cpu()
    return caffe_module


def write_lmdb(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write uint8 CHW images as Caffe ``Datum`` records (what convert_imageset writes)."""
    import lmdb

    from pynetbuilder.schema import caffe_pb2

    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i, (img, label) in enumerate(zip(images, labels)):
            datum = caffe_pb2.Datum(
                channels=img.shape[0], height=img.shape[1], width=img.shape[2],
                data=img.astype(np.uint8).tobytes(), label=int(label),
            )
            txn.put(f"{i:08d}".encode(), datum.SerializeToString())
    env.close()
    return path


def random_lmdbs(folder: Path, names: tuple[str, str], shape: tuple[int, ...],
                 seed: int) -> tuple[Path, Path]:
    """Two databases of random uint8 images of ``shape`` (N x C x H x W), labels 0..N-1."""
    rng = np.random.default_rng(seed)
    dbs = [write_lmdb(folder / name, rng.integers(0, 256, size=shape, dtype=np.uint8),
                      np.arange(shape[0])) for name in names]
    return dbs[0], dbs[1]


def run_command(command: str, *args: str, capsys) -> tuple[int, str, str]:
    """``pynetbuilder COMMAND ARGS`` in this process: (exit status, stdout, stderr)."""
    from pynetbuilder.commands import main

    try:
        code = main([command, *args])
    except SystemExit as exc:  # argparse's own errors exit as on the command line
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def image_lmdb(tmp_path_factory) -> tuple[Path, Path]:
    """Train and val LMDBs of 3x256x256 random images with labels 0..3.

    Two databases, because LMDB must not be opened twice at once in one process
    (it deadlocks): a test builds at most one Caffe net reading each at a time.
    """
    return random_lmdbs(tmp_path_factory.mktemp("lmdb"), ("train", "val"), (4, 3, 256, 256), 0)


def caffe_net(caffe, text: str, phase: str, tmp_path: Path, name: str = "net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return caffe.Net(str(path), caffe.TRAIN if phase == "train" else caffe.TEST)


def assert_report_matches_caffe(report, net) -> None:
    """Every blob shape and every parameter blob shape equals what Caffe allocated."""
    ours_blobs = report.blob_shapes
    for name, blob in net.blobs.items():
        if "_split_" in name:  # Caffe's own Split layers for blobs read twice
            continue
        assert name in ours_blobs, f"Caffe has blob {name} we did not infer"
        assert tuple(blob.data.shape) == ours_blobs[name], name
    caffe_names = {n for n in net.blobs if "_split_" not in n}
    assert caffe_names == set(ours_blobs), set(ours_blobs) ^ caffe_names
    rows = {r.name: r for r in report.rows}
    for layer_name, blobs in net.params.items():
        ours = [b.shape for b in rows[layer_name].blobs]
        assert [tuple(b.data.shape) for b in blobs] == ours, layer_name
    # layers without parameter blobs in Caffe have none in our report either
    for row in report.rows:
        if row.blobs:
            assert row.name in net.params, row.name


@pytest.fixture(scope="session")
def cifar_lmdb(tmp_path_factory) -> tuple[Path, Path]:
    """Train and test LMDBs of 3x32x32 random images with labels 0..9 (CIFAR-sized)."""
    return random_lmdbs(tmp_path_factory.mktemp("cifar_lmdb"), ("train", "test"),
                        (10, 3, 32, 32), 1)


def small_data(dbs: tuple[Path, Path], dataset: str):
    """The data lego of a family's test: batch 2 from the fixture databases."""
    from pynetbuilder.legos import ClassificationData
    from pynetbuilder.models.datasets import INPUT_SIZE

    return ClassificationData(str(dbs[0]), str(dbs[1]), batch_size=2, test_batch_size=2,
                              crop_size=INPUT_SIZE[dataset])


def check_in_caffe(caffe, net, tmp_path: Path, run: bool = True) -> None:
    """The zoo's proof 1: real Caffe builds the train, test and deploy nets; every blob
    shape and parameter blob size equals our inference; with ``run``, the train net
    runs forward and backward (on the random images of the fixture databases) with a
    finite loss and gradients that reach the first layer."""
    from pynetbuilder.graph import prototxt_files

    files = prototxt_files(net)
    deploy = caffe_net(caffe, files["deploy.prototxt"], "test", tmp_path, "deploy.prototxt")
    assert_report_matches_caffe(net.report("deploy"), deploy)
    del deploy
    test = caffe_net(caffe, files["test.prototxt"], "test", tmp_path, "test.prototxt")
    assert_report_matches_caffe(net.report("test"), test)
    if run:
        test.forward()
    del test
    train = caffe_net(caffe, files["train.prototxt"], "train", tmp_path, "train.prototxt")
    assert_report_matches_caffe(net.report("train"), train)
    if not run:
        return
    out = train.forward()
    assert np.isfinite(float(out["loss"])), out
    train.backward()
    first = next(iter(train.params.values()))[0].diff
    assert np.abs(first).sum() > 0, "no gradient reached the first layer"
    del train


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


sys.path.insert(0, str(ROOT))


def write_digits_lmdb(folder: Path, size: int) -> Path:
    """scikit-learn's digits at ``size`` px, split 80/20 (1,438 / 359 images, seed 0), as
    ``train_lmdb`` and ``test_lmdb`` in ``folder``."""
    from pynetbuilder import dataio

    images, labels = dataio.digits(size)
    xtr, ytr, xte, yte = dataio.split(images, labels, 0.2, seed=0)
    dataio.write_lmdb(folder / "train_lmdb", xtr, ytr)
    dataio.write_lmdb(folder / "test_lmdb", xte, yte)
    return folder


# A command started in the background by a non-interactive shell inherits SIGINT as
# ignored, and Python then leaves it ignored: the interrupt tests' children would never
# see their SIGINT.  Give this process a handler again, so the children start with
# SIGINT at its default (exec resets handled signals, not ignored ones).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def fill_caffe_weights(net, seed: int, std: float | None = 0.3,
                       scale_near_one: bool = False) -> None:
    """Every parameter blob of a pycaffe net at random, N(0, std) (``std`` None: weights
    N(0, 1/sqrt(fan-in)), other blobs N(0, 0.2)); BatchNorm's statistics sane (mean
    N(0, 0.1), variance in [0.5, 1.5], scale factor 1), and with ``scale_near_one``
    Scale's factors in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    types = dict(zip(net._layer_names, (layer.type for layer in net.layers)))
    for name, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            shape = blob.data.shape
            if std is None:
                spread = 1 / np.sqrt(np.prod(shape[1:])) if i == 0 and len(shape) >= 2 else 0.2
            else:
                spread = std
            data = rng.normal(0, spread, shape)
            if types[name] == "BatchNorm":
                data = [rng.normal(0, 0.1, shape), rng.uniform(0.5, 1.5, shape),
                        np.ones(shape)][i]
            if scale_near_one and types[name] == "Scale" and i == 0:
                data = rng.uniform(0.5, 1.5, shape)
            blob.data[...] = data
