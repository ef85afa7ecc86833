"""Validation of the arrays the writers take, with messages a user can act on.

Conventions: images are ``N x C x H x W`` (Caffe's blob order), labels are ``N``
non-negative integers (class indices ``0 .. K-1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pynetbuilder.errors import UsageError

INT32_MAX = 2**31 - 1  # Datum.label is an int32


class DataError(UsageError):
    """A dataset (folder, arrays, labels, target path) cannot be written as given."""


def as_images(images: np.ndarray | Sequence, *, what: str = "images") -> np.ndarray:
    """``images`` as a 4-D array ``N x C x H x W`` with at least one image (dtype kept)."""
    arr = np.asarray(images)
    if arr.ndim != 4:
        hint = " (one channel? add the axis: images[:, None])" if arr.ndim == 3 else ""
        raise DataError(f"{what} must be a 4-D array N x C x H x W, got shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise DataError(f"{what} is empty: there is nothing to write")
    if min(arr.shape[1:]) == 0:
        raise DataError(f"{what} has an empty channel, height or width: shape {arr.shape}")
    if arr.dtype.kind not in "uif" or arr.dtype == np.float16:
        raise DataError(f"{what} must hold numbers (uint8 or float32), got dtype {arr.dtype}")
    return arr


def as_uint8_or_float(images: np.ndarray | Sequence) -> np.ndarray:
    """Images for a Caffe ``Datum``: uint8 as is (``data`` bytes), floats as float32
    (``float_data``); an integer array is accepted when every value is in 0..255."""
    arr = as_images(images)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError("images hold NaN or infinite values")
        return arr.astype(np.float32, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 255:
        raise DataError(
            f"integer images must be in 0..255 to be stored as bytes, got values {lo}..{hi}; "
            "rescale them, or pass float32 images (stored as Datum float_data)"
        )
    return arr.astype(np.uint8)


def as_labels(labels: np.ndarray | Sequence, count: int,
              num_classes: int | None = None) -> np.ndarray:
    """``labels`` as an int64 vector of ``count`` class indices in ``0 .. num_classes-1``.

    Refused: a length other than ``count``, a non-integer dtype (floats, bools,
    strings), a negative label, one at or above ``num_classes`` (when given) or
    above what a Datum's int32 label holds.  The message names the first offender.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be a 1-D array of N integers, got shape {arr.shape}")
    if arr.shape[0] != count:
        raise DataError(f"there are {count} images but {arr.shape[0]} labels")
    if arr.dtype.kind not in "iu":
        raise DataError(
            f"labels must be integers (class indices 0..K-1), got dtype {arr.dtype}"
            + (f" (first value {arr[0]!r})" if count else "")
        )
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"label {arr[i]} of image {i} is negative; labels are class indices "
                        "0..K-1")
    limit = INT32_MAX + 1 if num_classes is None else num_classes
    bad = np.flatnonzero(arr >= limit)
    if bad.size:
        i = int(bad[0])
        allowed = f"0..{num_classes - 1}" if num_classes is not None else f"0..{INT32_MAX}"
        raise DataError(f"label {arr[i]} of image {i} is out of range: labels must be in "
                        f"{allowed}")
    return arr
