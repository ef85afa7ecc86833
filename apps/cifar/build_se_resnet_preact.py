#!/usr/bin/env python3
"""Build a CIFAR SE pre-activation ResNet (squeeze-excitation on every block).

    python apps/cifar/build_se_resnet_preact.py --depth 110 --se_reduction 16 \\
        --preact_stage true false false -o out/se110/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
the -o folder and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build se_resnet_preact ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("se_resnet_preact", "build_se_resnet_preact.py"))
