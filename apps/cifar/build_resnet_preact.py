#!/usr/bin/env python3
"""Build a CIFAR pre-activation ResNet (BN-ReLU-conv blocks, 3 stages).

    python apps/cifar/build_resnet_preact.py --depth 164 --block_type bottleneck -o out/rp164/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
the -o folder and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build resnet_preact ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("resnet_preact", "build_resnet_preact.py"))
