"""The one reader of Caffe's data sources: how many records, and the first one's shape.

A source is what a data layer's ``source`` names, read as the pinned Caffe reads it:

- ``LMDB`` (``Data`` / ``AnnotatedData``, ``backend: LMDB``): a folder holding
  ``data.mdb``; one serialized ``Datum`` (``AnnotatedDatum``) per key, read in
  key order.  Opened read-only without a lock file: nothing is written beside it.
- ``LEVELDB`` (``backend: LEVELDB``): a LevelDB folder, read with ``plyvel``
  (LevelDB itself takes the folder's ``LOCK`` and writes its ``LOG`` there, as
  Caffe's own reader does; a database Caffe holds open cannot be read meanwhile).
- ``HDF5`` (``HDF5Data``): a text file listing ``.h5`` files, separated by any
  white space (Caffe reads it with ``>>``); every file holds one dataset per top,
  rows along the first axis.
- ``IMAGE_LIST`` (``ImageData``): a text file with one ``path label`` per line
  (the path is the line up to its last space, after ``root_folder``); Caffe
  counts every line it reads.

The shape of a ``Datum`` is ``channels x height x width``; an encoded Datum
(``encoded: true``, JPEG/PNG bytes in ``data``) has the shape of its decoded
image, read from the image header with Pillow: as OpenCV's ``imdecode`` gives it
to Caffe's ``DataTransformer`` (``-1``, unchanged, unless ``force_color`` (3
channels) or ``force_gray`` (1)), e.g. a gray PNG 1 channel, an RGBA or
transparent PNG 4, a CMYK JPEG 3.  ImageData's images are read with ``is_color``
(3 channels, else 1).  A colour or gray read (not the unchanged one) applies the
EXIF orientation, as OpenCV does.

Relative paths inside list files (HDF5 files, images without ``root_folder``)
are looked up in ``bases`` in order (Caffe opens them from its working folder).
Errors are :class:`~pynetbuilder.errors.UsageError` naming the source.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynetbuilder import kinds
from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2

KINDS = ("LMDB", "LEVELDB", "HDF5", "IMAGE_LIST")
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Options:
    """How a layer reads its images (the fields of its parameters that change shapes)."""

    force_color: bool = False  # transform_param.force_color (encoded Datum)
    force_gray: bool = False  # transform_param.force_gray (encoded Datum)
    is_color: bool = True  # image_data_param.is_color (ImageData)
    root_folder: str = ""  # image_data_param.root_folder (ImageData)
    tops: tuple[str, ...] = ()  # HDF5Data's tops: the datasets it loads
    annotated: bool = False  # AnnotatedData: records are AnnotatedDatum


@dataclass(frozen=True)
class FirstRecord:
    """The first record of a source.

    ``shape``: ``(channels, height, width)`` of its image (HDF5: the first top's row
    shape); ``encoded``: stored as an image file (an encoded Datum; ImageData's
    files) with ``image_format`` its format (``PNG``, ``JPEG`` ...); ``label``: the
    Datum's label; ``boxes``: AnnotatedDatum's number of boxes (None when the
    record has no annotation type); ``datasets``: HDF5's row shape of each dataset."""

    shape: tuple[int, ...]
    encoded: bool = False
    image_format: str | None = None
    label: int | None = None
    boxes: int | None = None
    datasets: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceInfo:
    """A source's kind, path, record count and first record (None when empty)."""

    kind: str
    path: Path
    count: int
    first: FirstRecord | None


def kind_of(layer_type: str, backend: str | int = "LMDB") -> str:
    """The source kind a layer type reads (``backend``: data_param's, name or number)."""
    reads = kinds.kind_of(layer_type).reads  # the registry of layer kinds
    if reads == "database":
        if isinstance(backend, int):
            backend = caffe_pb2.DataParameter.DB.Name(backend)
        return backend
    if reads not in KINDS:
        raise UsageError(f"a {layer_type} layer reads no data source this reader knows")
    return reads


def layer_source(layer: Any) -> tuple[str, str, Options]:
    """``(kind, source, options)`` of a data layer (a ``LayerParameter``)."""
    t = layer.transform_param
    if layer.type in ("Data", "AnnotatedData"):
        p = layer.data_param
        return (kind_of(layer.type, p.backend), p.source,
                Options(force_color=t.force_color, force_gray=t.force_gray,
                        annotated=layer.type == "AnnotatedData"))
    if layer.type == "ImageData":
        p = layer.image_data_param
        return "IMAGE_LIST", p.source, Options(is_color=p.is_color,
                                               root_folder=p.root_folder)
    if layer.type == "HDF5Data":
        return "HDF5", layer.hdf5_data_param.source, Options(tops=tuple(layer.top))
    raise UsageError(f"layer {layer.name!r} ({layer.type}) reads no data source")


def resolve(name: str | Path, bases: Sequence[Path] = ()) -> Path:
    """``name`` as given if absolute, else the first of ``bases`` / name that exists
    (the first candidate when none does; the working folder without ``bases``)."""
    p = Path(name)
    if p.is_absolute():
        return p
    candidates = [Path(b) / p for b in bases] or [p]
    return next((c for c in candidates if c.exists() or c.is_symlink()), candidates[0])


# ---------------------------------------------------------------- key-value databases


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UsageError(f"data source kind must be one of {', '.join(KINDS)}, not {kind!r}")


@contextlib.contextmanager
def _lmdb(path: Path) -> Iterator[Any]:
    import lmdb

    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise UsageError(f"LMDB source {path} {what}: Caffe's LMDB backend opens a folder "
                         "holding data.mdb")
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    except lmdb.Error as exc:
        raise UsageError(f"LMDB source {path} is not a readable LMDB: {exc}") from None
    try:
        yield env
    finally:
        env.close()


@contextlib.contextmanager
def _leveldb(path: Path) -> Iterator[Any]:
    try:
        import plyvel
    except ImportError:
        raise UsageError("reading a LevelDB source needs the plyvel package "
                         "(pip install plyvel)") from None
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise UsageError(f"LevelDB source {path} {what}: a LevelDB is a folder")
    if not (path / "CURRENT").is_file():  # LevelDB would write LOCK and LOG into it first
        raise UsageError(f"LevelDB source {path} is not a readable LevelDB (no CURRENT file)")
    try:
        db = plyvel.DB(str(path), create_if_missing=False)
    except (plyvel.Error, OSError) as exc:
        raise UsageError(f"LevelDB source {path} is not a readable LevelDB: {exc}") from None
    try:
        yield db
    finally:
        db.close()


def records(path: str | Path, kind: str) -> Iterator[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of an LMDB or LevelDB source, in Caffe's (key) order."""
    path = Path(path)
    if kind == "LMDB":
        with _lmdb(path) as env, env.begin() as txn:
            yield from txn.cursor()
    elif kind == "LEVELDB":
        with _leveldb(path) as db, db.iterator() as it:
            yield from it
    else:
        raise UsageError(f"{path}: only LMDB and LEVELDB sources hold records, not {kind}")


def parse_datum(value: bytes, annotated: bool = False) -> tuple[Any, Any]:
    """``(datum, annotated record or None)`` of a database value."""
    if annotated:
        record = caffe_pb2.AnnotatedDatum.FromString(value)
        return record.datum, record
    return caffe_pb2.Datum.FromString(value), None


def datum_first(value: bytes, options: Options = Options()) -> FirstRecord:
    """What Caffe's data layer sees of one database value (see the module doc)."""
    datum, record = parse_datum(value, options.annotated)
    boxes = None
    if record is not None and record.HasField("type"):
        boxes = sum(len(g.annotation) for g in record.annotation_group)
    if datum.encoded:
        mode = "color" if options.force_color else "gray" if options.force_gray else "unchanged"
        shape, fmt = image_shape(datum.data, mode)
        return FirstRecord(shape, True, fmt, datum.label, boxes)
    return FirstRecord((datum.channels, datum.height, datum.width), False, None,
                       datum.label, boxes)


# ---------------------------------------------------------------- images


def image_shape(data: bytes | Path, mode: str = "unchanged") -> tuple[tuple[int, int, int],
                                                                     str | None]:
    """``((channels, height, width), format)`` of an image file or its bytes, as
    OpenCV decodes it: ``mode`` ``unchanged`` (``imdecode(-1)``), ``color`` (3
    channels) or ``gray`` (1).  Only the header is read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            width, height = image.size
            fmt = image.format
            if mode == "unchanged":
                channels = _unchanged_channels(image)
            else:
                channels = 3 if mode == "color" else 1
                orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
                if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
                    width, height = height, width
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"cannot read the image {'record' if isinstance(data, bytes) else data}"
                         f": {exc}") from None
    return (channels, height, width), fmt


def _unchanged_channels(image: Any) -> int:
    """Channels OpenCV's ``imdecode(..., IMREAD_UNCHANGED)`` gives an image Pillow opened."""
    mode, fmt = image.mode, image.format
    transparent = "transparency" in image.info
    if mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
        return 1
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return 4
    if mode == "CMYK":
        return 4 if fmt == "TIFF" else 3  # libjpeg gives OpenCV 3 channels
    if mode in ("RGB", "P"):
        return 4 if fmt == "PNG" and transparent else 3
    return 3


def _image_list_lines(path: Path) -> list[str]:
    """The lines of a list file as C++ ``std::getline`` reads them."""
    try:
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read the list file {path}: {exc.strerror}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _image_name(line: str) -> str:
    """ImageData's file name: the line up to its last space (all of it without one)."""
    pos = line.rfind(" ")
    return line if pos < 0 else line[:pos]


# ---------------------------------------------------------------- HDF5


def _hdf5_files(path: Path) -> list[str]:
    try:
        names = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the HDF5 list file {path}: {exc}") from None
    if not names:
        raise UsageError(f"the HDF5 list file {path} names no file (Caffe needs at least one)")
    return names


@contextlib.contextmanager
def _h5(name: str, listing: Path, bases: Sequence[Path]) -> Iterator[Any]:
    import h5py

    h5 = resolve(name, bases)
    try:
        fh = h5py.File(h5, "r")
    except OSError as exc:
        raise UsageError(f"{listing} lists {name}, which is not a readable HDF5 file "
                         f"({exc})") from None
    try:
        yield fh
    finally:
        fh.close()


def _hdf5_rows(fh: Any, tops: Sequence[str], listing: Path, name: str) -> int:
    import h5py

    datasets = [k for k, v in fh.items() if isinstance(v, h5py.Dataset)]
    top = tops[0] if tops else ("data" if "data" in datasets else (datasets or [None])[0])
    if top is None or top not in datasets:
        raise UsageError(f"{listing} lists {name}, which has no dataset "
                         f"{top or '(none at all)'!r} (it has: {', '.join(datasets) or 'none'})")
    return int(fh[top].shape[0]) if fh[top].shape else 0


# ---------------------------------------------------------------- the reader


def first_record(path: str | Path, kind: str, options: Options = Options(), *,
                 bases: Sequence[Path] = ()) -> FirstRecord | None:
    """The first record of a source (None when it holds none); UsageError when the
    source is missing or unreadable."""
    _check_kind(kind)
    path = Path(path)
    if kind in ("LMDB", "LEVELDB"):
        _exists(path, kind)
        found = records(path, kind)
        with contextlib.closing(found):
            for _, value in found:
                return datum_first(value, options)
        return None
    _exists(path, kind)
    if kind == "IMAGE_LIST":
        lines = _image_list_lines(path)
        if not lines:
            return None
        name = options.root_folder + _image_name(lines[0])
        image = Path(name) if options.root_folder else resolve(name, bases)
        shape, fmt = image_shape(image, "color" if options.is_color else "gray")
        return FirstRecord(shape, True, fmt)
    names = _hdf5_files(path)
    with _h5(names[0], path, bases) as fh:
        import h5py

        datasets = {k: tuple(int(d) for d in v.shape[1:]) for k, v in fh.items()
                    if isinstance(v, h5py.Dataset)}
        tops = options.tops or tuple(datasets)
        missing = [t for t in tops if t not in datasets]
        if missing:
            raise UsageError(f"{path} lists {names[0]}, which has no dataset {missing[0]!r} "
                             f"(it has: {', '.join(datasets) or 'none'})")
        if not tops:
            raise UsageError(f"{path} lists {names[0]}, which holds no dataset")
        return FirstRecord(datasets[tops[0]], datasets=datasets)


def count(path: str | Path, kind: str, options: Options = Options(), *,
          bases: Sequence[Path] = ()) -> int:
    """How many records Caffe reads from a source; UsageError when the source is
    missing or unreadable (or an image list has an empty line, which Caffe would
    fail to load)."""
    _check_kind(kind)
    path = Path(path)
    _exists(path, kind)
    if kind == "LMDB":
        with _lmdb(path) as env:
            return int(env.stat()["entries"])
    if kind == "LEVELDB":
        with _leveldb(path) as db, db.iterator(include_value=False) as it:
            return sum(1 for _ in it)
    if kind == "IMAGE_LIST":
        lines = _image_list_lines(path)
        for number, line in enumerate(lines, 1):
            if not _image_name(line).strip():
                raise UsageError(f"line {number} of the image list {path} names no image; "
                                 "Caffe's ImageData would fail to load it")
        return len(lines)
    total = 0
    for name in _hdf5_files(path):
        with _h5(name, path, bases) as fh:
            total += _hdf5_rows(fh, options.tops, path, name)
    return total


def describe(path: str | Path, kind: str, options: Options = Options(), *,
             bases: Sequence[Path] = ()) -> SourceInfo:
    """Count and first record of a source."""
    n = count(path, kind, options, bases=bases)
    return SourceInfo(kind, Path(path), n, first_record(path, kind, options, bases=bases))


def _exists(path: Path, kind: str) -> None:
    if not path.exists():
        what = {"LMDB": "LMDB", "LEVELDB": "LevelDB", "HDF5": "HDF5 list file",
                "IMAGE_LIST": "image list"}[kind]
        raise UsageError(f"the {what} {path} does not exist")
