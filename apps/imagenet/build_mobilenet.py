#!/usr/bin/env python3
"""Build MobileNet v1 at a width multiplier: train/test/deploy prototxt and its size.

    python apps/imagenet/build_mobilenet.py [--width_multiplier 1.0] [--num_classes 1000] \
        [-o OUTPUT_FOLDER] [--table]
    ...
    Learnable params: 1,331,592  MACs: 149,497,088  ...     (--width_multiplier 0.5)

Data flags (--train_source, --crop_size, --mean, ...) as every build script;
``--help`` lists them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("mobilenet", "build_mobilenet.py"))
