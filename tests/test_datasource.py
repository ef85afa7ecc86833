"""The one reader of Caffe data sources (pynetbuilder.datasource): record counts and
first-record shapes of LMDB, LevelDB, HDF5 lists and image lists, raw and encoded.

Oracles: real Caffe's Data and HDF5Data layers (the shape of the tops they set up;
the count from where a batch larger than the source wraps around to the first
record again), and OpenCV for what Caffe would decode (the Caffe built here has no
OpenCV, so it cannot decode encoded records or run ImageData itself)."""

from __future__ import annotations

import io
import json
import subprocess

import cv2
import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from pynetbuilder import dataio, datasource, training
from pynetbuilder.datasource import Options
from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2


def datum(image: np.ndarray, label: int) -> bytes:
    c, h, w = image.shape
    return caffe_pb2.Datum(channels=c, height=h, width=w, data=image.tobytes(),
                           label=label).SerializeToString()


def write_leveldb(path, images) -> None:
    import plyvel

    db = plyvel.DB(str(path), create_if_missing=True, error_if_exists=True)
    with db.write_batch() as batch:
        for i, image in enumerate(images):
            batch.put(f"{i:08d}".encode(), datum(image, i))
    db.close()


def write_encoded_lmdb(path, blobs: list[bytes]) -> None:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, data in enumerate(blobs):
            txn.put(f"{i:08d}".encode(),
                    caffe_pb2.Datum(encoded=True, data=data, label=i).SerializeToString())
    env.close()


def caffe_data_layer(caffe, tmp_path, layer: str):
    """A real Caffe net holding one data layer (TRAIN phase: no mirroring asked)."""
    path = tmp_path / "data.prototxt"
    path.write_text(f'name: "d"\nlayer {{ name: "data" {layer} }}\n')
    return caffe.Net(str(path), caffe.TRAIN)


def caffe_count(values: np.ndarray) -> int:
    """Records in a source whose record i carries the value i, from one batch longer
    than the source: the batch wraps around to record 0 after the last record."""
    values = [int(v) for v in values]
    assert values[0] == 0 and 0 in values[1:], "the batch must wrap around"
    return values.index(0, 1)


# --- LMDB and LevelDB: raw Datum records ------------------------------------------------


def test_lmdb_count_and_shape_match_caffe(caffe, image_lmdb, tmp_path):
    train = image_lmdb[0]  # 4 records of 3x256x256, labels 0..3
    info = datasource.describe(train, "LMDB")
    net = caffe_data_layer(caffe, tmp_path, f'type: "Data" top: "data" top: "label" '
                           f'data_param {{ source: "{train}" batch_size: 5 backend: LMDB }}')
    net.forward()
    assert info.first.shape == net.blobs["data"].data.shape[1:] == (3, 256, 256)
    assert info.count == caffe_count(net.blobs["label"].data) == 4
    assert not info.first.encoded and info.first.label == 0
    del net


def test_leveldb_count_and_shape_match_caffe(caffe, tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 3, 6, 7), dtype=np.uint8)
    write_leveldb(tmp_path / "ldb", images)
    info = datasource.describe(tmp_path / "ldb", "LEVELDB")  # before Caffe locks it
    assert [key for key, _ in datasource.records(tmp_path / "ldb", "LEVELDB")] == [
        f"{i:08d}".encode() for i in range(5)]
    net = caffe_data_layer(caffe, tmp_path, f'type: "Data" top: "data" top: "label" '
                           f'data_param {{ source: "{tmp_path / "ldb"}" batch_size: 6 '
                           'backend: LEVELDB }')
    net.forward()
    assert info.first.shape == net.blobs["data"].data.shape[1:] == (3, 6, 7)
    assert info.count == caffe_count(net.blobs["label"].data) == 5
    np.testing.assert_array_equal(net.blobs["data"].data[0], images[0])  # the same record
    del net
    read, labels = dataio.read_lmdb(tmp_path / "ldb", backend="LEVELDB")
    np.testing.assert_array_equal(read, images)
    assert labels.tolist() == [0, 1, 2, 3, 4]


def test_analyze_reads_a_leveldb_source(caffe, tmp_path, monkeypatch):
    """A prototxt whose Data layer reads a LevelDB: the data shape is read from it."""
    from pynetbuilder.inspect import load

    monkeypatch.chdir(tmp_path)
    write_leveldb(tmp_path / "ldb", np.zeros((3, 1, 9, 11), np.uint8))
    text = ('layer { name: "data" type: "Data" top: "data" top: "label" '
            'data_param { source: "ldb" batch_size: 2 backend: LEVELDB } }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
            'inner_product_param { num_output: 4 } }\n')
    (tmp_path / "net.prototxt").write_text(text)
    report = load(str(tmp_path / "net.prototxt"), phase="train").report
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)
    assert report.blob_shapes["data"] == net.blobs["data"].data.shape == (2, 1, 9, 11)
    assert report.totals.params == sum(b.data.size for b in net.params["fc"])
    del net


def test_time_counts_a_leveldb_training_source(tmp_path):
    """`pynetbuilder time MODEL --phase train --backend LEVELDB`: the train net reads a
    LevelDB (counted by the reader, then run by caffe time)."""
    rng = np.random.default_rng(5)
    for name in ("train_ldb", "test_ldb"):
        write_leveldb(tmp_path / name, rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8))
    pnb = str(ROOT / ".venv" / "bin" / "pynetbuilder")
    done = subprocess.run(
        [pnb, "time", "resnet", "--depth", "8", "--initial_channels", "4", "--phase", "train",
         "--backend", "LEVELDB", "--train_source", "train_ldb", "--test_source", "test_ldb",
         "--crop_size", "16", "--batch_size", "2", "--iterations", "1", "--json", "t.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    layers = {row["name"]: row["type"] for row in json.loads(
        (tmp_path / "t.json").read_text())["layers"]}
    assert layers["data"] == "Data"
    missing = subprocess.run(
        [pnb, "time", "resnet", "--phase", "train", "--backend", "LEVELDB", "--train_source",
         "nowhere_ldb"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nowhere_ldb" in missing.stderr
    assert "does not exist" in missing.stderr and missing.stderr.count("\n") == 1


def test_training_counts_every_kind(image_lmdb, tmp_path):
    src = training.DataSource("train", "data", "Data", str(image_lmdb[0]), 2, "LMDB")
    assert training.count_images(src, tmp_path) == 4
    write_leveldb(tmp_path / "ldb", np.zeros((7, 1, 2, 2), np.uint8))
    src = training.DataSource("test", "data", "Data", "ldb", 2, "LEVELDB")
    assert training.count_images(src, tmp_path) == 7  # LevelDB was uncountable before
    bad = training.DataSource("test", "data", "Data", "nowhere", 2, "LEVELDB")
    with pytest.raises(UsageError, match="the test data source 'nowhere' .* does not exist"):
        training.count_images(bad, tmp_path)


# --- encoded Datum records --------------------------------------------------------------


def encode(kind: str, rng) -> bytes:
    """An image file of 5x7 pixels (``FORMAT/MODE[+trns|+exif6]``)."""
    fmt, _, mode = kind.partition("/")
    mode, _, extra = mode.partition("+")
    base = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    image = Image.fromarray(rng.integers(0, 65535, (5, 7), dtype=np.uint16)) \
        if mode == "I;16" else base.convert(mode)
    kwargs = {}
    if extra == "trns":
        kwargs["transparency"] = 0 if mode != "RGB" else (0, 0, 0)
    if extra == "exif6":  # stored 5x7, shown rotated by 90 degrees: 7x5
        exif = Image.Exif()
        exif[0x0112] = 6
        kwargs["exif"] = exif
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


ENCODED = ["PNG/L", "PNG/RGB", "PNG/RGBA", "PNG/LA", "PNG/P", "PNG/P+trns", "PNG/RGB+trns",
           "PNG/L+trns", "PNG/1", "PNG/I;16", "JPEG/L", "JPEG/RGB", "JPEG/CMYK",
           "JPEG/RGB+exif6", "BMP/RGB", "BMP/P", "BMP/L", "TIFF/RGB", "TIFF/RGBA", "TIFF/CMYK"]
# Caffe's DataTransformer decodes with imdecode(-1) (native), or colour / gray when the
# layer's transform_param says force_color / force_gray
FLAGS = {"native": (cv2.IMREAD_UNCHANGED, Options()),
         "force_color": (cv2.IMREAD_COLOR, Options(force_color=True)),
         "force_gray": (cv2.IMREAD_GRAYSCALE, Options(force_gray=True))}


def opencv_shape(data: bytes, flag: int) -> tuple[int, int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    return (1 if image.ndim == 2 else image.shape[2], *image.shape[:2])


@pytest.mark.parametrize("kind", ENCODED)
def test_an_encoded_record_has_the_shape_opencv_decodes(kind):
    data = encode(kind, np.random.default_rng(len(kind)))
    value = caffe_pb2.Datum(encoded=True, data=data, label=3).SerializeToString()
    for name, (flag, options) in FLAGS.items():
        first = datasource.datum_first(value, options)
        assert first.encoded and first.label == 3
        assert first.image_format == kind.split("/")[0]
        assert first.shape == opencv_shape(data, flag), (kind, name)


def test_an_encoded_lmdb_is_counted_and_decoded(tmp_path):
    """The LMDB readers agreed before only on raw records: an encoded one has no
    channels/height/width fields, its image header says."""
    rng = np.random.default_rng(0)
    blobs = [encode("JPEG/RGB", rng), encode("PNG/L", rng), encode("PNG/RGBA", rng)]
    write_encoded_lmdb(tmp_path / "enc", blobs)
    info = datasource.describe(tmp_path / "enc", "LMDB")
    assert info.count == 3
    assert info.first.shape == opencv_shape(blobs[0], cv2.IMREAD_UNCHANGED) == (3, 5, 7)
    assert info.first.encoded and info.first.image_format == "JPEG"
    gray = datasource.first_record(tmp_path / "enc", "LMDB", Options(force_gray=True))
    assert gray.shape == (1, 5, 7)
    with pytest.raises(dataio.DataError, match="record 00000000 is encoded"):
        dataio.read_lmdb(tmp_path / "enc")


def test_training_takes_the_channels_of_an_encoded_source(tmp_path):
    """`train`'s crop and channel checks read the first image through the reader: an
    encoded gray PNG is 1 channel, so a 3-value mean is refused (as for raw records)."""
    rng = np.random.default_rng(1)
    write_encoded_lmdb(tmp_path / "train_lmdb", [encode("PNG/L", rng)] * 4)
    write_encoded_lmdb(tmp_path / "test_lmdb", [encode("PNG/L", rng)] * 2)
    pnb = str(ROOT / ".venv" / "bin" / "pynetbuilder")
    done = subprocess.run(
        [pnb, "train", "resnet", "--depth", "8", "--train_source", "train_lmdb",
         "--test_source", "test_lmdb", "--crop_size", "5", "--mean", "1,2,3", "-o", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--mean has 3 values, but the images of" in done.stderr
    assert "have 1 channel(s)" in done.stderr and not (tmp_path / "run").exists()
    crop = subprocess.run(
        [pnb, "train", "resnet", "--depth", "8", "--train_source", "train_lmdb",
         "--test_source", "test_lmdb", "--crop_size", "6", "-o", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert crop.returncode == 2 and "--crop_size 6 exceeds the 5x7 images" in crop.stderr


def test_an_annotated_record_counts_its_boxes():
    record = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
    record.datum.CopyFrom(caffe_pb2.Datum(channels=3, height=4, width=6, data=bytes(72)))
    for boxes in (2, 1):
        group = record.annotation_group.add(group_label=1)
        for i in range(boxes):
            group.annotation.add(instance_id=i)
    first = datasource.datum_first(record.SerializeToString(), Options(annotated=True))
    assert first.shape == (3, 4, 6) and first.boxes == 3
    plain = caffe_pb2.AnnotatedDatum(datum=record.datum)
    assert datasource.datum_first(plain.SerializeToString(), Options(annotated=True)).boxes \
        is None


# --- HDF5 list files --------------------------------------------------------------------


def test_hdf5_list_count_and_shapes_match_caffe(caffe, tmp_path, monkeypatch):
    """Two files named on one line (Caffe reads the list with >>, any white space),
    relative to the working folder, as Caffe opens them."""
    monkeypatch.chdir(tmp_path)
    rows = (3, 4)
    start = 0
    for name, n in zip(("a.h5", "b.h5"), rows):
        images = np.zeros((n, 2, 3, 5), np.float32)
        images[:, 0, 0, 0] = np.arange(start, start + n)  # record i carries i
        dataio.write_hdf5(name, images, np.arange(n), list_file=False)
        start += n
    (tmp_path / "list.txt").write_text("a.h5  b.h5\n\n")
    info = datasource.describe("list.txt", "HDF5", Options(tops=("data", "label")),
                               bases=(tmp_path,))
    net = caffe_data_layer(caffe, tmp_path, 'type: "HDF5Data" top: "data" top: "label" '
                           'hdf5_data_param { source: "list.txt" batch_size: 8 }')
    net.forward()
    assert info.count == caffe_count(net.blobs["data"].data[:, 0, 0, 0]) == sum(rows)
    assert info.first.datasets == {"data": (2, 3, 5), "label": ()}
    assert (net.blobs["data"].data.shape[1:], net.blobs["label"].data.shape[1:]) == (
        info.first.datasets["data"], info.first.datasets["label"])
    assert info.first.shape == (2, 3, 5)
    del net
    src = training.DataSource("train", "data", "HDF5Data", "list.txt", 8, "")
    assert training.count_images(src, tmp_path) == 7


def test_hdf5_list_errors_name_the_file(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UsageError, match="names no file"):
        datasource.count(tmp_path / "empty.txt", "HDF5")
    (tmp_path / "list.txt").write_text("missing.h5\n")
    with pytest.raises(UsageError, match="lists missing.h5, which is not a readable HDF5"):
        datasource.count(tmp_path / "list.txt", "HDF5", bases=(tmp_path,))
    dataio.write_hdf5(tmp_path / "x.h5", np.zeros((2, 1, 1, 1), np.uint8), [0, 1])
    with pytest.raises(UsageError, match="has no dataset 'img' \\(it has: data, label\\)"):
        datasource.first_record(tmp_path / "x.txt", "HDF5", Options(tops=("img",)))


# --- ImageData list files ---------------------------------------------------------------


def test_image_list_count_and_shape_as_opencv_reads_them(tmp_path):
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)).save(
        tmp_path / "my image.png")
    Image.fromarray(rng.integers(0, 256, (8, 6), dtype=np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "list.txt").write_text("my image.png 0\nb.jpg 1\nb.jpg 1")  # no final newline
    for is_color, flag in ((True, cv2.IMREAD_COLOR), (False, cv2.IMREAD_GRAYSCALE)):
        info = datasource.describe(tmp_path / "list.txt", "IMAGE_LIST",
                                   Options(is_color=is_color), bases=(tmp_path,))
        image = cv2.imread(str(tmp_path / "my image.png"), flag)
        assert info.first.shape == (1 if image.ndim == 2 else 3, *image.shape[:2])
        assert info.count == 3 and info.first.encoded and info.first.image_format == "PNG"
    rooted = datasource.first_record(tmp_path / "list.txt", "IMAGE_LIST",
                                     Options(root_folder=f"{tmp_path}/"))
    assert rooted.shape == (3, 10, 12)
    (tmp_path / "gap.txt").write_text("b.jpg 1\n\nb.jpg 1\n")
    with pytest.raises(UsageError, match="line 2 of the image list .* names no image"):
        datasource.count(tmp_path / "gap.txt", "IMAGE_LIST")


# --- errors -----------------------------------------------------------------------------


def test_missing_and_wrong_sources_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [
        (lambda: datasource.count(tmp_path / "none", "LMDB"), "the LMDB .*none does not exist"),
        (lambda: datasource.count(tmp_path / "file", "LMDB"),
         "file is a file: Caffe's LMDB backend opens a folder"),
        (lambda: datasource.count(tmp_path, "LEVELDB"), "is not a readable LevelDB"),
        (lambda: datasource.count(tmp_path / "file", "ROCKS"), "must be one of LMDB, LEVELDB"),
        (lambda: datasource.first_record(tmp_path / "file", "IMAGE_LIST", bases=(tmp_path,)),
         "cannot read the image"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]  # nothing written beside them
