#!/usr/bin/env python3
"""Build a CIFAR ResNet (post-activation; basic or bottleneck blocks, 3 stages).

    python apps/cifar/build_resnet.py --depth 110 --block_type basic -o out/resnet110/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
the -o folder and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build resnet ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("resnet", "build_resnet.py"))
