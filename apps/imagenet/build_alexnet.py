#!/usr/bin/env python3
"""Build AlexNet (torchvision's one-tower variant): train/test/deploy prototxt and its size.

    python apps/imagenet/build_alexnet.py [--num_classes 1000] [-o OUTPUT_FOLDER] [--table]
    ...
    Learnable params: 61,100,840  MACs: 714,188,480  ...

Data flags (--train_source, --crop_size, --mean, ...) as every build script;
``--help`` lists them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("alexnet", "build_alexnet.py"))
