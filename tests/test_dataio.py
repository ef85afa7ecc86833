"""Data in Caffe's formats: what the library writes, real Caffe reads back.

The oracle is Caffe itself (a ``Data`` layer on our LMDB, ``HDF5Data`` on our HDF5
list file, a Data layer subtracting our ``mean.binaryproto``), the lmdb library's
own record count, and numbers the tests compute from what they put in.  A net is
built for one database at a time and deleted before the next opens it (LMDB
deadlocks when one process opens a database twice).
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import lmdb
import numpy as np
import pytest
from conftest import caffe_net
from conftest import write_lmdb as independent_write_lmdb
from PIL import Image

from pynetbuilder import commands, dataio
from pynetbuilder.dataio import DataError

DIGITS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # sklearn's class sizes


def data_layer(source: Path, batch: int, transform: str = "") -> str:
    return (f'layer {{ name: "data" type: "Data" top: "data" top: "label" {transform} '
            f'data_param {{ source: "{source}" backend: LMDB batch_size: {batch} }} }}')


def read_with_caffe(caffe, tmp_path: Path, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass of a net holding only ``layer``: (data, label) copies."""
    net = caffe_net(caffe, f'name: "read"\n{layer}\n', "test", tmp_path, "read.prototxt")
    net.forward()
    data, label = net.blobs["data"].data.copy(), net.blobs["label"].data.copy()
    del net  # closes the database before anyone opens it again
    return data, label


def entries(path: Path) -> int:
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- LMDB: Caffe's Data layer reads what we wrote ---------------------------------


def test_caffe_data_layer_reads_our_lmdb_back(caffe, tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(7, 3, 5, 6), dtype=np.uint8)  # H != W on purpose
    labels = rng.integers(0, 10, size=7)
    db = dataio.write_lmdb(tmp_path / "db", images, labels)
    assert db == tmp_path / "db" and entries(db) == 7
    # batch N + 1: Caffe starts again at the first record, so there are exactly N
    data, label = read_with_caffe(caffe, tmp_path, data_layer(db, 8))
    assert data.shape == (8, 3, 5, 6)
    np.testing.assert_array_equal(data[:7], images.astype(np.float32))
    np.testing.assert_array_equal(label[:7], labels)
    np.testing.assert_array_equal(data[7], images[0])
    assert label[7] == labels[0]
    scaled, _ = read_with_caffe(caffe, tmp_path, data_layer(
        db, 7, "transform_param { scale: 0.00390625 }"))
    np.testing.assert_allclose(scaled, images / 256.0, rtol=1e-6)


def test_digits_written_split_and_read_by_caffe(caffe, tmp_path):
    images, labels = dataio.digits(16)
    train_x, train_y, test_x, test_y = dataio.split(images, labels, 0.2, seed=0)
    train = dataio.write_lmdb(tmp_path / "train_lmdb", train_x, train_y, num_classes=10)
    test = dataio.write_lmdb(tmp_path / "test_lmdb", test_x, test_y, num_classes=10)
    assert (entries(train), entries(test)) == (1438, 359)
    data, label = read_with_caffe(caffe, tmp_path, data_layer(test, 359))
    assert data.shape == (359, 1, 16, 16)
    np.testing.assert_array_equal(data, test_x)
    np.testing.assert_array_equal(label, test_y)


def test_float_images_go_to_float_data_and_caffe_reads_them(caffe, tmp_path):
    images = np.random.default_rng(4).normal(size=(3, 2, 3, 4)).astype(np.float32)
    db = dataio.write_lmdb(tmp_path / "f", images, [2, 0, 1])
    data, label = read_with_caffe(caffe, tmp_path, data_layer(db, 3))
    np.testing.assert_array_equal(data, images)
    np.testing.assert_array_equal(label, [2, 0, 1])


def test_read_lmdb_reads_an_independently_written_database(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, (4, 3, 2, 3), dtype=np.uint8)
    independent_write_lmdb(tmp_path / "db", images, np.array([3, 1, 0, 2]))
    got, labels = dataio.read_lmdb(tmp_path / "db")
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(labels, [3, 1, 0, 2])


# --- HDF5 and the mean ---------------------------------------------------------------


def test_caffe_hdf5data_reads_our_file_through_the_list(caffe, tmp_path):
    import h5py

    images, labels = dataio.digits(8)
    images, labels = images[:50], labels[:50]
    source = dataio.write_hdf5(tmp_path / "part.h5", images, labels, scale=1 / 255)
    assert source == tmp_path / "part.txt"
    assert source.read_text() == f"{tmp_path / 'part.h5'}\n"  # absolute: Caffe's cwd differs
    with h5py.File(tmp_path / "part.h5") as h5:
        assert h5["data"].dtype == np.float32 and h5["data"].shape == (50, 1, 8, 8)
    layer = ('layer { name: "data" type: "HDF5Data" top: "data" top: "label" '
             f'hdf5_data_param {{ source: "{source}" batch_size: 50 }} }}')
    data, label = read_with_caffe(caffe, tmp_path, layer)
    np.testing.assert_allclose(data, images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(label, labels)


def test_caffe_subtracts_our_mean_binaryproto(caffe, tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(6, 3, 4, 5), dtype=np.uint8)
    db = dataio.write_lmdb(tmp_path / "db", images, np.arange(6))
    mean_file = dataio.write_mean_binaryproto(tmp_path / "mean.binaryproto", images)
    expected_mean = images.astype(np.float64).sum(axis=0) / 6
    data, _ = read_with_caffe(caffe, tmp_path, data_layer(
        db, 6, f'transform_param {{ mean_file: "{mean_file}" }}'))
    np.testing.assert_allclose(data, images - expected_mean, atol=1e-4)
    blob = caffe.proto.caffe_pb2.BlobProto.FromString(mean_file.read_bytes())
    assert caffe.io.blobproto_to_array(blob).shape == (1, 3, 4, 5)
    np.testing.assert_array_equal(dataio.read_mean_binaryproto(mean_file),
                                  caffe.io.blobproto_to_array(blob)[0])
    per_channel = [images[:, c].astype(np.float64).sum() / (6 * 4 * 5) for c in range(3)]
    np.testing.assert_allclose(dataio.mean_values(images), per_channel, rtol=1e-12)


# --- image folders -------------------------------------------------------------------


def save(path: Path, color, size=(6, 4), mode="RGB", fmt=None) -> Path:
    """A constant image of ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, fmt)
    return path


def test_image_folder_classes_colour_order_and_gray(tmp_path):
    root = tmp_path / "set"
    save(root / "b_red" / "1.png", (255, 0, 0))
    save(root / "b_red" / "deeper" / "2.PNG", (250, 0, 0))
    save(root / "a_gray" / "g.png", 77, mode="L")
    save(root / "c_blue" / "x.jpg", (0, 0, 255), fmt="JPEG")
    (root / "b_red" / "notes.txt").write_text("not an image")
    (root / "b_red" / ".hidden.png").write_bytes(b"junk")
    images, labels, names = dataio.read_image_folder(root)
    assert names == ["a_gray", "b_red", "c_blue"]
    np.testing.assert_array_equal(labels, [0, 1, 1, 2])
    assert images.shape == (4, 3, 4, 6) and images.dtype == np.uint8  # N C H W
    assert (images[0] == 77).all()  # gray replicated into 3 channels
    np.testing.assert_array_equal(images[1][:, 0, 0], [0, 0, 255])  # BGR, as Caffe stores
    np.testing.assert_array_equal(images[2][:, 0, 0], [0, 0, 250])
    assert np.abs(images[3][:, 0, 0].astype(int) - [255, 0, 0]).max() <= 3  # JPEG, lossy
    gray, _, _ = dataio.read_image_folder(root, channels=1)
    assert gray.shape == (4, 1, 4, 6)
    assert gray[1, 0, 0, 0] == 76  # ITU-R 601 luma of pure red: 0.299 * 255
    assert gray[0, 0, 0, 0] == 77


def test_mixed_sizes_are_refused_or_resized(tmp_path):
    root = tmp_path / "set"
    save(root / "a" / "big.png", (10, 20, 30), size=(8, 6))
    save(root / "b" / "small.png", (40, 50, 60), size=(4, 3))
    with pytest.raises(DataError) as err:
        dataio.read_image_folder(root)
    message = str(err.value)
    assert "big.png is 6x8" in message and "small.png is 3x4" in message
    assert "--size" in message
    images, labels, _ = dataio.read_image_folder(root, size=(5, 7))
    assert images.shape == (2, 3, 5, 7)
    assert (images[0].reshape(3, -1).T == [30, 20, 10]).all()  # constant stays constant
    assert (images[1].reshape(3, -1).T == [60, 50, 40]).all()


@pytest.mark.parametrize("layout,expected", [
    ({}, "has no class sub-folders"),
    ({"a/1.png": "ok", "b/readme.txt": "text"}, "class folder"),
    ({"a/1.png": "ok", "b/broken.png": "junk"}, "cannot read image"),
    ({"a/1.png": "ok", "loose.png": "ok"}, "outside the class sub-folders"),
], ids=["empty", "class-without-images", "unreadable", "loose-image"])
def test_bad_image_folders_are_named(tmp_path, layout, expected):
    root = tmp_path / "set"
    root.mkdir()
    for name, kind in layout.items():
        if kind == "ok":
            save(root / name, (1, 2, 3))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("not an image")
    with pytest.raises(DataError) as err:
        dataio.read_image_folder(root)
    assert expected in str(err.value)
    if "broken.png" in str(layout):
        assert "broken.png" in str(err.value)
    if "readme" in str(layout):
        assert str(root / "b") in str(err.value)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        dataio.read_image_folder(tmp_path / "nowhere")


# --- labels and arrays ---------------------------------------------------------------


IMAGES = np.zeros((3, 1, 2, 2), np.uint8)


@pytest.mark.parametrize("images,labels,kwargs,expected", [
    (IMAGES, [0, -1, 2], {}, "label -1 of image 1 is negative"),
    (IMAGES, [0.0, 1.0, 2.0], {}, "must be integers"),
    (IMAGES, [True, False, True], {}, "must be integers"),
    (IMAGES, [0, 1, 10], {"num_classes": 10}, "label 10 of image 2 is out of range: "
                                              "labels must be in 0..9"),
    (IMAGES, [0, 1, 2**31], {}, "out of range"),
    (IMAGES, [0, 1], {}, "3 images but 2 labels"),
    (IMAGES[:, 0], [0, 1, 2], {}, "N x C x H x W"),
    (IMAGES[:0], [], {}, "empty"),
    (np.full((3, 1, 2, 2), 256), [0, 1, 2], {}, "0..255"),
    (np.full((3, 1, 2, 2), np.nan, np.float32), [0, 1, 2], {}, "NaN"),
], ids=["negative", "float", "bool", "num_classes", "int32", "length", "3d", "empty",
        "int-range", "nan"])
def test_bad_labels_and_images_are_refused_before_writing(tmp_path, images, labels, kwargs,
                                                          expected):
    with pytest.raises(DataError) as err:
        dataio.write_lmdb(tmp_path / "db", images, labels, **kwargs)
    assert expected in str(err.value)
    assert leftovers(tmp_path) == []
    if len(images) and images.ndim == 4 and images.dtype == np.uint8:
        with pytest.raises(DataError, match=expected.split(":")[0]):
            dataio.write_hdf5(tmp_path / "x.h5", images, labels, **kwargs)
        assert leftovers(tmp_path) == []


# --- atomicity -------------------------------------------------------------------------


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    from pynetbuilder.dataio import lmdb as lmdb_writer

    real = lmdb_writer._datum
    seen = []

    def failing(image, label):
        seen.append(label)
        if len(seen) == 1500:  # after the first 1000-record transaction was committed
            raise RuntimeError("disk on fire")
        return real(image, label)

    monkeypatch.setattr(lmdb_writer, "_datum", failing)
    images = np.zeros((2000, 1, 2, 2), np.uint8)
    with pytest.raises(RuntimeError, match="disk on fire"):
        dataio.write_lmdb(tmp_path / "out" / "db", images, np.zeros(2000, int))
    assert len(seen) == 1500
    assert leftovers(tmp_path) == []  # no target, no temporary, no folder it made


def test_a_full_database_is_a_clear_error_and_leaves_nothing(tmp_path):
    images = np.zeros((300, 3, 32, 32), np.uint8)
    with pytest.raises(DataError, match="map_size of 262144 bytes is too small for 300"):
        dataio.write_lmdb(tmp_path / "db", images, np.zeros(300, int), map_size=1 << 18)
    assert leftovers(tmp_path) == []


def test_existing_target_refused_replaced_only_by_a_complete_one(tmp_path, monkeypatch):
    from pynetbuilder.dataio import lmdb as lmdb_writer

    db = dataio.write_lmdb(tmp_path / "db", np.zeros((5, 1, 2, 2), np.uint8), np.arange(5))
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        dataio.write_lmdb(db, np.zeros((3, 1, 2, 2), np.uint8), np.arange(3))
    monkeypatch.setattr(lmdb_writer, "_datum", lambda image, label: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        dataio.write_lmdb(db, np.zeros((3, 1, 2, 2), np.uint8), np.arange(3), overwrite=True)
    assert entries(db) == 5 and leftovers(tmp_path) == ["db"]
    monkeypatch.undo()
    dataio.write_lmdb(db, np.ones((3, 1, 2, 2), np.uint8), np.arange(3), overwrite=True)
    assert entries(db) == 3 and leftovers(tmp_path) == ["db"]
    with pytest.raises(DataError, match="already exists"):
        dataio.write_mean_binaryproto(db, np.ones((3, 1, 2, 2), np.uint8))


# --- split, digits, progress ------------------------------------------------------------


def test_split_is_stratified_shuffled_and_seeded():
    labels = np.repeat(np.arange(3), [10, 20, 31])
    images = np.arange(61, dtype=np.uint8).reshape(61, 1, 1, 1)  # pixel = original index
    train_x, train_y, test_x, test_y = dataio.split(images, labels, 0.25, seed=7)
    assert np.bincount(test_y).tolist() == [3, 5, 8]  # round(10/4), round(20/4), round(31/4)
    assert np.bincount(train_y).tolist() == [7, 15, 23]
    for x, y in ((train_x, train_y), (test_x, test_y)):
        np.testing.assert_array_equal(labels[x.ravel()], y)  # pairs kept together
    assert sorted(np.concatenate([train_x.ravel(), test_x.ravel()])) == list(range(61))
    assert (np.diff(train_x.ravel().astype(int)) < 0).any()  # shuffled, not in input order
    again = dataio.split(images, labels, 0.25, seed=7)
    np.testing.assert_array_equal(again[0], train_x)
    other = dataio.split(images, labels, 0.25, seed=8)
    assert not np.array_equal(other[0], train_x)
    _, _, none_x, _ = dataio.split(images, labels, 0, seed=0)
    assert none_x.shape == (0, 1, 1, 1)
    for bad, message in ((1.0, r"\[0, 1\)"), (-0.1, r"\[0, 1\)"), (0.001, "test part empty")):
        with pytest.raises(DataError, match=message):
            dataio.split(images, labels, bad)


def test_digits_scaled_and_resized():
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    raw = load_digits()
    native, labels = dataio.digits(8)
    assert native.shape == (1797, 1, 8, 8) and native.dtype == np.uint8
    np.testing.assert_array_equal(native[:, 0], np.rint(raw.images * 255 / 16))
    np.testing.assert_array_equal(labels, raw.target)
    assert np.bincount(labels).tolist() == DIGITS_COUNTS
    nearest, _ = dataio.digits(16, resample="nearest")
    np.testing.assert_array_equal(nearest[:, 0], np.kron(native[:, 0], np.ones((2, 2))))
    bilinear, _ = dataio.digits(16)
    assert bilinear.shape == (1797, 1, 16, 16)
    exact = np.stack([resize(im, (16, 16), order=1, mode="edge", anti_aliasing=False,
                             preserve_range=True) for im in native[:100, 0].astype(float)])
    assert np.abs(bilinear[:100, 0] - exact).max() <= 0.5  # rounded half-pixel bilinear


def test_progress_bar_on_request_only(tmp_path, capsys):
    images = np.zeros((20, 1, 2, 2), np.uint8)
    dataio.write_lmdb(tmp_path / "quiet", images, np.zeros(20, int))
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    dataio.write_lmdb(tmp_path / "loud", images, np.zeros(20, int), progress=True)
    err = capsys.readouterr().err
    assert err.startswith("\rwriting loud [") and err.endswith("100%  20/20\n")


# --- the command -------------------------------------------------------------------------


def run_data(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = commands.main(["data", *map(str, args)])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_cli_digits_with_mean_file_read_by_caffe(caffe, tmp_path):
    out = tmp_path / "digits"
    code, stdout, err = run_data("--digits", "-o", out, "--size", "16", "--mean", "binaryproto")
    assert code == 0, err
    assert "train 1438, test 359 images; 10 classes; 1x16x16 (C x H x W, gray); lmdb" in stdout
    assert sorted(leftovers(out)) == ["labels.txt", "mean.binaryproto", "test_lmdb",
                                      "train_lmdb"]
    assert (out / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    assert (entries(out / "train_lmdb"), entries(out / "test_lmdb")) == (1438, 359)
    raw, label = read_with_caffe(caffe, tmp_path, data_layer(out / "train_lmdb", 1438))
    assert np.bincount(label.astype(int)).tolist() == [
        n - round(n * 0.2) for n in DIGITS_COUNTS]  # stratified
    printed = float(stdout.split("mean values of the train part (gray): ")[1].split()[0])
    assert printed == pytest.approx(raw.astype(np.float64).mean(), rel=1e-5)
    centred, _ = read_with_caffe(caffe, tmp_path, data_layer(
        out / "train_lmdb", 1438, f'transform_param {{ mean_file: "{out}/mean.binaryproto" }}'))
    np.testing.assert_allclose(centred, raw - raw.astype(np.float64).mean(axis=0), atol=1e-3)


def test_cli_image_folder_resized_to_lmdb_read_by_caffe(caffe, tmp_path):
    colours = {"cat": (200, 10, 20), "dog": (5, 150, 60), "owl": (90, 90, 250)}
    root = tmp_path / "photos"
    for k, (name, colour) in enumerate(colours.items()):
        for i in range(5):
            save(root / name / f"{i}.png", colour, size=(10 + k + i, 12 - i))
    out = tmp_path / "out"
    code, stdout, err = run_data(root, "-o", out, "--size", "8", "--test_fraction", "0.4")
    assert code == 0, err
    assert "train 9, test 6 images; 3 classes; 3x8x8 (C x H x W, BGR); lmdb" in stdout
    assert (out / "labels.txt").read_text() == "cat\ndog\nowl\n"
    data, label = read_with_caffe(caffe, tmp_path, data_layer(out / "test_lmdb", 6))
    assert np.bincount(label.astype(int)).tolist() == [2, 2, 2]
    for image, k in zip(data, label.astype(int)):
        rgb = list(colours.values())[k]
        assert (image.reshape(3, -1).T == rgb[::-1]).all()  # BGR


def test_cli_npz_to_hdf5_scaled_read_by_caffe(caffe, tmp_path):
    rng = np.random.default_rng(9)
    images = rng.integers(0, 256, size=(12, 2, 3, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(12)  # marks each image's index
    labels = np.arange(12) % 4
    np.savez(tmp_path / "arrays.npz", images=images, labels=labels)
    out = tmp_path / "h5"
    code, stdout, err = run_data(tmp_path / "arrays.npz", "-o", out, "--format", "hdf5",
                                 "--scale", "0.5", "--test_fraction", "0.25", "--mean", "none")
    assert code == 0, err
    assert "train 8, test 4 images; 4 classes; 2x3x3 (C x H x W, channels as given); hdf5" in \
        stdout and "mean values" not in stdout
    seen = []
    for part, n in (("train", 8), ("test", 4)):
        layer = ('layer { name: "data" type: "HDF5Data" top: "data" top: "label" '
                 f'hdf5_data_param {{ source: "{out / (part + ".txt")}" batch_size: {n} }} }}')
        data, label = read_with_caffe(caffe, tmp_path, layer)
        index = (data[:, 0, 0, 0] * 2).astype(int)
        np.testing.assert_array_equal(data, images[index] * 0.5)
        np.testing.assert_array_equal(label, labels[index])
        seen += index.tolist()
    assert sorted(seen) == list(range(12))


def test_cli_failure_in_the_second_database_removes_the_first(tmp_path, monkeypatch):
    from pynetbuilder.dataio import lmdb as lmdb_writer

    real, calls = lmdb_writer._datum, []

    def fail_in_test_part(image, label):
        calls.append(1)
        if len(calls) > 1438 + 1 + 10:  # +1: the size estimate of each database
            raise DataError("simulated failure")
        return real(image, label)

    monkeypatch.setattr(lmdb_writer, "_datum", fail_in_test_part)
    code, _, err = run_data("--digits", "-o", tmp_path / "out")
    assert code == 2 and err == "pynetbuilder: error: simulated failure\n"
    assert leftovers(tmp_path) == []


BAD_CLI = [
    (["{tmp}/nowhere"], "does not exist"),
    ([], "give an image folder or .npz file, or --digits"),
    (["{tmp}/empty", "--digits"], "one of them"),
    (["{tmp}/empty"], "has no class sub-folders"),
    (["--digits", "--format", "lmdb", "--scale", "2"], "--scale applies to --format hdf5"),
    (["--digits", "--test_fraction", "1"], "--test_fraction must be in [0, 1)"),
    (["--digits", "--size", "0"], "--size takes one or two positive integers"),
    (["--digits", "--size", "1", "2", "3"], "--size takes one or two positive integers"),
    (["--digits", "--gray"], "--gray applies to an image folder"),
    (["--digits", "--format", "tfrecord"], "invalid choice: 'tfrecord'"),
    (["{tmp}/bad.npz"], "has no array 'labels'"),
    (["{tmp}/negative.npz"], "label -3 of image 1 is negative"),
    (["{tmp}/float.npz"], "labels must be integers"),
    (["{tmp}/names.npz"], "label 2 of image 2 is out of range: labels must be in 0..1"),
]


@pytest.mark.parametrize("args,expected", BAD_CLI, ids=[" ".join(a) or "none" for a, _ in BAD_CLI])
def test_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, expected):
    (tmp_path / "empty").mkdir()
    images = np.zeros((3, 1, 2, 2), np.uint8)
    np.savez(tmp_path / "bad.npz", images=images)
    np.savez(tmp_path / "negative.npz", images=images, labels=[0, -3, 1])
    np.savez(tmp_path / "float.npz", images=images, labels=[0.0, 1.0, 1.0])
    np.savez(tmp_path / "names.npz", images=images, labels=[0, 1, 2], class_names=["a", "b"])
    out = tmp_path / "out"
    code, stdout, err = run_data(*(a.format(tmp=tmp_path) for a in args), "-o", out)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pynetbuilder: error: data: "
                                                   if "tfrecord" in args else
                                                   "pynetbuilder: error: "), err
    assert expected in err
    assert not out.exists()


def test_cli_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    assert run_data("--digits", "-o", out, "--size", "8")[0] == 0
    before = (out / "train_lmdb" / "data.mdb").stat().st_mtime_ns
    code, _, err = run_data("--digits", "-o", out, "--size", "8")
    assert code == 2 and "train_lmdb already exists" in err and "--overwrite" in err
    assert (out / "train_lmdb" / "data.mdb").stat().st_mtime_ns == before
    code, _, err = run_data("--digits", "-o", out, "--size", "8", "--overwrite", "--seed", "1")
    assert code == 0, err
    assert entries(out / "train_lmdb") == 1438
