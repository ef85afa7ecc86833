"""Real datasets that ship inside installed packages (no network at run time)."""

from __future__ import annotations

import numpy as np

from pynetbuilder.dataio.checks import DataError
from pynetbuilder.dataio.images import resize_images

DIGITS_CLASSES = [str(d) for d in range(10)]


def digits(size: int = 16, *, resample: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits (1,797 images, 8x8, values 0..16, labels 0..9).

    Returns ``(images, labels)``: images uint8 N x 1 x ``size`` x ``size``, the values
    scaled to 0..255 (``round(v * 255 / 16)``), then resized with Pillow's
    ``bilinear`` filter (pixel centres aligned, edges repeated) or ``nearest``;
    ``size`` 8 keeps the originals.  Labels int64 0..9, in scikit-learn's order.
    Needs scikit-learn (its data files, not the network).
    """
    if not isinstance(size, int) or size < 1:
        raise DataError(f"the digits' size must be a positive integer, got {size!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset comes with scikit-learn: "
                        "pip install scikit-learn") from None
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return resize_images(images, size, resample=resample), bunch.target.astype(np.int64)
