"""Validation of the arrays the writers take, with messages a user can act on.

Conventions: images are ``N x C x H x W`` (Caffe's blob order), labels are ``N``
non-negative integers (class indices ``0 .. K-1``).
"""

from __future__ import annotations

import contextlib
import math
import resource
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pynetbuilder.errors import UsageError

INT32_MAX = 2**31 - 1  # Datum.label is an int32; Caffe's blobs hold at most INT_MAX values


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


def check_image_size(channels: int, height: int, width: int) -> None:
    """Refuse images Caffe cannot hold: one image is a blob of C x H x W values, and
    ``Blob::Reshape`` checks a blob holds at most INT_MAX (the same bound as the
    ``Datum``'s int32 sizes)."""
    values = channels * height * width
    if values > INT32_MAX:
        raise DataError(f"an image of {channels}x{height}x{width} (C x H x W) holds "
                        f"{values:,} values; Caffe's blobs hold at most {INT32_MAX:,} "
                        "(INT_MAX): make the images smaller")


def _proc_kib(path: str, key: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def _read_int(path: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path(path).read_text().split()[0])
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping or being refused, as far
    as Linux says (None elsewhere): the least of ``MemAvailable``, what the cgroup's
    memory limit leaves, and what ``RLIMIT_AS`` / ``RLIMIT_DATA`` leave."""
    room = []
    if (free := _proc_kib("/proc/meminfo", "MemAvailable")) is not None:
        room.append(free)
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, used = _read_int(limit), _read_int(usage)  # "max" (no limit) reads as None
        if cap is not None and used is not None and cap < 1 << 60:
            room.append(max(0, cap - used))
    for which, key in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft = resource.getrlimit(which)[0]
        used = _proc_kib("/proc/self/status", key)
        if soft != resource.RLIM_INFINITY and used is not None:
            room.append(max(0, soft - used))
    return min(room) if room else None


def size_text(nbytes: float) -> str:
    """``559.0 GiB``, ``12.3 MiB`` ..."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} bytes" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError  # unreachable


def check_memory(needed: int, what: str, hint: str = "") -> None:
    """Refuse, before allocating, ``needed`` bytes that this machine does not have
    (:func:`available_memory`); ``what`` says what needs them."""
    available = available_memory()
    if available is not None and needed > available:
        raise DataError(f"{what} need {size_text(needed)} of memory, but only "
                        f"{size_text(available)} is available{hint}")


def empty_images(shape: tuple[int, ...], dtype: type | np.dtype, what: str) -> np.ndarray:
    """``np.empty`` for N x C x H x W images, checked first against Caffe's image size
    limit and the memory available."""
    check_image_size(*shape[1:])
    check_memory(math.prod(shape) * np.dtype(dtype).itemsize,
                 f"{what} ({shape[0]} images of {'x'.join(map(str, shape[1:]))})")
    return np.empty(shape, dtype)
