"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", 2015).

The three-stage CIFAR layout of hysts/pytorch_image_classification's ``resnet``:
a 3x3 stem convolution (``initial_channels``, BN, ReLU) at 32x32, three stages of
``n`` blocks at 32x32, 16x16 and 8x8 (the first block of stages 2 and 3 has stride
2), global average pooling and one fully connected classifier.  Stage widths are
``initial_channels`` x (1, 2e, 4e) with expansion e = 1 (basic) or 4
(bottleneck): ResNet-110 has 16, 32, 64.  Note that, as in the reference, stage 1
of a bottleneck net is ``initial_channels`` wide (its 3x3s ``initial_channels / 4``),
not 4x as in He et al.'s ResNet-164.
"""

from __future__ import annotations

from typing import Literal

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, ConvBNReLU, Lego, ShortcutLego
from pynetbuilder.legos.bottleneck import BottleneckBlock
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, depth_units, require, require_positive

BlockType = Literal["basic", "bottleneck"]
EXPANSION = {"basic": 1, "bottleneck": 4}
DEPTH_STEP = {"basic": 6, "bottleneck": 9}  # convolutions per block x 3 stages


def blocks_per_stage(depth: int, block_type: str) -> int:
    """Blocks per stage: depth = 6n+2 (basic) or 9n+2 (bottleneck)."""
    return depth_units(depth, DEPTH_STEP[block_type], 2, f"{block_type} blocks")


def stage_widths(initial_channels: int, block_type: str) -> tuple[int, int, int]:
    """Output widths of the three stages (the reference's ``n_channels``)."""
    require_positive("initial_channels", initial_channels)
    if block_type == "bottleneck":
        require(initial_channels % 4 == 0, "initial_channels",
                "a multiple of 4 for bottleneck blocks (stage 1's 3x3s are a quarter as wide)",
                initial_channels)
    e = EXPANSION[block_type]
    return initial_channels, initial_channels * 2 * e, initial_channels * 4 * e


def _block(name: str, block_type: str, width: int, stride: int) -> Lego:
    if block_type == "basic":
        return ShortcutLego(name, "normal", width, stride=stride)
    return BottleneckBlock(name, width, width // 4, stride=stride)


def resnet(
    depth: int = 110,
    block_type: BlockType = "basic",
    initial_channels: int = 16,
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """CIFAR ResNet, post-activation (ResNet-110: depth 110, basic, widths 16/32/64).

    Stem: 3x3 conv ``initial_channels`` + BN + ReLU.  Blocks (``stage{s}_block{b}``):
    basic = 3x3, 3x3 with the stride on the first; bottleneck = 1x1, 3x3, 1x1 at a
    quarter of the output width with the stride on the 3x3.  BN after every
    convolution, ReLU after all but the last and after the sum; shortcut identity,
    or 1x1 conv (stride) + BN where the shape changes.  Depth 6n+2 (basic) or
    9n+2 (bottleneck), ``n`` blocks per stage.
    """
    n = blocks_per_stage(depth, block_type)
    widths = stage_widths(initial_channels, block_type)
    require_positive("num_classes", num_classes)
    net, x, label = start(f"resnet{depth}_{block_type}", "cifar", data)
    x = ConvBNReLU("conv1", initial_channels, 3)(net, x)
    for s, width in enumerate(widths):
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            x = _block(f"stage{s + 1}_block{b + 1}", block_type, width, stride)(net, x)
    pool_and_classify(net, x, label, num_classes, "cifar")
    return net


FAMILIES = [
    Family(
        "resnet",
        resnet,
        "cifar",
        {
            "ResNet-110": {"depth": 110, "block_type": "basic"},
            "ResNet-164 (bottleneck)": {"depth": 164, "block_type": "bottleneck"},
        },
    ),
]
