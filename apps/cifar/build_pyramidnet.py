#!/usr/bin/env python3
"""Build a CIFAR PyramidNet (additive widening, zero-padded shortcuts).

    python apps/cifar/build_pyramidnet.py --depth 110 --alpha 84 --block_type basic \\
        -o out/pyramidnet/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
out/pyramidnet/ and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build pyramidnet ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("pyramidnet", "build_pyramidnet.py"))
