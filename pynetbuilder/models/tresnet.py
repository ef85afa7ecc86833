"""TResNet (Ridnik et al., "TResNet: High Performance GPU-Dedicated Architecture", WACV 2021),
layer for layer as timm's ``tresnet_m`` / ``tresnet_l`` / ``tresnet_xl``.

- stem: space-to-depth with block 4 (3 x 224 x 224 -> 48 x 56 x 56, channel
  ``(i*4 + j)*3 + c`` = pixel (4h+i, 4w+j) of colour c, timm's order), then
  ``conv1`` 3x3 to ``w`` channels + BatchNorm + leaky ReLU 1e-2;
- four stages of ``(3, 4, 11, 3)`` (M), ``(4, 5, 18, 3)`` (L) or ``(4, 5, 24, 3)``
  (XL) blocks, ``w`` = int(64 x width factor) = 64 (M), 76 (L, x1.2), 83 (XL, x1.3):
  stage 1 basic blocks of width ``w``, stage 2 basic ``2w``, stage 3 bottlenecks
  ``4w -> 16w``, stage 4 bottlenecks ``8w -> 32w``; squeeze-excitation in stages
  1-3 only;
- downsampling in the first block of stages 2-4: the 3x3 convolution keeps
  stride 1 and an anti-aliasing blur (``[1,2,1] x [1,2,1] / 16``, reflection pad,
  stride 2) follows its activation; the shortcut is a 2x2/2 average pool, a 1x1
  convolution and BatchNorm wherever the shape changes, identity elsewhere;
- inplace-ABN is BatchNorm + Scale + leaky ReLU (slope 1e-3 in blocks), residual
  sums end in a plain ReLU; head: global average pooling and one fully connected
  classifier ``fc``.

See :mod:`pynetbuilder.legos.tresnet` for how space-to-depth and the blur are
built exactly from Caffe layers without any weights file.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData
from pynetbuilder.legos.tresnet import STEM_SLOPE, ConvBNAct, SpaceToDepth, TResNetBlock
from pynetbuilder.models.datasets import pool_and_classify, start
from pynetbuilder.models.registry import Family, require

# variant -> (blocks per stage, stage-1 width = int(64 * timm's width_factor))
VARIANTS = MappingProxyType({
    "M": ((3, 4, 11, 3), 64),  # width factor 1.0
    "L": ((4, 5, 18, 3), 76),  # 1.2
    "XL": ((4, 5, 24, 3), 83),  # 1.3
})
STAGE_KINDS = ("basic", "basic", "bottleneck", "bottleneck")
STAGE_SE = (True, True, True, False)


def _stage(net: Net, x: str, stage: int, blocks: int, planes: int) -> str:
    """Stage ``stage`` (1-4): ``blocks`` blocks; the first of stages 2-4 has stride 2."""
    for block in range(1, blocks + 1):
        stride = 2 if block == 1 and stage > 1 else 1
        x = TResNetBlock(f"stage{stage}_block{block}", STAGE_KINDS[stage - 1], planes,
                         stride=stride, use_se=STAGE_SE[stage - 1])(net, x)
    return x


def tresnet(
    variant: Literal["M", "L", "XL"] = "M",
    num_classes: int = 1000,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """TResNet-M/L/XL for ImageNet (space-to-depth stem, anti-aliased downsampling, SE).

    ``variant`` picks the blocks per stage and the width (M: 3 4 11 3, width 64;
    L: 4 5 18 3, 76; XL: 4 5 24 3, 83); ``num_classes`` the classifier's outputs.
    """
    require(variant in VARIANTS, "variant", "one of " + ", ".join(VARIANTS), variant)
    require(num_classes >= 1, "num_classes", "a positive integer", num_classes)
    blocks, width = VARIANTS[variant]
    net, x, label = start(f"tresnet_{variant.lower()}", "imagenet", data)
    x = SpaceToDepth("s2d", 4)(net, x)
    x = ConvBNAct("conv1", width, 3, negative_slope=STEM_SLOPE)(net, x)
    for stage, count in enumerate(blocks, start=1):
        x = _stage(net, x, stage, count, width * 2 ** (stage - 1))
    pool_and_classify(net, x, label, num_classes, "imagenet")
    return net


FAMILIES = [
    Family(
        "tresnet",
        tresnet,
        "imagenet",
        {
            "TResNet-M": {"variant": "M"},
            "TResNet-L": {"variant": "L"},
            "TResNet-XL": {"variant": "XL"},
        },
    ),
]
