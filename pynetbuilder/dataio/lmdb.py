"""LMDB databases of Caffe ``Datum`` records: what Caffe's ``Data`` layer reads.

One record per image, keys ``%08d`` (0-based, zero-padded so that LMDB's byte order
is the image order; wider past 10^8 images), values serialized ``Datum``
messages: ``channels``, ``height``, ``width`` and ``label``, the pixels as
``data`` bytes in C x H x W order for uint8 images (what ``convert_imageset``
writes, not encoded), or as ``float_data`` for float images.  Caffe reads the
records in key order and starts again at the first after the last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lmdb
import numpy as np

from pynetbuilder.dataio.checks import DataError, as_labels, as_uint8_or_float
from pynetbuilder.dataio.progress import Progress
from pynetbuilder.io import OutputSet, joining
from pynetbuilder.schema import caffe_pb2

PAGE = 4096
COMMIT_EVERY = 1000  # records per write transaction (bounds memory on big sets)


def _datum(image: np.ndarray, label: int) -> bytes:
    """One image (C x H x W) and its label as a serialized Caffe Datum."""
    c, h, w = image.shape
    datum = caffe_pb2.Datum(channels=c, height=h, width=w, label=label)
    if image.dtype == np.uint8:
        datum.data = image.tobytes()
    else:
        datum.float_data.extend(image.ravel().tolist())
    return datum.SerializeToString()


def _estimated_map_size(count: int, record: int) -> int:
    """A generous LMDB size limit: every record on its own pages, plus slack (the file
    grows only as far as it is used)."""
    pages = math.ceil((record + 64) / PAGE) + 1
    return count * pages * PAGE + (64 << 20)


def write_lmdb(path: str | Path, images: np.ndarray | Sequence, labels: np.ndarray | Sequence,
               *, progress: bool | None = None, overwrite: bool = False,
               num_classes: int | None = None, map_size: int | None = None,
               outputs: OutputSet | None = None) -> Path:
    """Write ``images`` (N x C x H x W) and ``labels`` as an LMDB folder at ``path``.

    uint8 images go into ``Datum.data`` (bytes); float images into
    ``Datum.float_data``; other integer arrays must hold 0..255.  Labels must be
    integers in ``0 .. num_classes-1`` (when given; else non-negative int32).
    Everything is checked before anything is written; the database is built in a
    hidden folder beside ``path`` and renamed to ``path`` only when complete, so on
    any failure nothing is left at ``path`` (an existing ``path`` is refused unless
    ``overwrite``, and is replaced only by a complete new one).  ``map_size`` caps
    the database size in bytes (default: estimated from the records, grown if
    short).  ``progress``: None = a bar on stderr when it is a terminal.
    ``outputs``: stage the database in this :class:`~pynetbuilder.io.OutputSet`
    instead (it appears when that set is committed, with the set's other outputs).
    Returns ``path``, which a Data layer's ``data_param.source`` names (backend LMDB).
    """
    arr = as_uint8_or_float(images)
    labs = as_labels(labels, arr.shape[0], num_classes)
    target = Path(path)
    count = arr.shape[0]
    width = max(8, len(str(count - 1)))
    grow = map_size is None
    size = map_size or _estimated_map_size(count, len(_datum(arr[0], int(labs[0]))))
    with joining(outputs, overwrite=overwrite, error=DataError) as out:
        tmp = out.folder(target)
        env = lmdb.open(str(tmp), map_size=size, subdir=True, meminit=False)
        try:
            with Progress(count, f"writing {target.name}", enabled=progress) as bar:
                start = 0
                while start < count:
                    stop = min(start + COMMIT_EVERY, count)
                    try:
                        with env.begin(write=True) as txn:
                            for i in range(start, stop):
                                txn.put(f"{i:0{width}d}".encode(), _datum(arr[i], int(labs[i])))
                    except lmdb.MapFullError:
                        if not grow:
                            raise DataError(
                                f"cannot write {target}: the LMDB map_size of {size} bytes is "
                                f"too small for {count} records (nothing was written)"
                            ) from None
                        size *= 2
                        env.set_mapsize(size)
                        continue  # the aborted transaction is written again
                    bar.update(stop - start)
                    start = stop
        except lmdb.Error as exc:
            raise DataError(f"cannot write {target}: {exc} (nothing was written)") from None
        finally:
            env.close()
    return target


def read_lmdb(path: str | Path, backend: str = "LMDB") -> tuple[np.ndarray, np.ndarray]:
    """Every Datum of an LMDB (or a LevelDB, ``backend="LEVELDB"``) in key order, read
    by :mod:`pynetbuilder.datasource`: images (N x C x H x W; uint8 when stored as
    bytes, else float32) and int64 labels.  Encoded (JPEG/PNG) records are refused."""
    from pynetbuilder import datasource
    from pynetbuilder.errors import UsageError

    path = Path(path)
    images, labels = [], []
    try:
        for key, value in datasource.records(path, backend):
            datum, _ = datasource.parse_datum(value)
            if datum.encoded:
                raise DataError(f"{path}: record {key.decode(errors='replace')} is encoded "
                                "(JPEG/PNG); only raw Datum records are read")
            shape = (datum.channels, datum.height, datum.width)
            if datum.data:
                image = np.frombuffer(datum.data, np.uint8).reshape(shape)
            else:
                image = np.asarray(datum.float_data, np.float32).reshape(shape)
            images.append(image)
            labels.append(datum.label)
    except DataError:
        raise
    except UsageError as exc:
        raise DataError(str(exc)) from None
    if not images:
        raise DataError(f"{path} holds no records")
    return np.stack(images), np.asarray(labels, np.int64)
