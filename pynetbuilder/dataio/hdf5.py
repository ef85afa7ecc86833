"""HDF5 files for Caffe's ``HDF5Data`` layer, and the list file its ``source`` names.

An ``.h5`` file holds two datasets: ``data`` (float32, N x C x H x W) and
``label`` (float32, N: HDF5Data loads every dataset into a float blob).  The layer's
``hdf5_data_param.source`` is not the ``.h5`` file but a text file listing ``.h5``
files, one per line; Caffe opens those names relative to its working directory,
so the list holds the absolute path.  HDF5Data applies no transformation (no mean,
no scale): store the values the net should see (``scale`` here).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pynetbuilder.dataio.checks import DataError, as_images, as_labels
from pynetbuilder.dataio.progress import Progress
from pynetbuilder.io import OutputSet, check_target, joining

SUFFIXES = (".h5", ".hdf5")
ROWS_PER_WRITE = 1024


def list_path(h5_path: str | Path) -> Path:
    """The list file written beside ``h5_path``: ``train.h5`` -> ``train.txt``."""
    return Path(h5_path).with_suffix(".txt")


def write_hdf5(path: str | Path, images: np.ndarray | Sequence, labels: np.ndarray | Sequence,
               *, list_file: bool = True, scale: float = 1.0, overwrite: bool = False,
               num_classes: int | None = None, progress: bool | None = None,
               outputs: OutputSet | None = None) -> Path:
    """Write ``images * scale`` (N x C x H x W, stored float32) and ``labels`` to the HDF5
    file ``path`` (``.h5`` or ``.hdf5``) and, with ``list_file``, the list file beside
    it (``train.h5`` -> ``train.txt``, holding the ``.h5`` file's absolute path).

    Returns the list file, the path ``hdf5_data_param.source`` names, or without
    ``list_file`` the ``.h5`` file (then list it in a source file yourself).  Labels
    must be integers in ``0 .. num_classes-1`` (when given).  Both files are one
    :class:`~pynetbuilder.io.OutputSet` (``outputs``: join that set instead): they
    appear together when complete; an existing one is refused unless ``overwrite``.
    """
    arr = as_images(images)
    labs = as_labels(labels, arr.shape[0], num_classes)
    target = Path(path)
    if target.suffix.lower() not in SUFFIXES:
        raise DataError(f"an HDF5 file name must end in .h5 or .hdf5, got {target.name!r}")
    if not np.isfinite(scale) or scale == 0:
        raise DataError(f"scale must be a finite non-zero number, got {scale}")
    listing = list_path(target)
    check_target(target, overwrite, DataError)
    if list_file:
        check_target(listing, overwrite, DataError)
    import h5py  # loaded by this writer only

    count = arr.shape[0]
    with joining(outputs, overwrite=overwrite, error=DataError) as out:
        tmp = out.file(target)
        with h5py.File(tmp, "w") as h5, Progress(count, f"writing {target.name}",
                                                 enabled=progress) as bar:
            data = h5.create_dataset("data", shape=arr.shape, dtype="float32")
            for start in range(0, count, ROWS_PER_WRITE):
                rows = arr[start:start + ROWS_PER_WRITE].astype(np.float32)
                data[start:start + len(rows)] = rows * np.float32(scale) if scale != 1 else rows
                bar.update(len(rows))
            h5.create_dataset("label", data=labs.astype(np.float32))
        if list_file:
            out.write(listing, os.path.abspath(target) + "\n")
    return listing if list_file else target
