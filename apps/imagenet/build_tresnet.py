#!/usr/bin/env python3
"""Build TResNet-M/L/XL (ImageNet): train/test/deploy prototxt and its size.

    python apps/imagenet/build_tresnet.py --variant M -o out/tresnet_m
    ...
    Learnable params: 31,389,032  MACs: 5,734,965,248  ...

Knobs: --variant M|L|XL (default M), --num_classes N (default 1000); the data
flags (--train_source, --crop_size, ...) and -o / --json / --table as for every
family (``pynetbuilder build tresnet --help``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("tresnet", "build_tresnet.py"))
