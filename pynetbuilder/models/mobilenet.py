"""MobileNet v1 for ImageNet (Howard et al. 2017), with its width multiplier.

- ``conv1``: 3x3 / 2 convolution to ``32 a`` channels + BN + Scale + ReLU (224 -> 112);
- 13 :class:`~pynetbuilder.legos.mobile.DepthwiseSeparable` blocks
  ``stageI_blockJ`` in five stages of widths ``a`` x 64, 128, 256, 512, 1024 with
  1, 2, 2, 6, 2 blocks; the first block of stages 2-5 has stride 2 on its
  depthwise convolution (112 -> 56 -> 28 -> 14 -> 7), every other block stride 1;
- the head: ``pool`` global average pool, ``fc`` fully connected ``num_classes``.

``a`` = ``width_multiplier``; a layer of ``c`` channels gets ``max(int(c * a), 8)``
(the rule of the paper's TensorFlow-slim code, ``depth_multiplier`` with
``min_depth`` 8).  timm's ``mobilenetv1_*`` round ``c * a`` to a multiple of 8
instead: the two agree for 0.25, 0.5, 0.75, 1.0 and 1.25.  The paper's ReLU is
used (timm uses ReLU6, which BVLC Caffe lacks; it has no parameters).  No
convolution has a bias; no shortcut, no dropout.
"""

from __future__ import annotations

import math

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, ConvBNReLU
from pynetbuilder.legos.mobile import DepthwiseSeparable
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, require

STEM = 32
# (width, blocks) per stage; the first block of every stage but the first has stride 2
STAGES = ((64, 1), (128, 2), (256, 2), (512, 6), (1024, 2))
MIN_CHANNELS = 8


def scaled(channels: int, width_multiplier: float) -> int:
    """The width of a ``channels``-wide layer at ``width_multiplier`` (at least 8)."""
    return max(int(channels * width_multiplier), MIN_CHANNELS)


def mobilenet(width_multiplier: float = 1.0, num_classes: int = 1000, *,
              data: ClassificationData | None = None) -> Net:
    """MobileNet v1: 3x3/2 conv, 13 depthwise separable blocks (32..1024 x width), fc.

    ``width_multiplier`` (the paper's alpha) scales every layer's channels:
    ``max(int(c * width_multiplier), 8)``; ``num_classes`` is the width of ``fc``.
    """
    require(math.isfinite(width_multiplier) and 0 < width_multiplier <= 8,
            "width_multiplier", "a number in (0, 8]", width_multiplier)
    require(num_classes >= 1, "num_classes", "a positive integer", num_classes)
    net, x, label = start(f"mobilenet_{width_multiplier:g}", "imagenet", data)
    x = ConvBNReLU("conv1", scaled(STEM, width_multiplier), 3, stride=2)(net, x)
    for stage, (width, blocks) in enumerate(STAGES, start=1):
        for block in range(1, blocks + 1):
            stride = 2 if block == 1 and stage > 1 else 1
            x = DepthwiseSeparable(f"stage{stage}_block{block}",
                                   scaled(width, width_multiplier), stride=stride)(net, x)
    pool_and_classify(net, x, label, num_classes, "imagenet")
    return net


FAMILIES = [
    Family("mobilenet", mobilenet, "imagenet", {
        "MobileNet-1.0": {"width_multiplier": 1.0},
        "MobileNet-0.75": {"width_multiplier": 0.75},
        "MobileNet-0.5": {"width_multiplier": 0.5},
        "MobileNet-0.25": {"width_multiplier": 0.25},
    }),
]
