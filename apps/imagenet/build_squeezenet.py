#!/usr/bin/env python3
"""Build SqueezeNet 1.0 or 1.1: train/test/deploy prototxt and its size.

    python apps/imagenet/build_squeezenet.py [--version 1_0|1_1] [--num_classes 1000] \
        [-o OUTPUT_FOLDER] [--table]
    ...
    Learnable params: 1,235,496  MACs: 349,151,936  ...     (--version 1_1)

Data flags (--train_source, --crop_size, --mean, ...) as every build script;
``--help`` lists them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("squeezenet", "build_squeezenet.py"))
