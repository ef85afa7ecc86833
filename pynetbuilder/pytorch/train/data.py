"""The data layers of a train net as PyTorch data loaders, read and transformed as
Caffe's layers do.

Sources (through :mod:`pynetbuilder.datasource`'s conventions): ``Data`` over LMDB or
LevelDB (raw or encoded ``Datum``), ``ImageData`` (a ``path label`` list, images read
with OpenCV, ``new_height``/``new_width`` resizing, ``is_color``), ``HDF5Data``
(rows of every listed file in order, no transformation, as Caffe's layer, which
refuses a ``transform_param``).  Relative names inside an image or HDF5 list (and
``root_folder``) are taken from the run folder, Caffe's working folder.

Order: Caffe reads a source front to back and wraps around.  With ``world`` ranks
the records are dealt round robin, as Caffe's ``DataReader`` deals a ``Data``
layer's records to its solvers: record ``g mod N`` of the global sequence
``g = 0, 1, 2 ...`` goes to rank ``g mod world``; each rank's batches are its next
``batch_size`` records.  (Caffe's ``ImageData`` and ``HDF5Data`` layers have no
shared reader: there every solver reads the whole source; the engine deals them
the same round robin way, so that each rank reads its own share.)  The TEST layer is
read by rank 0 alone, front to back, its position kept between tests.

Transformation (Caffe's ``DataTransformer``): ``crop_size`` at a random offset in
TRAIN, centred in TEST; ``mirror`` (each image flipped with probability 1/2, in
either phase, as Caffe does); minus ``mean_file`` (the mean of the uncropped image,
cropped with it) or ``mean_value`` (one per channel, or one for all); times
``scale``.  Images decoded by OpenCV (encoded records, ``ImageData``) go through the
pinned Caffe's ``cv::Mat`` path, which differs with a ``mean_file``: the mean is
subtracted after mirroring (it is not mirrored), and the cropped image must have
the mean's size (a smaller crop is refused, as Caffe's check fails).  Random choices
come from a generator seeded by (seed, rank, batch), so the result does not depend
on the number of worker processes.  Fields that change the data in ways the engine
does not reproduce are refused by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pynetbuilder import datasource
from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2

TYPES = ("Data", "ImageData", "HDF5Data")
# TransformationParameter fields reproduced (others: refused when set)
_TRANSFORM = {"scale", "mirror", "crop_size", "mean_file", "mean_value", "force_color",
              "force_gray"}


@dataclass(frozen=True)
class Feed:
    """One data layer as the engine reads it (picklable: workers get a copy)."""

    layer: str
    type: str
    kind: str  # LMDB, LEVELDB, IMAGE_LIST, HDF5
    source: Path
    tops: tuple[str, ...]
    batch_size: int
    train: bool
    count: int
    transform: bytes = b""  # serialized TransformationParameter
    image: tuple[bool, int, int, str] = (True, 0, 0, "")  # is_color, new_h, new_w, root
    mean: np.ndarray | None = field(default=None, compare=False)
    base: Path = Path()  # the run folder: relative names inside image and HDF5 lists


def feed_of(net: Any, phase: str, base: Path) -> Feed:
    """The one data layer of ``net`` (a phase-filtered NetParameter); relative sources
    from ``base`` (the run folder, where Caffe runs).  UsageError for what is not
    reproduced."""
    layers = [la for la in net.layer if la.type in TYPES or la.type.endswith("Data")]
    if len(layers) != 1:
        what = ", ".join(f"{la.name} ({la.type})" for la in layers) or "none"
        raise UsageError(f"the {phase} net needs exactly one data layer for the torch engine "
                         f"(it has: {what})")
    layer = layers[0]
    if layer.type not in TYPES:
        raise UsageError(f"data layer {layer.name!r} ({layer.type}): the torch engine reads "
                         f"{', '.join(TYPES)}")
    _check_transform(layer)
    kind, source, options = datasource.layer_source(layer)
    path = datasource.resolve(source, (base,))
    where = f"the {phase} data source {source!r} (layer {layer.name})"
    if not path.exists():
        raise UsageError(f"{where} does not exist")
    image = (True, 0, 0, "")
    if layer.type == "Data":
        p = layer.data_param
        batch = p.batch_size
        if p.rand_skip:
            raise UsageError(f"layer {layer.name!r}: data_param.rand_skip is not reproduced")
    elif layer.type == "ImageData":
        p = layer.image_data_param
        batch = p.batch_size
        if p.shuffle or p.rand_skip:
            raise UsageError(f"layer {layer.name!r}: image_data_param shuffle/rand_skip (Caffe's "
                             "own random order) is not reproduced")
        if (p.new_height > 0) != (p.new_width > 0):
            raise UsageError(f"layer {layer.name!r}: image_data_param needs new_height and "
                             "new_width together (Caffe's check)")
        image = (p.is_color, p.new_height, p.new_width, p.root_folder)
    else:
        p = layer.hdf5_data_param
        batch = p.batch_size
        if layer.HasField("transform_param"):
            raise UsageError(f"layer {layer.name!r}: HDF5Data does not transform data "
                             "(Caffe refuses a transform_param there)")
        if p.shuffle:
            raise UsageError(f"layer {layer.name!r}: hdf5_data_param.shuffle (Caffe's own "
                             "random order) is not reproduced")
    try:
        n = datasource.count(path, kind, options, bases=(base,))
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    if n == 0:
        raise UsageError(f"{where} holds no records")
    mean = None
    t = layer.transform_param
    if t.mean_file:
        mean = read_mean(datasource.resolve(t.mean_file, (base,)))
    return Feed(layer.name, layer.type, kind, path, tuple(layer.top), batch,
                phase == "train", n, t.SerializeToString(), image, mean, base)


def _check_transform(layer: Any) -> None:
    t = layer.transform_param
    for fd, _ in t.ListFields():
        if fd.name not in _TRANSFORM:
            raise UsageError(f"layer {layer.name!r}: transform_param.{fd.name} is not "
                             "reproduced by the torch engine")
    if t.mean_file and len(t.mean_value):
        raise UsageError(f"layer {layer.name!r}: give mean_file or mean_value, not both "
                         "(Caffe's rule)")
    if t.force_color and t.force_gray:
        raise UsageError(f"layer {layer.name!r}: force_color and force_gray together")


def read_mean(path: Path) -> np.ndarray:
    """A ``mean.binaryproto`` as a C x H x W float32 array."""
    from pynetbuilder.pytorch.weights import _blob_array

    try:
        blob = caffe_pb2.BlobProto.FromString(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read the mean file {path}: {exc.strerror}") from None
    arr = _blob_array(blob)
    return arr.reshape(arr.shape[-3:]) if arr.ndim >= 3 else arr


# ---------------------------------------------------------------- reading records


class Reader:
    """Record ``i`` of a source as ``(image C x H x W float32 or HDF5 rows, label,
    decoded)`` (``decoded``: the image came through OpenCV); opened lazily in the
    process that reads (a DataLoader worker)."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self._db: Any = None
        self._keys: list[bytes] | None = None
        self._lines: list[tuple[str, int]] | None = None
        self._h5: list[dict[str, np.ndarray]] | None = None
        self.transform = caffe_pb2.TransformationParameter.FromString(feed.transform)

    def _open(self) -> None:
        f = self.feed
        if f.kind == "LMDB":
            import lmdb

            self._db = lmdb.open(str(f.source), readonly=True, lock=False, subdir=True)
            with self._db.begin() as txn:
                self._keys = list(txn.cursor().iternext(keys=True, values=False))
        elif f.kind == "LEVELDB":
            import plyvel

            self._db = plyvel.DB(str(f.source), create_if_missing=False)
            self._keys = list(self._db.iterator(include_value=False))
        elif f.kind == "IMAGE_LIST":
            text = f.source.read_text(encoding="utf-8").split("\n")
            lines = [ln for ln in text if ln != ""]
            self._lines = []
            for ln in lines:
                pos = ln.rfind(" ")
                self._lines.append((ln[:pos], int(ln[pos + 1:])))
        else:
            self._h5 = []
            import h5py

            for name in f.source.read_text(encoding="utf-8").split():
                path = datasource.resolve(name, (f.base,))
                with h5py.File(path, "r") as fh:
                    self._h5.append({t: np.asarray(fh[t], dtype=np.float32) for t in f.tops})

    def record(self, i: int) -> tuple[np.ndarray | dict[str, np.ndarray], float, bool]:
        if self._db is None and self._lines is None and self._h5 is None:
            self._open()
        f = self.feed
        if f.kind in ("LMDB", "LEVELDB"):
            assert self._keys is not None
            key = self._keys[i]
            if f.kind == "LMDB":
                with self._db.begin() as txn:
                    value = txn.get(key)
            else:
                value = self._db.get(key)
            datum = caffe_pb2.Datum.FromString(value)
            return self._datum_image(datum), float(datum.label), bool(datum.encoded)
        if f.kind == "IMAGE_LIST":
            assert self._lines is not None
            name, label = self._lines[i]
            return self._file_image(name), float(label), True
        assert self._h5 is not None
        for rows in self._h5:
            n = len(next(iter(rows.values())))
            if i < n:
                return {t: rows[t][i] for t in f.tops}, 0.0, False
            i -= n
        raise IndexError(i)

    def _datum_image(self, datum: Any) -> np.ndarray:
        if datum.encoded:
            import cv2

            t = self.transform
            flag = (cv2.IMREAD_COLOR if t.force_color else cv2.IMREAD_GRAYSCALE
                    if t.force_gray else cv2.IMREAD_UNCHANGED)
            img = cv2.imdecode(np.frombuffer(datum.data, np.uint8), flag)
            if img is None:
                raise UsageError(f"{self.feed.source}: a record's image cannot be decoded")
            return _chw(img)
        shape = (datum.channels, datum.height, datum.width)
        if datum.data:
            return np.frombuffer(datum.data, np.uint8).reshape(shape).astype(np.float32)
        return np.asarray(datum.float_data, np.float32).reshape(shape)

    def _file_image(self, name: str) -> np.ndarray:
        import cv2

        is_color, new_h, new_w, root = self.feed.image
        path = str(datasource.resolve(root + name, (self.feed.base,)))
        img = cv2.imread(path, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise UsageError(f"cannot read the image {path} listed in {self.feed.source}")
        if new_h > 0 and new_w > 0:
            img = cv2.resize(img, (new_w, new_h))
        return _chw(img)


def _chw(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        raise UsageError("only 8-bit images are read (Caffe's DataTransformer checks CV_8U)")
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32)


def transform(img: np.ndarray, t: Any, mean: np.ndarray | None, train: bool,
              rng: np.random.Generator | None, decoded: bool = False) -> np.ndarray:
    """Caffe's ``DataTransformer::Transform`` of one C x H x W image (see the module doc);
    ``rng`` draws mirror (when ``t.mirror``), then the crop's row and column offsets (in
    TRAIN); ``decoded``: the image came through OpenCV (Caffe's ``cv::Mat`` path)."""
    c, h, w = img.shape
    crop = t.crop_size
    mirror = bool(t.mirror and rng is not None and rng.integers(2))
    y = x = 0
    if crop:
        if h < crop or w < crop:
            raise UsageError(f"crop_size {crop} exceeds a {h}x{w} image (Caffe's check "
                             f"datum_height >= crop_h fails)")
        if train:
            assert rng is not None
            y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        else:
            y, x = (h - crop) // 2, (w - crop) // 2
        hh = ww = crop
    else:
        hh, ww = h, w
    out = img[:, y:y + hh, x:x + ww]
    if mirror and decoded:  # the cv::Mat path indexes the mean at the mirrored column
        out = out[:, :, ::-1]
    if mean is not None:
        if mean.shape != img.shape:
            raise UsageError(f"the mean file is {'x'.join(map(str, mean.shape))}, the images "
                             f"{c}x{h}x{w} (Caffe checks they are equal)")
        if decoded and (hh, ww) != (h, w):
            raise UsageError(f"crop_size {crop} with a mean_file on {h}x{w} images read "
                             "through OpenCV (encoded records, ImageData): Caffe's check that "
                             "the cropped image has the mean's size fails; use mean_value")
        out = out - mean[:, y:y + hh, x:x + ww]
    elif len(t.mean_value):
        values = np.asarray(t.mean_value, np.float32)
        if len(values) == 1:
            values = np.repeat(values, c)
        elif len(values) != c:
            raise UsageError(f"{len(values)} mean_value(s) for {c}-channel images "
                             "(Caffe wants 1 or one per channel)")
        out = out - values[:, None, None]
    if t.HasField("scale"):
        out = out * np.float32(t.scale)
    if mirror and not decoded:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


# ---------------------------------------------------------------- batches


class Batches(torch.utils.data.IterableDataset):
    """Batch ``j = start, start + 1 ...`` of one rank's stream (see the module doc),
    each a dict top -> tensor; a DataLoader worker ``k`` of ``K`` makes the batches
    with ``j mod K == k``, which the DataLoader hands out in order."""

    def __init__(self, feed: Feed, rank: int, world: int, seed: int, start: int = 0) -> None:
        self.feed, self.rank, self.world, self.seed, self.start = feed, rank, world, seed, start

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        k, workers = (info.id, info.num_workers) if info else (0, 1)
        reader = Reader(self.feed)
        j = self.start + k
        while True:
            yield self.batch(reader, j)
            j += workers

    def batch(self, reader: Reader, j: int) -> dict[str, torch.Tensor]:
        f = self.feed
        b = f.batch_size
        indices = [(self.rank + self.world * (j * b + i)) % f.count for i in range(b)]
        rng = None
        if f.train:
            rng = np.random.default_rng([self.seed, self.rank, j])
        elif reader.transform.mirror:  # Caffe mirrors in TEST too
            rng = np.random.default_rng([self.seed, self.rank, j, 1])
        items = [reader.record(i) for i in indices]
        if f.type == "HDF5Data":
            return {t: torch.from_numpy(np.stack([it[0][t] for it in items]))  # type: ignore
                    for t in f.tops}
        images = [transform(img, reader.transform, f.mean, f.train, rng, decoded)  # type: ignore
                  for img, _, decoded in items]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise UsageError(f"{f.source}: images of different sizes in one batch "
                             f"({', '.join('x'.join(map(str, s)) for s in sorted(shapes))}); "
                             "give crop_size")
        out = {f.tops[0]: torch.from_numpy(np.stack(images))}
        if len(f.tops) > 1:
            out[f.tops[1]] = torch.tensor([lab for _, lab, _ in items], dtype=torch.float32)
        return out


def loader(feed: Feed, *, rank: int, world: int, seed: int, start: int = 0,
           workers: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of batches, made by ``workers`` processes (0: in this one)."""
    data = Batches(feed, rank, world, seed, start)
    dl = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers,
                                     prefetch_factor=2 if workers else None,
                                     persistent_workers=False)
    return iter(dl)
