"""The mean a net subtracts: per-channel values, or a mean image as ``mean.binaryproto``.

``mean.binaryproto`` is what Caffe's ``compute_image_mean`` writes: a serialized
``BlobProto`` with ``num`` 1, ``channels``, ``height``, ``width`` (the legacy 4-D
fields) and the mean image's C x H x W values as float32 ``data``.  A Data layer's
``transform_param { mean_file: ... }`` subtracts it pixel by pixel (at the crop's
offset when cropping), so it must have the stored images' size.  Means are of the
images as given (BGR for colour images read by this package), summed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pynetbuilder.dataio.checks import DataError, as_images
from pynetbuilder.io import OutputSet, joining
from pynetbuilder.schema import caffe_pb2


def mean_image(images: np.ndarray | Sequence) -> np.ndarray:
    """The mean over N of N x C x H x W images: a C x H x W float64 array."""
    return as_images(images).mean(axis=0, dtype=np.float64)


def mean_values(images: np.ndarray | Sequence) -> list[float]:
    """One mean per channel (over images, rows and columns), for ``mean_value``."""
    return [float(v) for v in as_images(images).mean(axis=(0, 2, 3), dtype=np.float64)]


def write_mean_binaryproto(path: str | Path, images: np.ndarray | Sequence, *,
                           overwrite: bool = False, outputs: OutputSet | None = None) -> Path:
    """Write the mean image of ``images`` as a ``mean.binaryproto`` at ``path`` (atomic;
    an existing file is refused unless ``overwrite``; ``outputs``: join that
    :class:`~pynetbuilder.io.OutputSet`).  Returns ``path``."""
    mean = mean_image(images).astype(np.float32)
    c, h, w = mean.shape
    blob = caffe_pb2.BlobProto(num=1, channels=c, height=h, width=w)
    blob.data.extend(mean.ravel().tolist())
    with joining(outputs, overwrite=overwrite, error=DataError) as out:
        out.write(path, blob.SerializeToString())
    return Path(path)


def read_mean_binaryproto(path: str | Path) -> np.ndarray:
    """A ``mean.binaryproto`` (legacy 4-D fields or ``shape``) as a C x H x W float32 array."""
    try:
        blob = caffe_pb2.BlobProto.FromString(Path(path).read_bytes())
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:  # protobuf's DecodeError
        raise DataError(f"{path} is not a BlobProto (mean.binaryproto): {exc}") from None
    dims = list(blob.shape.dim) or [blob.num, blob.channels, blob.height, blob.width]
    data = np.asarray(blob.data, np.float32)
    if data.size != int(np.prod(dims)) or data.size == 0:
        raise DataError(f"{path}: shape {dims} does not match its {data.size} values")
    return data.reshape(dims[-3:]) if len(dims) >= 3 else data.reshape(dims)
