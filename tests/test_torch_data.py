"""The torch engine's data pipeline (pynetbuilder.pytorch.train.data) against Caffe's
data layers, batch by batch.

Oracles: real Caffe's ``Data`` and ``HDF5Data`` layers run forward by pycaffe (TEST
phase, TRAIN with crop = stored size and no mirror, and two TRAIN nets sharing one
``DataReader`` as ``caffe train --gpu 0,1`` builds them); for what this Caffe cannot
run (it has no OpenCV: encoded records, ``ImageData``) the pixels of the images we
wrote, or OpenCV 4.13 decoding with Caffe's flags.  Random TRAIN crops and mirrors
differ from Caffe's draws by design: every sample must be one of the crops (and
mirrors) of its record that Caffe's ``DataTransformer`` can produce, computed here
in numpy (:func:`caffe_transform`, checked against real Caffe first), and over a
few hundred samples every one of them must occur, in both Caffe and the engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from pynetbuilder import dataio
from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2

torch = pytest.importorskip("torch")

from pynetbuilder.pytorch.train import data  # noqa: E402  (needs torch)

TOPS = ("data", "label")


# ---------------------------------------------------------------- writers and runners


def write_leveldb(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    import plyvel

    db = plyvel.DB(str(path), create_if_missing=True, error_if_exists=True)
    with db.write_batch() as batch:
        for i, (img, label) in enumerate(zip(images, labels)):
            c, h, w = img.shape
            batch.put(f"{i:08d}".encode(), caffe_pb2.Datum(
                channels=c, height=h, width=w, data=img.tobytes(),
                label=int(label)).SerializeToString())
    db.close()
    return path


def write_float_lmdb(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """``Datum`` records holding ``float_data`` (no bytes), which Caffe also reads."""
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (img, label) in enumerate(zip(images, labels)):
            c, h, w = img.shape
            d = caffe_pb2.Datum(channels=c, height=h, width=w, label=int(label))
            d.float_data.extend(img.ravel().tolist())
            txn.put(f"{i:08d}".encode(), d.SerializeToString())
    env.close()
    return path


def write_encoded_lmdb(path: Path, blobs: list[bytes]) -> Path:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, blob in enumerate(blobs):
            txn.put(f"{i:08d}".encode(), caffe_pb2.Datum(
                encoded=True, data=blob, label=i).SerializeToString())
    env.close()
    return path


def image_file(array: np.ndarray, fmt: str) -> bytes:
    """``array`` (H x W x 3 RGB, H x W x 4 RGBA or H x W gray) as a PNG or JPEG file."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt)
    return out.getvalue()


def net_text(layer: str) -> str:
    return f'name: "d"\nlayer {{ name: "data" {layer} }}\n'


def data_layer(source: Path, backend: str, batch: int, transform: str = "") -> str:
    return net_text(f'type: "Data" top: "data" top: "label" transform_param {{ {transform} }} '
                    f'data_param {{ source: "{source}" batch_size: {batch} '
                    f'backend: {backend} }}')


def caffe_batches(caffe, text: str, phase: str, n: int, folder: Path,
                  tops: tuple[str, ...] = TOPS) -> list[dict[str, np.ndarray]]:
    """``n`` forward passes of real Caffe's net ``text`` in ``phase``."""
    path = folder / f"caffe_{phase}.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TRAIN if phase == "train" else caffe.TEST)
    out = []
    for _ in range(n):
        net.forward()
        out.append({t: net.blobs[t].data.copy() for t in tops})
    del net  # closes the database (a LevelDB is locked while open)
    return out


def engine_batches(text: str, phase: str, n: int, base: Path, *, rank: int = 0,
                   world: int = 1, seed: int = 0,
                   workers: int = 0) -> list[dict[str, np.ndarray]]:
    """The first ``n`` batches the engine's loader yields for the net ``text``."""
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    feed = data.feed_of(net, phase, base)
    batches = data.loader(feed, rank=rank, world=world, seed=seed, workers=workers)
    out = [{k: v.numpy() for k, v in next(batches).items()} for _ in range(n)]
    del batches  # its reader (and worker processes) go with it
    return out


def assert_same(ours: list[dict[str, np.ndarray]], theirs: list[dict[str, np.ndarray]]) -> None:
    assert len(ours) == len(theirs)
    for j, (a, b) in enumerate(zip(ours, theirs)):
        assert sorted(a) == sorted(b), j
        for top in a:
            assert a[top].shape == b[top].shape, (j, top)
            assert a[top].dtype == np.float32
            np.testing.assert_array_equal(a[top], b[top], err_msg=f"batch {j}, top {top}")


# ---------------------------------------------------------------- Caffe's transformation


def caffe_transform(img: np.ndarray, *, crop: int = 0, offset: tuple[int, int] | None = None,
                    mirror: bool = False, mean: np.ndarray | None = None,
                    values: tuple[float, ...] = (), scale: float = 1.0,
                    decoded: bool = False) -> np.ndarray:
    """Caffe's ``DataTransformer::Transform`` of one C x H x W image, read from the pinned
    data_transformer.cpp: ``top[c][h][w'] = (pixel[c][y+h][x+w] - mean[...]) * scale`` in
    float, ``w' = width-1-w`` when mirrored; the crop's offset is ``offset`` (TRAIN) or
    centred (TEST).  The Datum path indexes the mean at the source pixel
    ``[c][y+h][x+w]``, the cv::Mat path (``decoded``) at ``[c][y+h][x+w']``."""
    c, h, w = img.shape
    if crop:
        y, x = offset if offset is not None else ((h - crop) // 2, (w - crop) // 2)
        hh = ww = crop
    else:
        y = x = 0
        hh, ww = h, w
    pixels = img.astype(np.float32)[:, y:y + hh, x:x + ww]
    if mean is not None:
        m = mean.astype(np.float32)[:, y:y + hh, x:x + ww]
    elif values:
        m = np.broadcast_to(np.asarray(values, np.float32).reshape(-1, 1, 1), pixels.shape)
    else:
        m = np.zeros_like(pixels)
    if mirror:
        pixels = pixels[:, :, ::-1]
        m = m if decoded else m[:, :, ::-1]
    return ((pixels - m) * np.float32(scale)).astype(np.float32)


def crops_of(img: np.ndarray, crop: int, mirror: bool, **kwargs) -> dict[tuple, np.ndarray]:
    """Every image Caffe's TRAIN transformation can make of ``img``: offsets
    ``0 .. H-crop`` x ``0 .. W-crop`` (``Rand(H - crop + 1)``), each unmirrored and, with
    ``mirror``, mirrored."""
    _, h, w = img.shape
    return {(y, x, m): caffe_transform(img, crop=crop, offset=(y, x), mirror=m, **kwargs)
            for y in range(h - crop + 1) for x in range(w - crop + 1)
            for m in ((False, True) if mirror else (False,))}


def which_crops(batches: list[dict[str, np.ndarray]], records: np.ndarray,
                crop: int, mirror: bool, **kwargs) -> set[tuple]:
    """The (row, column, mirrored) of each sample (its record from its label); asserts
    that each sample is one of the record's possible crops."""
    candidates = {i: crops_of(img, crop, mirror, **kwargs) for i, img in enumerate(records)}
    seen = set()
    for j, batch in enumerate(batches):
        for k, (sample, label) in enumerate(zip(batch["data"], batch["label"])):
            hits = [key for key, want in candidates[int(label)].items()
                    if np.array_equal(sample, want)]
            assert hits, f"batch {j} item {k} (record {int(label)}) is no crop Caffe can make"
            seen.update(hits)
    return seen


# ---------------------------------------------------------------- TEST phase, exact


@pytest.fixture(scope="module")
def records():
    """7 random 3x6x5 uint8 images (height 6, width 5: a swap of the two shows), labels
    0..6, and the mean image of them."""
    rng = np.random.default_rng(11)
    return rng.integers(0, 256, (7, 3, 6, 5), dtype=np.uint8), np.arange(7)


TRANSFORMS = {
    "crop+mean_file+scale": ("crop_size: 3 scale: 0.5", dict(crop=3, mean="file", scale=0.5)),
    "crop+mean_values+scale": ("crop_size: 4 mean_value: 10 mean_value: 20.5 mean_value: 30 "
                               "scale: 0.00390625",
                               dict(crop=4, values=(10, 20.5, 30), scale=0.00390625)),
    "one_mean_value": ("mean_value: 100.25", dict(values=(100.25,) * 3)),
    "none": ("", {}),
}


def source(kind: str, folder: Path, images: np.ndarray, labels: np.ndarray) -> tuple[Path, str]:
    if kind == "LMDB":
        return dataio.write_lmdb(folder / "lmdb", images, labels), "LMDB"
    if kind == "LMDB-float":
        return write_float_lmdb(folder / "flmdb", images, labels), "LMDB"
    return write_leveldb(folder / "ldb", images, labels), "LEVELDB"


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("kind", ["LMDB", "LEVELDB", "LMDB-float"])
def test_test_phase_equals_caffe(caffe, records, tmp_path, kind, transform):
    """Four batches of 3 from 7 records (wrapping around twice), centre crop, mean file
    or values, scale: the engine's batches are Caffe's, value for value."""
    images, labels = records
    if kind == "LMDB-float":
        images = images.astype(np.float32) + 0.375  # float_data records
    path, backend = source(kind, tmp_path, images, labels)
    text, expect = TRANSFORMS[transform]
    if expect.get("mean") == "file":
        mean_file = dataio.write_mean_binaryproto(tmp_path / "mean.binaryproto", images)
        text += f' mean_file: "{mean_file}"'
        expect = {**expect, "mean": dataio.read_mean_binaryproto(mean_file)}
    net = data_layer(path, backend, 3, text)
    theirs = caffe_batches(caffe, net, "test", 4, tmp_path)
    order = [i % 7 for i in range(12)]
    assert np.concatenate([b["label"] for b in theirs]).tolist() == order  # wrapped around
    model = [{"data": np.stack([caffe_transform(images[i], **expect) for i in order[j:j + 3]]),
              "label": np.asarray(order[j:j + 3], np.float32)} for j in range(0, 12, 3)]
    assert_same(model, theirs)  # the numpy model of Caffe's transformation holds
    assert_same(engine_batches(net, "test", 4, tmp_path), theirs)


def test_train_phase_without_random_transforms_equals_caffe(caffe, tmp_path):
    """TRAIN with crop = the stored size and no mirror: no random draw, Caffe's batches
    exactly (mean file, scale), through two DataLoader workers."""
    images = np.random.default_rng(4).integers(0, 256, (5, 2, 4, 4), dtype=np.uint8)
    path = dataio.write_lmdb(tmp_path / "lmdb", images, np.arange(5))
    mean = dataio.write_mean_binaryproto(tmp_path / "mean.binaryproto", images)
    net = data_layer(path, "LMDB", 2, f'crop_size: 4 mean_file: "{mean}" scale: 0.125 '
                     'mirror: false')
    theirs = caffe_batches(caffe, net, "train", 4, tmp_path)
    assert np.concatenate([b["label"] for b in theirs]).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert_same(engine_batches(net, "train", 4, tmp_path, workers=2), theirs)


def test_mirror_applies_in_the_test_phase_too(caffe, tmp_path):
    """Caffe's ``do_mirror = mirror && Rand(2)`` has no phase test: a TEST net with
    ``mirror: true`` flips about half its images.  The engine did not flip in TEST."""
    images = np.random.default_rng(6).integers(0, 256, (8, 1, 3, 4), dtype=np.uint8)
    path = dataio.write_lmdb(tmp_path / "lmdb", images, np.arange(8))
    net = data_layer(path, "LMDB", 8, "mirror: true")
    caffe.set_random_seed(5)
    for batches in (caffe_batches(caffe, net, "test", 4, tmp_path),
                    engine_batches(net, "test", 4, tmp_path)):
        seen = which_crops(batches, images, 0, True)
        assert {m for _, _, m in seen} == {False, True}


# ---------------------------------------------------------------- TRAIN phase, random


def test_random_crops_and_mirrors_are_those_caffe_can_make(caffe, tmp_path):
    """320 TRAIN samples of 8 records 2x5x6, crop 3, mirror, mean file, scale: in real
    Caffe and in the engine, each sample is one of the 3 x 4 offsets x 2 mirrors of its
    record (the mean cropped at the same offset and not flipped away from the pixels),
    and every one of the 24 occurs."""
    images = np.random.default_rng(8).integers(0, 256, (8, 2, 5, 6), dtype=np.uint8)
    path = dataio.write_lmdb(tmp_path / "lmdb", images, np.arange(8))
    mean_file = dataio.write_mean_binaryproto(tmp_path / "mean.binaryproto", images)
    mean = dataio.read_mean_binaryproto(mean_file)
    net = data_layer(path, "LMDB", 8, f'crop_size: 3 mirror: true mean_file: "{mean_file}" '
                     'scale: 0.5')
    every = {(y, x, m) for y in range(3) for x in range(4) for m in (False, True)}
    caffe.set_random_seed(1)
    theirs = caffe_batches(caffe, net, "train", 40, tmp_path)
    assert which_crops(theirs, images, 3, True, mean=mean, scale=0.5) == every
    ours = engine_batches(net, "train", 40, tmp_path, seed=3)
    assert which_crops(ours, images, 3, True, mean=mean, scale=0.5) == every
    labels = np.concatenate([b["label"] for b in ours])
    assert labels.tolist() == np.concatenate([b["label"] for b in theirs]).tolist()


def test_random_draws_do_not_depend_on_the_workers(tmp_path):
    images = np.random.default_rng(9).integers(0, 256, (6, 3, 5, 5), dtype=np.uint8)
    path = dataio.write_lmdb(tmp_path / "lmdb", images, np.arange(6))
    net = data_layer(path, "LMDB", 4, "crop_size: 3 mirror: true")
    one = engine_batches(net, "train", 5, tmp_path, seed=2)
    assert_same(engine_batches(net, "train", 5, tmp_path, seed=2, workers=2), one)
    other = engine_batches(net, "train", 5, tmp_path, seed=4)
    assert any(not np.array_equal(a["data"], b["data"]) for a, b in zip(one, other))


# ---------------------------------------------------------------- ranks


@contextlib.contextmanager
def caffe_solvers(caffe, count: int):
    """Real Caffe's ``Caffe::solver_count()`` set to ``count`` (what ``caffe train
    --gpu 0,1`` sets, and what makes a TRAIN ``Data`` layer's ``DataReader`` deal its
    records to that many solvers) while the nets are built.  pycaffe has no setter: the
    thread's ``Caffe`` object comes from libcaffe's exported ``Caffe::Get()``, and its
    CPU-only layout (``shared_ptr`` RNG, ``Brew mode_``, ``int solver_count_``, ``bool
    root_solver_``) is checked by switching the mode through pycaffe before writing."""
    lib = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
               if "libcaffe.so" in line)
    get = ctypes.CDLL(lib)._ZN5caffe5Caffe3GetEv
    get.restype = ctypes.c_void_p
    base = get()
    mode, solvers = (ctypes.c_int.from_address(base + off) for off in (16, 20))
    root = ctypes.c_bool.from_address(base + 24)
    caffe.set_mode_gpu()  # only sets mode_ in a CPU-only build
    gpu = mode.value
    caffe.set_mode_cpu()
    assert (gpu, mode.value, solvers.value, root.value) == (1, 0, 1, True), "layout changed"
    solvers.value = count
    try:
        yield
    finally:
        solvers.value = 1


def test_two_ranks_read_as_caffe_deals_to_two_solvers(caffe, tmp_path):
    """World size 2, batch 3, 7 records: rank r's batch j is solver r's batch j of two
    real Caffe TRAIN nets sharing one DataReader; and within every epoch (7 consecutive
    records of the dealt sequence) each record comes once."""
    images = np.random.default_rng(12).integers(0, 256, (7, 1, 3, 3), dtype=np.uint8)
    path = dataio.write_lmdb(tmp_path / "lmdb", images, np.arange(7))
    net = data_layer(path, "LMDB", 3, "scale: 0.5")
    (tmp_path / "n.prototxt").write_text(net)
    with caffe_solvers(caffe, 2):
        nets = [caffe.Net(str(tmp_path / "n.prototxt"), caffe.TRAIN) for _ in range(2)]
        theirs: list[list[dict[str, np.ndarray]]] = [[], []]
        for _ in range(5):
            for r in (0, 1):
                nets[r].forward()
                theirs[r].append({t: nets[r].blobs[t].data.copy() for t in TOPS})
        del nets
    for r in (0, 1):
        assert_same(engine_batches(net, "train", 5, tmp_path, rank=r, world=2, workers=r),
                    theirs[r])
    # the dealt sequence: step j gives rank 0 records g = 6j, 6j+2, 6j+4, rank 1 the others
    dealt = [int(theirs[g % 2][g // 6]["label"][(g % 6) // 2]) for g in range(30)]
    assert dealt == [g % 7 for g in range(30)]
    for start in range(0, 28, 7):
        assert sorted(dealt[start:start + 7]) == list(range(7))


# ---------------------------------------------------------------- HDF5Data


def test_hdf5_equals_caffe(caffe, tmp_path, monkeypatch):
    """Two files (float32 written by dataio, float64 by h5py: Caffe reads both as float)
    named relative to the run folder (the list is in a subfolder), batch 3 over 7 rows,
    4 batches (wrapping around): Caffe's batches, with Caffe run from the run folder
    and the engine from elsewhere."""
    import h5py

    run = tmp_path / "run"
    run.mkdir()
    rng = np.random.default_rng(13)
    a = rng.integers(0, 256, (3, 2, 3, 4)).astype(np.uint8)
    dataio.write_hdf5(run / "a.h5", a, [5, 6, 7], list_file=False, scale=0.1)
    b = rng.normal(size=(4, 2, 3, 4))  # float64: rounded to float by HDF5 when read
    with h5py.File(run / "b.h5", "w") as fh:
        fh["data"] = b
        fh["label"] = np.array([1.5, 2, 3, 4], np.float64)
    (run / "lists").mkdir()
    (run / "lists" / "h5.txt").write_text("a.h5\nb.h5\n")  # from the run folder, not lists/
    net = net_text('type: "HDF5Data" top: "data" top: "label" '
                   'hdf5_data_param { source: "lists/h5.txt" batch_size: 3 }')
    monkeypatch.chdir(run)
    theirs = caffe_batches(caffe, net, "test", 4, run)
    monkeypatch.chdir(tmp_path)
    assert np.concatenate([x["label"] for x in theirs]).tolist() == [
        5, 6, 7, 1.5, 2, 3, 4, 5, 6, 7, 1.5, 2]
    assert_same(engine_batches(net, "test", 4, run), theirs)
    assert_same(engine_batches(net, "train", 4, run), theirs)


def test_hdf5_with_a_transform_param_is_refused_as_caffe_does(caffe, tmp_path):
    dataio.write_hdf5(tmp_path / "a.h5", np.zeros((2, 1, 2, 2), np.uint8), [0, 1])
    net = net_text(f'type: "HDF5Data" top: "data" top: "label" transform_param {{ }} '
                   f'hdf5_data_param {{ source: "{tmp_path / "a.txt"}" batch_size: 1 }}')
    (tmp_path / "n.prototxt").write_text(net)
    done = subprocess.run(
        [sys.executable, "-c", "import caffe, sys; caffe.Net(sys.argv[1], caffe.TEST)",
         str(tmp_path / "n.prototxt")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "HDF5Data does not transform data" in done.stderr
    with pytest.raises(UsageError, match="HDF5Data does not transform data"):
        engine_batches(net, "test", 1, tmp_path)


# ---------------------------------------------------------------- decoded images


@pytest.fixture(scope="module")
def pictures():
    """Four 5x6 RGB pictures and their gray versions (uint8)."""
    rng = np.random.default_rng(14)
    rgb = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    return rgb, rng.integers(0, 256, (4, 5, 6), dtype=np.uint8)


def bgr(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB as Caffe's C x H x W BGR (OpenCV's channel order)."""
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))


def opencv(blob: bytes, flag: int) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(blob, np.uint8), flag)
    return (img[None] if img.ndim == 2 else img.transpose(2, 0, 1)).copy()


def test_encoded_records_decode_as_caffe_would(pictures, tmp_path):
    """Encoded Datum records (PNG: lossless, so the pixels we wrote; JPEG: as OpenCV
    decodes it) in TEST with centre crop 3, mean values, scale: BGR channel order,
    ``imdecode(-1)`` natively, colour or gray with force_color / force_gray."""
    rgb, gray = pictures
    transform = "crop_size: 3 mean_value: 1 mean_value: 2 mean_value: 3 scale: 0.5"
    cases = {
        "native": ([image_file(x, "PNG") for x in rgb[:3]] + [image_file(rgb[3], "JPEG")],
                   "", lambda blobs: [bgr(x) for x in rgb[:3]]
                   + [opencv(blobs[3], cv2.IMREAD_UNCHANGED)]),
        "force_gray": ([image_file(x, "PNG") for x in rgb], "force_gray: true",
                       lambda blobs: [opencv(b, cv2.IMREAD_GRAYSCALE) for b in blobs]),
        "force_color": ([image_file(x, "PNG") for x in gray], "force_color: true",
                        lambda blobs: [np.repeat(x[None], 3, axis=0) for x in gray]),
        "rgba": ([image_file(np.dstack([x, x[:, :, 0]]), "PNG") for x in rgb], "",
                 lambda blobs: [np.concatenate([bgr(x), x[None, :, :, 0]]) for x in rgb]),
    }
    for name, (blobs, flag, pixels) in cases.items():
        path = write_encoded_lmdb(tmp_path / name, blobs)
        want = pixels(blobs)
        c = want[0].shape[0]
        values = (1, 2, 3) if c == 3 else (1,) * c
        text = (transform if c == 3 else "crop_size: 3 mean_value: 1 scale: 0.5") + " " + flag
        ours = engine_batches(data_layer(path, "LMDB", 3, text), "test", 2, tmp_path)
        order = [0, 1, 2, 3, 0, 1]
        model = [{"data": np.stack([caffe_transform(want[i], crop=3, values=values, scale=0.5)
                                    for i in order[j:j + 3]]),
                  "label": np.asarray(order[j:j + 3], np.float32)} for j in (0, 3)]
        assert_same(ours, model)
        assert ours[0]["data"].shape == (3, c, 3, 3), name


def test_decoded_images_with_a_mean_file_follow_the_opencv_path(pictures, tmp_path):
    """The pinned Caffe's cv::Mat path (encoded records, ImageData) subtracts the mean
    at the mirrored column, so a mirrored sample is flip(pixels) - mean, where a raw
    record gives flip(pixels - mean); and it checks that the cropped image has the
    mean's size, so a smaller crop with a mean file is refused."""
    rgb, _ = pictures
    path = write_encoded_lmdb(tmp_path / "enc", [image_file(x, "PNG") for x in rgb])
    images = np.stack([bgr(x) for x in rgb])
    mean_file = dataio.write_mean_binaryproto(tmp_path / "mean.binaryproto", images)
    mean = dataio.read_mean_binaryproto(mean_file)
    net = data_layer(path, "LMDB", 4, f'mirror: true mean_file: "{mean_file}" scale: 2')
    ours = engine_batches(net, "train", 8, tmp_path, seed=1)
    seen = which_crops(ours, images, 0, True, mean=mean, scale=2, decoded=True)
    assert {m for _, _, m in seen} == {False, True}
    flipped_raw = caffe_transform(images[0], mirror=True, mean=mean, scale=2)
    flipped_mat = caffe_transform(images[0], mirror=True, mean=mean, scale=2, decoded=True)
    assert not np.array_equal(flipped_raw, flipped_mat)  # the two paths differ here
    small = data_layer(path, "LMDB", 4, f'crop_size: 4 mean_file: "{mean_file}"')
    with pytest.raises(UsageError, match="crop_size 4 with a mean_file on 5x6 images"):
        engine_batches(small, "test", 1, tmp_path)


def test_image_data_reads_the_list_as_caffe(pictures, tmp_path, monkeypatch):
    """An image list with a name holding a space, names relative to the run folder (the
    engine runs from elsewhere), colour or gray (``is_color``), resized by OpenCV's
    bilinear ``cv::resize`` to new_height x new_width, a relative root_folder."""
    rgb, _ = pictures
    run = tmp_path / "run"
    (run / "img").mkdir(parents=True)
    names = ["my pic.png", "b.png", "c.png"]
    for name, x in zip(names, rgb):
        Image.fromarray(x).save(run / "img" / name)
    (run / "list.txt").write_text("".join(f"img/{n} {i + 4}\n" for i, n in enumerate(names)))
    (run / "rooted.txt").write_text("".join(f"{n} {i + 4}\n" for i, n in enumerate(names)))
    monkeypatch.chdir(tmp_path)
    order = [0, 1, 2, 0]
    files = [str(run / "img" / n) for n in names]
    cases = [
        ('source: "list.txt" is_color: true', [bgr(x) for x in rgb[:3]]),
        ('source: "list.txt" is_color: false',
         [cv2.imread(f, cv2.IMREAD_GRAYSCALE)[None] for f in files]),
        ('source: "rooted.txt" root_folder: "img/" new_height: 7 new_width: 4',
         [cv2.resize(cv2.imread(f, cv2.IMREAD_COLOR), (4, 7)).transpose(2, 0, 1)
          for f in files]),
    ]
    for param, want in cases:
        net = net_text('type: "ImageData" top: "data" top: "label" transform_param { '
                       'crop_size: 4 mean_value: 7 } image_data_param { '
                       f'{param} batch_size: 2 }}')
        ours = engine_batches(net, "test", 2, run)
        model = [{"data": np.stack([caffe_transform(want[i], crop=4, values=(7,) * len(want[0]))
                                    for i in order[j:j + 2]]),
                  "label": np.asarray([i + 4 for i in order[j:j + 2]], np.float32)}
                 for j in (0, 2)]
        assert_same(ours, model)
    half = net_text('type: "ImageData" top: "data" top: "label" image_data_param { '
                    'source: "list.txt" batch_size: 2 new_height: 7 }')
    with pytest.raises(UsageError, match="new_height and new_width together"):
        engine_batches(half, "test", 1, run)
