"""Data in Caffe's formats, written by the library.

- :func:`write_lmdb`: N x C x H x W images + labels -> an LMDB of ``Datum`` records
  (the ``Data`` layer's format); :func:`read_lmdb` reads one back.
- :func:`write_hdf5`: -> an ``.h5`` file (``data``, ``label``) and the list file
  ``HDF5Data``'s ``source`` names.
- :func:`read_image_folder`: ``root/<class>/<image>`` -> BGR uint8 arrays, labels,
  class names; :func:`resize_images`.
- :func:`digits`: scikit-learn's handwritten digits, resized.
- :func:`split`, :func:`shuffle`: a stratified train/test split, seeded.
- :func:`mean_values`, :func:`write_mean_binaryproto`: the mean to subtract.

Every writer checks everything first, writes beside the target and renames into
place: on failure nothing is left at the target.  Bad input raises
:class:`DataError` (a :class:`pynetbuilder.UsageError`) with a one-line message.
"""

from pynetbuilder.dataio.checks import DataError, as_labels
from pynetbuilder.dataio.datasets import DIGITS_CLASSES, digits
from pynetbuilder.dataio.hdf5 import list_path, write_hdf5
from pynetbuilder.dataio.images import IMAGE_SUFFIXES, read_image_folder, resize_images
from pynetbuilder.dataio.lmdb import read_lmdb, write_lmdb
from pynetbuilder.dataio.mean import (
    mean_image,
    mean_values,
    read_mean_binaryproto,
    write_mean_binaryproto,
)
from pynetbuilder.dataio.progress import Progress
from pynetbuilder.dataio.split import shuffle, split, split_indices

__all__ = [
    "DIGITS_CLASSES", "IMAGE_SUFFIXES", "DataError", "Progress", "as_labels", "digits",
    "list_path", "mean_image", "mean_values", "read_image_folder", "read_lmdb",
    "read_mean_binaryproto", "resize_images", "shuffle", "split", "split_indices",
    "write_hdf5", "write_lmdb", "write_mean_binaryproto",
]
