"""PyramidNet for CIFAR (Han et al. 2016, additive widening), as hysts/pytorch_image_classification
builds it.

- stem: 3x3 convolution (no bias) to ``initial_channels`` + BN (no ReLU);
- three stages of ``n`` :class:`~pynetbuilder.legos.pyramid.PyramidBlock` blocks,
  ``n = (depth - 2) / 6`` for ``basic`` blocks (two 3x3 convolutions) and
  ``(depth - 2) / 9`` for ``bottleneck`` blocks (1x1, 3x3, 1x1 with 4x expansion);
  the first block of stages 2 and 3 has stride 2 (on its first 3x3 convolution)
  and an average-pooling shortcut;
- every block widens: block ``b`` (1 to ``3n``) has
  ``round(initial_channels + b * alpha / (3n))`` channels (times 4 for bottleneck
  blocks), where the float ``initial_channels + alpha / (3n) + ... + alpha / (3n)``
  is accumulated one block at a time and rounded half to even, exactly as the
  reference does (``np.round``); so the last block has about
  ``initial_channels + alpha`` (x4) channels;
- the shortcut is zero-padded to the block's width; here without any zero blob:
  the residual branch is sliced at the input's width, the shortcut added to the
  first part, the rest concatenated after it (exact: see
  :mod:`pynetbuilder.legos.pyramid`);
- head: BN-ReLU, global average pooling, one fully connected classifier.

Layer names: ``stage<s>_block<b>_conv1``... (``b`` counted within the stage).
"""

from __future__ import annotations

from typing import Literal

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, ConvBN
from pynetbuilder.legos.blocks import BNReLU
from pynetbuilder.legos.pyramid import PyramidBlock
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, depth_units, require

STAGES = 3
CONVS_PER_BLOCK = {"basic": 2, "bottleneck": 3}
EXPANSION = {"basic": 1, "bottleneck": 4}


def blocks_per_stage(depth: int, block_type: str) -> int:
    """Blocks per stage, checking ``depth`` fits ``block_type``'s formula."""
    return depth_units(depth, STAGES * CONVS_PER_BLOCK[block_type], 2, f"{block_type} blocks")


def block_widths(initial_channels: int, alpha: int, blocks: int, expansion: int) -> list[int]:
    """Output width of every block, in order (``blocks`` = all blocks of the three stages)."""
    width = float(initial_channels)
    widths = []
    for _ in range(blocks):
        width += alpha / blocks  # accumulated, not multiplied: the reference's rounding
        widths.append(round(width) * expansion)  # round() is half-to-even, as np.round
    return widths


def pyramidnet(
    depth: int = 272,
    alpha: int = 200,
    block_type: Literal["basic", "bottleneck"] = "bottleneck",
    initial_channels: int = 16,
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """PyramidNet for CIFAR: widths grow by alpha in total, one step per block;
    zero-padded average-pooling shortcuts (default: PyramidNet-272 bottleneck, alpha 200).

    ``depth``: 6n+2 (basic) or 9n+2 (bottleneck) with n blocks per stage;
    ``alpha``: total widening over all blocks; ``initial_channels``: stem width.
    """
    n = blocks_per_stage(depth, block_type)
    require(alpha >= 0, "alpha", "an integer >= 0 (the total widening)", alpha)
    require(initial_channels >= 1, "initial_channels", "a positive integer", initial_channels)
    require(num_classes >= 1, "num_classes", "a positive integer", num_classes)
    widths = block_widths(initial_channels, alpha, STAGES * n, EXPANSION[block_type])
    net, x, label = start(f"pyramidnet_{block_type}_{depth}_a{alpha}", "cifar", data)
    x = ConvBN("conv1", initial_channels, 3)(net, x)
    for i, width in enumerate(widths):
        stage, block = divmod(i, n)
        stride = 2 if block == 0 and stage > 0 else 1
        x = PyramidBlock(f"stage{stage + 1}_block{block + 1}", block_type, width,
                         stride=stride)(net, x)
    x = BNReLU("final")(net, x)
    pool_and_classify(net, x, label, num_classes, "cifar")
    return net


FAMILIES = [
    Family("pyramidnet", pyramidnet, "cifar", {
        "PyramidNet-110 alpha 84": {"depth": 110, "alpha": 84, "block_type": "basic"},
        "PyramidNet-110 alpha 270": {"depth": 110, "alpha": 270, "block_type": "basic"},
        "PyramidNet-164 bottleneck alpha 270": {"depth": 164, "alpha": 270,
                                                "block_type": "bottleneck"},
        "PyramidNet-272 bottleneck alpha 200": {"depth": 272, "alpha": 200,
                                                "block_type": "bottleneck"},
    }),
]
