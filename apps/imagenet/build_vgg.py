#!/usr/bin/env python3
"""Build VGG-16 or VGG-19 (optionally with BatchNorm): train/test/deploy prototxt and its size.

    python apps/imagenet/build_vgg.py [16|19] [--use_bn] [--num_classes 1000] \
        [-o OUTPUT_FOLDER] [--table]
    ...
    Learnable params: 143,667,240  MACs: 19,632,062,464  ...     (19)

The first word picks the depth (16 when left out: the ``vgg16`` family, else
``vgg19``).  Data flags (--train_source, --crop_size, --mean, ...) as every build
script; ``--help`` lists them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.cli import run  # noqa: E402
from pynetbuilder.commands.build import main  # noqa: E402
from pynetbuilder.errors import UsageError  # noqa: E402

DEPTHS = ("16", "19")


def build(argv: list[str]) -> None:
    """An optional depth word, then ``pynetbuilder build vgg16|vgg19``'s knobs and flags."""
    depth = argv.pop(0) if argv and not argv[0].startswith("-") else DEPTHS[0]
    if depth not in DEPTHS:
        raise UsageError(f"the depth word accepts 16 or 19, got {depth!r}")
    main(argv, family_name=f"vgg{depth}", prog=f"build_vgg.py {depth}")


if __name__ == "__main__":
    sys.exit(run(lambda argv: build(list(argv or [])), sys.argv[1:], prog="build_vgg.py"))
