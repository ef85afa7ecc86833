"""CIFAR pre-activation ResNets (He et al., "Identity Mappings in Deep Residual Networks",
2016) and their squeeze-and-excitation version (Hu et al., "Squeeze-and-Excitation
Networks", 2017), as hysts/pytorch_image_classification's ``resnet_preact`` and
``se_resnet_preact``.

Stem: a 3x3 convolution (``initial_channels``, no BN, no ReLU) at 32x32.  Three
stages of ``n`` :class:`~pynetbuilder.legos.preact.PreactBlock` at 32x32, 16x16 and
8x8 (stride 2 in the first block of stages 2 and 3: on the first 3x3 of a basic
block, on the 3x3 of a bottleneck), widths ``initial_channels`` x (1, 2e, 4e) with
e = 1 (basic) or 4 (bottleneck), as the post-activation CIFAR ResNet.  Shortcuts:
identity, or a 1x1 convolution (stride, no BN) where the shape changes.  Then BN +
ReLU (``final_*``), global average pooling and a fully connected classifier.
"""

from __future__ import annotations

from typing import Literal

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, Conv
from pynetbuilder.legos.blocks import BNReLU
from pynetbuilder.legos.preact import PreactBlock
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, require, require_positive
from pynetbuilder.models.resnet_cifar import blocks_per_stage, stage_widths

BlockType = Literal["basic", "bottleneck"]


def _check_preact_stage(preact_stage: tuple[bool, ...]) -> None:
    require(len(preact_stage) == 3, "preact_stage",
            "3 true/false values (one per stage)", preact_stage)


def _preact_net(
    name: str,
    depth: int,
    block_type: str,
    initial_channels: int,
    remove_first_relu: bool,
    add_last_bn: bool,
    preact_stage: tuple[bool, ...],
    se_reduction: int | None,
    num_classes: int,
    data: ClassificationData | None,
) -> Net:
    """The net of both families (``se_reduction`` None: no squeeze-excitation)."""
    n = blocks_per_stage(depth, block_type)
    widths = stage_widths(initial_channels, block_type)
    _check_preact_stage(preact_stage)
    if se_reduction is not None:
        # the narrowest squeeze (stage 1: initial_channels // se_reduction) keeps a channel
        require(1 <= se_reduction <= initial_channels, "se_reduction",
                f"an integer from 1 to initial_channels ({initial_channels})", se_reduction)
    require_positive("num_classes", num_classes)
    net, x, label = start(name, "cifar", data)
    x = Conv("conv1", initial_channels, 3, bias_term=False)(net, x)
    for s, width in enumerate(widths):
        for b in range(n):
            x = PreactBlock(
                f"stage{s + 1}_block{b + 1}", block_type, width,
                stride=2 if s > 0 and b == 0 else 1,
                preact_shortcut=bool(preact_stage[s]) and b == 0,
                remove_first_relu=remove_first_relu, add_last_bn=add_last_bn,
                se_reduction=se_reduction or 0,
            )(net, x)
    x = BNReLU("final")(net, x)
    pool_and_classify(net, x, label, num_classes, "cifar")
    return net


def resnet_preact(
    depth: int = 110,
    block_type: BlockType = "basic",
    initial_channels: int = 16,
    remove_first_relu: bool = False,
    add_last_bn: bool = False,
    preact_stage: tuple[bool, ...] = (True, True, True),
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """CIFAR pre-activation ResNet (ResNet-preact-110: depth 110, basic, widths 16/32/64).

    Blocks: BN-ReLU-conv throughout, nothing after the sum; basic = 3x3, 3x3;
    bottleneck = 1x1, 3x3, 1x1 at a quarter width.  Depth 6n+2 (basic) or 9n+2
    (bottleneck).  ``preact_stage`` (one switch per stage): the first block of
    that stage pre-activates its input for the shortcut too; other blocks
    pre-activate the branch only.  ``remove_first_relu`` drops the ReLU after the
    branch's first BN (where the shortcut does not share it); ``add_last_bn``
    adds BN after the branch's last convolution.
    """
    return _preact_net(
        f"resnet_preact{depth}_{block_type}", depth, block_type, initial_channels,
        remove_first_relu, add_last_bn, preact_stage, None, num_classes, data,
    )


def se_resnet_preact(
    depth: int = 110,
    block_type: BlockType = "basic",
    initial_channels: int = 16,
    remove_first_relu: bool = True,
    add_last_bn: bool = True,
    preact_stage: tuple[bool, ...] = (True, False, False),
    se_reduction: int = 16,
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """CIFAR SE pre-activation ResNet (SE-ResNet-preact-110: reduction 16, no first
    ReLU, last BN, shortcut pre-activation in stage 1 only).

    The pre-activation ResNet with squeeze-excitation on every branch's output,
    before the sum: global average pooling, fully connected ``C // se_reduction``
    (with bias), ReLU, fully connected ``C`` (with bias), sigmoid, channel-wise
    scale.  Defaults are the reference's CIFAR config (configs/cifar/se_resnet_preact.yaml).
    """
    return _preact_net(
        f"se_resnet_preact{depth}_{block_type}", depth, block_type, initial_channels,
        remove_first_relu, add_last_bn, preact_stage, se_reduction, num_classes, data,
    )


FAMILIES = [
    Family(
        "resnet_preact",
        resnet_preact,
        "cifar",
        {
            "ResNet-preact-110": {"depth": 110, "block_type": "basic"},
            "ResNet-preact-164 (bottleneck)": {"depth": 164, "block_type": "bottleneck"},
        },
    ),
    Family(
        "se_resnet_preact",
        se_resnet_preact,
        "cifar",
        {
            "SE-ResNet-preact-110": {
                "depth": 110, "block_type": "basic", "se_reduction": 16,
                "remove_first_relu": True, "add_last_bn": True,
                "preact_stage": (True, False, False),
            },
        },
    ),
]
