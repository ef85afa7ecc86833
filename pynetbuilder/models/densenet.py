"""DenseNet for CIFAR (Huang et al. 2016), as hysts/pytorch_image_classification builds it.

- stem: a 3x3 convolution (no bias) to ``2 * growth_rate`` channels, no BN after it;
- three dense blocks of ``n`` dense layers each, ``n = (depth - 4) / 3`` for
  ``basic`` layers (BN-ReLU-3x3 conv, ``growth_rate`` new channels) and
  ``(depth - 4) / 6`` for ``bottleneck`` (DenseNet-B: BN-ReLU-1x1 conv to
  ``4 * growth_rate``, BN-ReLU-3x3 conv to ``growth_rate``); a layer's output is
  ``Concat[input, new channels]``;
- after blocks 1 and 2 a transition: BN-ReLU-1x1 conv to
  ``int(channels * compression_rate)`` channels (the "C" of DenseNet-BC when
  below 1), 2x2 average pooling with stride 2 (32 -> 16 -> 8);
- Dropout (in Caffe in place, TRAIN only in effect) after every convolution of
  the dense layers and transitions when ``drop_rate`` > 0;
- head: BN-ReLU, global average pooling, one fully connected classifier.

Every convolution is bias-free (a BatchNorm follows).  Layer names:
``stage<s>_block<l>_conv...`` for dense layer ``l`` of block ``s``,
``stage<s>_transition_conv`` / ``_pool``, ``final_bn``, ``pool``, ``fc``.
"""

from __future__ import annotations

from typing import Literal

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, Conv
from pynetbuilder.legos.blocks import BNReLU
from pynetbuilder.legos.dense import DenseLayer, Transition
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, depth_units, require

STAGES = 3
# composite layers per dense layer: depth = STAGES * per_layer * n + 4 (stem, 2 transitions, fc)
CONVS_PER_LAYER = {"basic": 1, "bottleneck": 2}


def layers_per_block(depth: int, block_type: str) -> int:
    """Dense layers per block, checking ``depth`` fits ``block_type``'s formula."""
    return depth_units(depth, STAGES * CONVS_PER_LAYER[block_type], 4, f"{block_type} layers")


def block_widths(growth_rate: int, n: int, compression_rate: float) -> list[int]:
    """Input width of each dense block and the width of the head: ``[c0, c1, c2, c3]``."""
    widths = [2 * growth_rate]
    for stage in range(STAGES):
        out = widths[-1] + n * growth_rate
        widths.append(int(out * compression_rate) if stage < STAGES - 1 else out)
    return widths


def _check(growth_rate: int, compression_rate: float, drop_rate: float,
           num_classes: int) -> None:
    require(growth_rate >= 1, "growth_rate", "a positive integer", growth_rate)
    require(0.0 < compression_rate <= 1.0, "compression_rate", "a number in (0, 1]",
            compression_rate)
    require(0.0 <= drop_rate < 1.0, "drop_rate", "a number in [0, 1)", drop_rate)
    require(num_classes >= 1, "num_classes", "a positive integer", num_classes)


def densenet(
    depth: int = 100,
    block_type: Literal["basic", "bottleneck"] = "bottleneck",
    growth_rate: int = 12,
    compression_rate: float = 0.5,
    drop_rate: float = 0.0,
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """DenseNet / DenseNet-BC for CIFAR: three dense blocks joined by 1x1-conv + avg-pool
    transitions (default: DenseNet-BC-100, k=12).

    ``depth``: 3n+4 (basic) or 6n+4 (bottleneck) with n layers per block;
    ``growth_rate``: k, channels each dense layer adds; ``compression_rate``:
    transition width / input width; ``drop_rate``: Dropout after each convolution.
    """
    n = layers_per_block(depth, block_type)
    _check(growth_rate, compression_rate, drop_rate, num_classes)
    widths = block_widths(growth_rate, n, compression_rate)
    require(min(widths) >= 1, "compression_rate", "a rate leaving transitions at least "
            "one channel", compression_rate)
    kind = "BC" if block_type == "bottleneck" and compression_rate < 1 else block_type
    net, x, label = start(f"densenet_{kind}_{depth}_k{growth_rate}", "cifar", data)
    x = Conv("conv1", widths[0], 3, bias_term=False)(net, x)
    bottleneck = block_type == "bottleneck"
    for stage in range(1, STAGES + 1):
        for layer in range(1, n + 1):
            x = DenseLayer(f"stage{stage}_block{layer}", growth_rate, bottleneck=bottleneck,
                           drop_rate=drop_rate)(net, x)
        if stage < STAGES:
            x = Transition(f"stage{stage}_transition", widths[stage],
                           drop_rate=drop_rate)(net, x)
    x = BNReLU("final")(net, x)
    pool_and_classify(net, x, label, num_classes, "cifar")
    return net


FAMILIES = [
    Family("densenet", densenet, "cifar", {
        "DenseNet-100 k=12": {"depth": 100, "block_type": "basic", "growth_rate": 12,
                              "compression_rate": 1.0},
        "DenseNet-BC-100 k=12": {"depth": 100, "block_type": "bottleneck", "growth_rate": 12,
                                 "compression_rate": 0.5},
    }),
]
