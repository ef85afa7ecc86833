"""``pynetbuilder data SOURCE -o OUT``: an image folder, a ``.npz`` or the digits as
Caffe data.

SOURCE is a folder with one sub-folder per class (``SOURCE/cat/1.png``) or a
``.npz`` file with ``images`` (N x C x H x W, uint8 0..255) and ``labels`` (N
integers), optionally ``class_names``; ``--digits`` takes scikit-learn's
handwritten digits instead.  The images are split (stratified, shuffled with
``--seed``) and written to OUT: ``train_lmdb`` and ``test_lmdb`` (``--format
lmdb``, Data layer) or ``train.h5`` + ``train.txt`` and ``test.h5`` + ``test.txt``
(``--format hdf5``, HDF5Data: ``source`` is the ``.txt``), ``labels.txt`` (class
names in label order), with ``--mean binaryproto`` the train part's
``mean.binaryproto``; the train part's per-channel means are printed.  Every
target is checked before anything is read; the outputs are one set
(:class:`pynetbuilder.io.OutputSet`): they appear together when all are complete,
replacing old ones (``--overwrite``) only then; a failure leaves the old ones as they were.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pynetbuilder.cli import Parser
from pynetbuilder.dataio import (
    DIGITS_CLASSES,
    DataError,
    as_labels,
    digits,
    mean_values,
    read_image_folder,
    resize_images,
    split_indices,
    write_hdf5,
    write_lmdb,
    write_mean_binaryproto,
)
from pynetbuilder.dataio.hdf5 import list_path
from pynetbuilder.io import OutputSet, check_target

FORMATS = ("lmdb", "hdf5")
MEANS = ("values", "binaryproto", "none")


def parser() -> Parser:
    p = Parser(prog="pynetbuilder data",
               description="Write an image folder (one sub-folder per class), a .npz file "
               "(images N x C x H x W uint8, labels) or the digits as Caffe data.")
    p.add_argument("source", nargs="?", metavar="FOLDER_OR_NPZ",
                   help="image folder (SOURCE/<class>/<image>) or .npz with images, labels")
    p.add_argument("--digits", action="store_true",
                   help="use scikit-learn's handwritten digits (1,797 gray images, 10 classes)")
    p.add_argument("-o", "--output_folder", metavar="OUT", required=True,
                   help="folder for the databases, labels.txt and mean.binaryproto")
    p.add_argument("--format", choices=FORMATS, default="lmdb",
                   help="lmdb (Data layer, default) or hdf5 (HDF5Data)")
    p.add_argument("--size", nargs="+", type=int, metavar="N",
                   help="resize every image to S x S or H x W (default: keep; image "
                   "folders must then be one size; digits: 16)")
    p.add_argument("--gray", action="store_true",
                   help="read an image folder as 1-channel gray (default: 3 channels, BGR)")
    p.add_argument("--test_fraction", "--test-fraction", type=float, default=0.2,
                   help="fraction of each class held out for test, in [0, 1); 0 = no test "
                   "part (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed (default: 0)")
    p.add_argument("--mean", choices=MEANS, default="values",
                   help="print the per-channel means (values, default), also write "
                   "OUT/mean.binaryproto (binaryproto), or neither (none)")
    p.add_argument("--scale", type=float, default=None,
                   help="hdf5 only: store values x SCALE (HDF5Data cannot scale; for lmdb "
                   "set transform_param scale in the net)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (default: shown when stderr is a terminal)")
    return p


def _check_args(args: argparse.Namespace) -> tuple[int, int] | None:
    if args.digits == bool(args.source):
        raise DataError("give an image folder or .npz file, or --digits (one of them)")
    size = None
    if args.size is not None:
        if len(args.size) not in (1, 2) or min(args.size) < 1:
            raise DataError(f"--size takes one or two positive integers (S or H W), got "
                            f"{' '.join(map(str, args.size))}")
        size = (args.size[0], args.size[-1])
    if not 0 <= args.test_fraction < 1:
        raise DataError(f"--test_fraction must be in [0, 1), got {args.test_fraction:g}")
    if args.scale is not None:
        if args.format != "hdf5":
            raise DataError("--scale applies to --format hdf5 only (HDF5Data cannot "
                            "transform); for lmdb set transform_param scale in the net")
        if not np.isfinite(args.scale) or args.scale == 0:
            raise DataError(f"--scale must be a finite non-zero number, got {args.scale:g}")
    if args.gray and (args.digits or not Path(args.source).is_dir()):
        raise DataError("--gray applies to an image folder (the digits are gray already; "
                        "a .npz is written with its own channels)")
    return size


def _load_npz(path: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray,
                                                                 list[str]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as a .npz file: {exc}") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise DataError(f"{path} has no array {missing[0]!r} (it has: "
                        f"{', '.join(arrays) or 'none'}); expected 'images' (N x C x H x W "
                        "uint8) and 'labels' (N integers), optionally 'class_names'")
    images, labels = arrays["images"], arrays["labels"]
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    labels = as_labels(labels, len(images), len(names) if names else None)
    if names is None:
        names = [str(k) for k in range(int(labels.max()) + 1)]
    return resize_images(images, size), labels, names


def _load(args: argparse.Namespace, size: tuple[int, int] | None):
    if args.digits:
        images, labels = digits(8)
        return resize_images(images, size or (16, 16)), labels, list(DIGITS_CLASSES)
    source = Path(args.source)
    if source.is_dir():
        return read_image_folder(source, size=size, channels=1 if args.gray else 3,
                                 progress=args.progress)
    if source.suffix.lower() == ".npz" and source.is_file():
        return _load_npz(source, size)
    what = "does not exist" if not source.exists() else "is neither a folder nor a .npz file"
    raise DataError(f"{source} {what}: give an image folder (one sub-folder per class) or a "
                    ".npz file with 'images' and 'labels'")


def _targets(out: Path, args: argparse.Namespace) -> dict[str, list[Path]]:
    parts = ("train", "test") if args.test_fraction > 0 else ("train",)
    if args.format == "lmdb":
        targets = {part: [out / f"{part}_lmdb"] for part in parts}
    else:
        targets = {part: [out / f"{part}.h5", list_path(out / f"{part}.h5")] for part in parts}
    targets["labels"] = [out / "labels.txt"]
    if args.mean == "binaryproto":
        targets["mean"] = [out / "mean.binaryproto"]
    return targets


def main(argv: Sequence[str]) -> None:
    args = parser().parse_args(argv)
    size = _check_args(args)
    out = Path(args.output_folder)
    if out.exists() and not out.is_dir():
        raise DataError(f"output folder {out} is a file")
    targets = _targets(out, args)
    for paths in targets.values():
        for path in paths:
            check_target(path, args.overwrite, DataError)

    images, labels, names = _load(args, size)
    as_labels(labels, len(images), len(names))
    train, test = split_indices(labels, args.test_fraction, args.seed)
    parts = {"train": train, "test": test} if args.test_fraction > 0 else {"train": train}
    scale = args.scale if args.scale is not None else 1.0

    written: list[Path] = []
    stored = images[train] if scale == 1 else images[train].astype(np.float32) * scale
    with OutputSet(overwrite=args.overwrite, error=DataError) as outputs:
        for part, index in parts.items():
            target = targets[part][0]
            if args.format == "lmdb":
                write_lmdb(target, images[index], labels[index], progress=args.progress,
                           overwrite=args.overwrite, num_classes=len(names), outputs=outputs)
            else:
                write_hdf5(target, images[index], labels[index], scale=scale,
                           overwrite=args.overwrite, num_classes=len(names),
                           progress=args.progress, outputs=outputs)
            written += targets[part]
        outputs.write(targets["labels"][0], "".join(f"{name}\n" for name in names))
        written += targets["labels"]
        if args.mean == "binaryproto":
            write_mean_binaryproto(targets["mean"][0], stored, overwrite=args.overwrite,
                                   outputs=outputs)
            written += targets["mean"]

    for path in written:
        print(f"wrote {path}")
    n, c, h, w = images.shape
    colour = ("gray" if c == 1 else "BGR") if args.digits or Path(args.source).is_dir() \
        else "channels as given"
    counts = ", ".join(f"{part} {len(index)}" for part, index in parts.items())
    print(f"{counts} images; {len(names)} classes; {c}x{h}x{w} (C x H x W, {colour}); "
          f"{args.format}")
    if args.mean != "none":
        values = ",".join(f"{v:.6g}" for v in mean_values(stored))
        print(f"mean values of the train part ({colour}): {values}")
