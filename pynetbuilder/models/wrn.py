"""Wide residual networks for CIFAR (Zagoruyko and Komodakis, "Wide Residual Networks",
2016), as hysts/pytorch_image_classification's ``wrn``."""

from __future__ import annotations

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, Conv
from pynetbuilder.legos.blocks import BNReLU
from pynetbuilder.legos.preact import PreactBlock
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, depth_units, require, require_positive


def wrn(
    depth: int = 28,
    initial_channels: int = 16,
    widening_factor: int = 10,
    drop_rate: float = 0.0,
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """Wide ResNet WRN-depth-k (WRN-28-10: widths 160/320/640, 36.5M parameters).

    Stem: 3x3 conv ``initial_channels`` (no BN).  Three stages of ``n`` = (depth-4)/6
    pre-activation basic blocks (BN-ReLU-3x3, BN-ReLU-3x3), ``initial_channels`` x k
    x (1, 2, 4) wide at 32x32, 16x16 and 8x8; the stride 2 of stages 2 and 3 sits
    on the first block's first 3x3.  Where a block changes the width (each stage's
    first block) its first BN-ReLU also feeds the shortcut, a 1x1 convolution with
    the stride (no BN); other shortcuts are identities.  ``drop_rate`` > 0 puts a
    Dropout between the two convolutions.  Then BN + ReLU, global average pooling
    and a fully connected classifier.
    """
    n = depth_units(depth, 6, 4)
    require_positive("initial_channels", initial_channels)
    require_positive("widening_factor", widening_factor)
    require(0.0 <= drop_rate < 1.0, "drop_rate", "a number from 0 up to (not including) 1",
            drop_rate)
    require_positive("num_classes", num_classes)
    net, x, label = start(f"wrn{depth}_{widening_factor}", "cifar", data)
    x = Conv("conv1", initial_channels, 3, bias_term=False)(net, x)
    width_in = initial_channels
    for s in range(3):
        width = initial_channels * widening_factor * 2**s
        for b in range(n):
            x = PreactBlock(
                f"stage{s + 1}_block{b + 1}", "basic", width,
                stride=2 if s > 0 and b == 0 else 1,
                preact_shortcut=width_in != width, drop_rate=drop_rate,
            )(net, x)
            width_in = width
    x = BNReLU("final")(net, x)
    pool_and_classify(net, x, label, num_classes, "cifar")
    return net


FAMILIES = [
    Family(
        "wrn",
        wrn,
        "cifar",
        {
            "WRN-28-10": {"depth": 28, "widening_factor": 10},
            "WRN-28-10 (dropout 0.3)": {"depth": 28, "widening_factor": 10, "drop_rate": 0.3},
        },
    ),
]
