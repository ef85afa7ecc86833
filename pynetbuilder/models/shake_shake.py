"""Shake-shake networks for CIFAR (Gastaldi, "Shake-Shake regularization", 2017).

Shake-shake-``depth`` ``2x{initial_channels}d``, as hysts/pytorch_image_classification
builds it:

- stem: 3x3 convolution to 16 channels (no bias) + BN + Scale, no ReLU;
- three stages of ``n = (depth - 2) / 6`` :class:`~pynetbuilder.legos.shake.ShakeShakeBlock`
  each, widths ``k``, ``2k``, ``4k`` (``k = initial_channels``); the first block of
  stages 2 and 3 has stride 2 (on the first 3x3 convolution of both branches and
  on the shortcut);
- each block: ``x + shake(branch1(relu(x)), branch2(relu(x)))``, each branch
  3x3 conv-BN-ReLU then 3x3 conv-BN (BN = BatchNorm + Scale); where the width
  changes (the first block of stages 2 and 3, and of stage 1 unless k = 16) ``x``
  is replaced by the paper's shortcut: two 1x1 convolutions to half the block's
  width each, on ``relu(x)`` sampled at even positions and at positions shifted
  by one pixel, concatenated, then BN;
- ReLU, global average pooling, fully connected classifier ``fc``.

The train net mixes the two branches per sample with the Caffe Python layer
``pynetbuilder.caffe_layers.shake_shake.ShakeShake`` (random forward and backward
weights); the test and deploy nets average them (``Eltwise`` coefficients 0.5, 0.5).
"""

from __future__ import annotations

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, ConvBN, ReLU
from pynetbuilder.legos.shake import ShakeShakeBlock
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, depth_units, require

STEM_CHANNELS = 16


def shake_shake(
    depth: int = 26,
    initial_channels: int = 96,
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """Shake-shake-26 2x96d for CIFAR: two shaken 3x3 branches per residual block.

    ``depth`` = 6n + 2 (n blocks per stage), ``initial_channels`` = the width k
    of stage 1 (2k, 4k in stages 2, 3; even, since the downsampling shortcut
    splits it in two halves), ``num_classes`` the classifier's outputs.
    """
    blocks = depth_units(depth, 6, 2)
    require(initial_channels >= 2 and initial_channels % 2 == 0, "initial_channels",
            "an even integer >= 2 (the shortcut splits the width in two halves)",
            initial_channels)
    require(num_classes >= 1, "num_classes", "an integer >= 1", num_classes)
    net, x, label = start(f"shake_shake_{depth}_2x{initial_channels}d", "cifar", data)
    x = ConvBN("conv1", STEM_CHANNELS, 3)(net, x)
    for stage in range(3):
        width = initial_channels * 2**stage
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            x = ShakeShakeBlock(f"stage{stage + 1}_block{block + 1}", width, stride)(net, x)
    x = ReLU("relu")(net, x)
    pool_and_classify(net, x, label, num_classes, "cifar")
    return net


FAMILIES = [
    Family(
        "shake_shake",
        shake_shake,
        "cifar",
        {
            "shake-shake-26 2x32d": {"depth": 26, "initial_channels": 32},
            "shake-shake-26 2x64d": {"depth": 26, "initial_channels": 64},
            "shake-shake-26 2x96d": {"depth": 26, "initial_channels": 96},
        },
    ),
]
