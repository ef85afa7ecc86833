"""Image folders (one sub-folder per class) to arrays, and resizing of image arrays.

Conventions, as Caffe's ``convert_imageset`` (OpenCV) stores images: C x H x W
uint8, colour channels in **BGR** order, EXIF orientation applied.  Classes are the
sub-folders' names sorted (labels 0..K-1 in that order); a class's images are the
files under its folder (recursively, sorted by path) whose suffix is an image
suffix; hidden files and other files are ignored.  Resizing uses Pillow's
bilinear filter (antialiased when shrinking).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pynetbuilder.dataio.checks import DataError, as_images, empty_images
from pynetbuilder.dataio.progress import Progress

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif",
                  ".tiff", ".webp")
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
Size = int | tuple[int, int] | Sequence[int] | None


def as_size(size: Size) -> tuple[int, int] | None:
    """``None``, ``S`` (square) or ``(H, W)`` as ``(H, W)`` of positive integers."""
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in hw):
        raise DataError(f"size must be a positive integer or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def _is_image(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
            and not path.name.startswith("."))


def class_files(root: str | Path) -> tuple[list[str], list[list[Path]]]:
    """Class names (sorted sub-folders of ``root``) and each class's image files."""
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DataError(f"image folder {root} {what}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in root.iterdir() if _is_image(p))
    if not folders:
        found = f" (it holds images such as {loose[0]})" if loose else ""
        raise DataError(f"{root} has no class sub-folders{found}: expected one sub-folder per "
                        f"class, e.g. {root}/cat/1.png, {root}/dog/2.jpg")
    if loose:
        raise DataError(f"{root} holds images outside the class sub-folders (e.g. {loose[0]}); "
                        "put every image in its class's sub-folder")
    files = []
    for folder in folders:
        found = sorted(p for p in folder.rglob("*")
                       if _is_image(p) and not any(part.startswith(".")
                                                   for part in p.relative_to(folder).parts))
        if not found:
            raise DataError(f"class folder {folder} has no images (suffixes: "
                            f"{' '.join(IMAGE_SUFFIXES)})")
        files.append(found)
    return [f.name for f in folders], files


def load_image(path: Path, channels: int) -> Image.Image:
    """One image, EXIF-rotated, as Pillow mode ``L`` (1 channel) or ``RGB`` (3)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def to_chw(img: Image.Image) -> np.ndarray:
    """A Pillow image as C x H x W uint8, colour in BGR order."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        return arr[None]
    return np.ascontiguousarray(arr[:, :, ::-1].transpose(2, 0, 1))


def read_image_folder(root: str | Path, *, size: Size = None, channels: int = 3,
                      progress: bool | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``root/<class>/<image>`` into ``(images, labels, class_names)``.

    ``images``: N x C x H x W uint8 (C = ``channels``: 3 = BGR, 1 = gray; a gray
    image is replicated into 3 channels, a colour one converted to luminance);
    ``labels``: int64, the index of the image's class in ``class_names``.  With
    ``size`` (``S`` or ``(H, W)``) every image is resized to it; without, every image
    must have the size of the first, else the message names two files that differ.
    An empty or missing folder, a class folder with no images and a file that is not
    a readable image are refused, naming the folder or file.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (gray) or 3 (BGR colour), got {channels!r}")
    hw = as_size(size)
    names, files = class_files(root)
    paths = [p for group in files for p in group]
    labels = np.concatenate([np.full(len(g), k, np.int64) for k, g in enumerate(files)])
    images: np.ndarray | None = None
    first: tuple[Path, tuple[int, int]] | None = None
    with Progress(len(paths), f"reading {Path(root).name}", enabled=progress) as bar:
        for i, path in enumerate(paths):
            img = load_image(path, channels)
            got = (img.height, img.width)
            if first is None:
                first = (path, got)
            if hw is not None and got != hw:
                img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
            elif hw is None and got != first[1]:
                raise DataError(
                    f"images differ in size: {first[0]} is {first[1][0]}x{first[1][1]} and "
                    f"{path} is {got[0]}x{got[1]} (height x width); give a size to resize "
                    "every image (--size H W), or make them equal"
                )
            if images is None:
                images = empty_images((len(paths), channels, img.height, img.width),
                                      np.uint8, f"the images of {root}")
            images[i] = to_chw(img)
            bar.update()
    assert images is not None  # class_files refuses a folder without images
    return images, labels, names


def resize_images(images: np.ndarray, size: Size, *, resample: str = "bilinear") -> np.ndarray:
    """Resize every channel of N x C x H x W images to ``size`` with Pillow
    (``bilinear`` or ``nearest``); uint8 stays uint8, other types become float32."""
    arr = as_images(images)
    hw = as_size(size)
    if resample not in RESAMPLE:
        raise DataError(f"resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
    if hw is None or hw == arr.shape[2:]:
        return arr
    dtype = np.uint8 if arr.dtype == np.uint8 else np.float32
    out = empty_images(arr.shape[:2] + hw, dtype, "the resized images")
    method = RESAMPLE[resample]
    for n in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            plane = Image.fromarray(arr[n, c].astype(dtype, copy=False))
            out[n, c] = np.asarray(plane.resize((hw[1], hw[0]), method))
    return out
