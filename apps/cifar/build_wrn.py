#!/usr/bin/env python3
"""Build a CIFAR wide ResNet WRN-depth-k (pre-activation basic blocks).

    python apps/cifar/build_wrn.py --depth 28 --widening_factor 10 --drop_rate 0.3 -o out/wrn28_10/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
the -o folder and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build wrn ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("wrn", "build_wrn.py"))
