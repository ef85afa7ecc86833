#!/usr/bin/env python3
"""Build a CIFAR shake-shake network (two shaken residual branches per block).

    python apps/cifar/build_shake_shake.py --depth 26 --initial_channels 96 -o out/shake_shake/

writes train.prototxt (TRAIN and TEST), test.prototxt and deploy.prototxt into
out/shake_shake/ and prints the net's size; ``--help`` lists the knobs.  The same as
``pynetbuilder build shake_shake ...``.  The train net's per-sample random mixing is
the Caffe Python layer pynetbuilder.caffe_layers.shake_shake.ShakeShake: pycaffe in
the project's venv and its ``.venv/bin/caffe`` tool import it as they are; another
Caffe needs this project on its PYTHONPATH.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.commands.build import app  # noqa: E402

if __name__ == "__main__":
    sys.exit(app("shake_shake", "build_shake_shake.py"))
