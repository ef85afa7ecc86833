"""ResNeXt for CIFAR (Xie et al., "Aggregated Residual Transformations for Deep Neural
Networks", 2016), as hysts/pytorch_image_classification's ``resnext``."""

from __future__ import annotations

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, ConvBNReLU
from pynetbuilder.legos.bottleneck import BottleneckBlock
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, require_positive
from pynetbuilder.models.resnet_cifar import blocks_per_stage


def resnext(
    depth: int = 29,
    initial_channels: int = 64,
    cardinality: int = 8,
    base_channels: int = 64,
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """ResNeXt-depth CxBd (ResNeXt-29 8x64d: cardinality 8, 64 channels a group, 34.4M params).

    Stem: 3x3 conv ``initial_channels`` + BN + ReLU.  Three stages of ``n`` =
    (depth-2)/9 post-activation bottleneck blocks at 32x32, 16x16 and 8x8, stage
    ``s`` (0, 1, 2): 1x1 to ``cardinality * base_channels * 2**s``, grouped 3x3
    (``cardinality`` groups; stride 2 on it in the first block of stages 2 and 3),
    1x1 to ``4 * initial_channels * 2**s`` (256, 512, 1024 for ResNeXt-29); BN
    after each convolution, ReLU after the first two and after the sum.
    Shortcut: identity, or 1x1 conv (stride) + BN where the shape changes (each
    stage's first block).  Then global average pooling and a fully connected
    classifier.
    """
    n = blocks_per_stage(depth, "bottleneck")
    require_positive("initial_channels", initial_channels)
    require_positive("cardinality", cardinality)
    require_positive("base_channels", base_channels)
    require_positive("num_classes", num_classes)
    net, x, label = start(f"resnext{depth}_{cardinality}x{base_channels}d", "cifar", data)
    x = ConvBNReLU("conv1", initial_channels, 3)(net, x)
    for s in range(3):
        inner = cardinality * base_channels * 2**s
        width = 4 * initial_channels * 2**s
        for b in range(n):
            x = BottleneckBlock(
                f"stage{s + 1}_block{b + 1}", width, inner,
                stride=2 if s > 0 and b == 0 else 1, group=cardinality,
            )(net, x)
    pool_and_classify(net, x, label, num_classes, "cifar")
    return net


FAMILIES = [
    Family(
        "resnext",
        resnext,
        "cifar",
        {
            "ResNeXt-29 8x64d": {"depth": 29, "cardinality": 8, "base_channels": 64},
            "ResNeXt-29 4x64d": {"depth": 29, "cardinality": 4, "base_channels": 64},
        },
    ),
]
