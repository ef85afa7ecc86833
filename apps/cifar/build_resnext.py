#!/usr/bin/env python3
"""Build a CIFAR ResNeXt (bottleneck blocks with grouped 3x3 convolutions).

    python apps/cifar/build_resnext.py --depth 29 --cardinality 8 --base_channels 64 -o out/rx29/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
the -o folder and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build resnext ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("resnext", "build_resnext.py"))
