#!/usr/bin/env python3
"""Build a CIFAR DenseNet / DenseNet-BC (dense blocks joined by transitions).

    python apps/cifar/build_densenet.py --depth 100 --block_type bottleneck --growth_rate 12 \\
        --compression_rate 0.5 -o out/densenet/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
out/densenet/ and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build densenet ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("densenet", "build_densenet.py"))
