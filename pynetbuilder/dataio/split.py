"""Shuffling and a stratified train/test split, reproducible from a seed.

Caffe's Data layer reads a database in order and never shuffles, so the order
written is the order trained on: both functions return shuffled copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pynetbuilder.dataio.checks import DataError, as_images, as_labels


def check_seed(seed: object) -> None:
    """A seed is a non-negative integer (what NumPy's generators take)."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"the seed must be a non-negative integer, got {seed!r}")


def shuffle(images: np.ndarray | Sequence, labels: np.ndarray | Sequence,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` in one random order drawn from ``seed``."""
    arr = as_images(images)
    labs = as_labels(labels, arr.shape[0])
    check_seed(seed)
    order = np.random.default_rng(seed).permutation(arr.shape[0])
    return arr[order], labs[order]


def split_indices(labels: np.ndarray | Sequence, test_fraction: float,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and test parts, each in a random order.

    Stratified: from every class, ``round(n_class * test_fraction)`` images (halves
    rounded up), drawn at random, go to the test part, so both parts keep the
    class proportions.  ``test_fraction`` 0 gives an empty test part.
    """
    labs = np.asarray(labels)
    check_seed(seed)
    if not isinstance(test_fraction, int | float) or not 0 <= test_fraction < 1:
        raise DataError(f"the test fraction must be in [0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labs):
        members = np.flatnonzero(labs == label)
        rng.shuffle(members)
        test.append(members[: int(np.floor(len(members) * test_fraction + 0.5))])
    is_test = np.zeros(len(labs), bool)
    is_test[np.concatenate(test)] = True
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if test_fraction > 0 and not test_idx.size:
        raise DataError(f"a test fraction of {test_fraction} of {len(labs)} images leaves "
                        "the test part empty; raise it, or use 0 for no test part")
    if not train_idx.size:
        raise DataError(f"a test fraction of {test_fraction} leaves no training images")
    return rng.permutation(train_idx), rng.permutation(test_idx)


def split(images: np.ndarray | Sequence, labels: np.ndarray | Sequence, test_fraction: float,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)``: a stratified split
    (see :func:`split_indices`), both parts shuffled with ``seed``."""
    arr = as_images(images)
    labs = as_labels(labels, arr.shape[0])
    train, test = split_indices(labs, test_fraction, seed)
    return arr[train], labs[train], arr[test], labs[test]
