#!/usr/bin/env python3
"""Build a VGG-like CIFAR net (3x3 conv stages + max pooling, one fc).

    python apps/cifar/build_vgg.py --n_channels 64 --n_layers 2 2 3 3 3 --use_bn -o out/vgg/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
out/vgg/ and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build vgg ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("vgg", "build_vgg.py"))
