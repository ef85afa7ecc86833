"""ImageNet residual networks, as the original pynetbuilder's build_resnet app built them.

conv1 7x7/2 (64) + BN + ReLU, 3x3/2 max pool, four stages of ShortcutLego blocks
(stage ``s`` has width ``num_output_stage1 * 2**s``; the first block of stages
2-4 downsamples with stride 2 on its first convolution; a projection shortcut
stands wherever the shape changes), then the head:

- default: global average pool and a fully connected classifier;
- ``fc_layers``: the original's "4k" head: 1x1-2048 conv (BN, ReLU), global
  average pool, 1x1-4096 conv (BN, ReLU, dropout 0.2), 1x1 classifier conv with
  BN.  The original also put a ReLU on the logits, a bug not copied here; its
  BN is kept so the published sizes reproduce.
"""

from __future__ import annotations

from typing import Literal

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos import (
    MAIN_BRANCHES,
    ClassificationData,
    ConvBN,
    ConvBNReLU,
    Dropout,
    InnerProduct,
    Pool,
    ShortcutLego,
)
from pynetbuilder.legos.bottleneck import BottleneckBlock
from pynetbuilder.models.heads import classification_outputs
from pynetbuilder.models.registry import Family


def _check_positive(knob: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{knob} must be a positive integer, got {value!r}")


def resnet_imagenet(
    main_branch: Literal[
        "normal", "bottleneck", "inception_trick", "inception_trick_bottleneck"
    ] = "bottleneck",
    num_output_stage1: int = 128,
    blocks: tuple[int, ...] = (3, 4, 6, 3),
    fc_layers: bool = False,
    num_classes: int = 1000,
    stride_in_3x3: bool = False,
    pool1_pad: int = 0,
    *,
    data: ClassificationData | None = None,
    name: str | None = None,
) -> Net:
    """ImageNet ResNet of the original build_resnet app (ResNet-50: bottleneck, 256, 3 4 6 3).

    ``num_output_stage1`` is the output width of stage 1 (doubling per stage),
    ``blocks`` the blocks per stage, ``fc_layers`` the original's 4k head.
    ``stride_in_3x3``: a downsampling bottleneck strides on its 3x3, not its first 1x1
    (torchvision's "ResNet v1.5"; same parameters, a different function).
    ``pool1_pad``: padding of the 3x3/2 max pool after conv1 (torchvision pads 1, the
    original Caffe nets 0; both give 56x56 at 224, over different windows; the padded
    pool rounds down with this Caffe's ``ceil_mode: false``, which BVLC Caffe lacks).
    ``stride_in_3x3 true --pool1_pad 1`` computes torchvision's ResNets.
    """
    if main_branch not in MAIN_BRANCHES:
        raise UsageError(
            f"main_branch {main_branch!r} is unknown; allowed: {', '.join(MAIN_BRANCHES)}"
        )
    _check_positive("num_output_stage1", num_output_stage1)
    _check_positive("num_classes", num_classes)
    blocks = tuple(blocks)
    if len(blocks) != 4:
        raise UsageError(f"blocks needs 4 numbers (one per stage), got {len(blocks)}")
    for b in blocks:
        _check_positive("each of blocks", b)
    if "bottleneck" in main_branch and num_output_stage1 % 4:
        raise UsageError(
            f"num_output_stage1 must be divisible by 4 for {main_branch} "
            f"(the inner width is a quarter), got {num_output_stage1}"
        )
    if data is None:
        data = ClassificationData("data/imagenet/train_lmdb", "data/imagenet/val_lmdb")

    net = Net(name or f"resnet_{main_branch}_{num_output_stage1}_{'_'.join(map(str, blocks))}")
    x, label = data.attach(net, [])
    x = ConvBNReLU("conv1", 64, 7, stride=2, pad=3)(net, x)
    if pool1_pad not in (0, 1):
        raise UsageError(f"pool1_pad must be 0 or 1, got {pool1_pad!r}")
    if pool1_pad:  # floor rounding, as torchvision: 112 -> 56 (Caffe's ceil would give 57)
        x = Pool("pool1", "MAX", 3, stride=2, pad=1, ceil_mode=False)(net, x)
    else:
        x = Pool("pool1", "MAX", 3, stride=2)(net, x)
    for stage, count in enumerate(blocks):
        width = num_output_stage1 * 2**stage
        for block in range(count):
            stride = 2 if block == 0 and stage > 0 else 1
            name = f"stage{stage + 1}_block{block + 1}"
            if stride_in_3x3 and main_branch == "bottleneck":
                x = BottleneckBlock(name, width, width // 4, stride=stride)(net, x)
            else:
                x = ShortcutLego(name, main_branch, width, stride=stride)(net, x)
    if fc_layers:
        x = ConvBNReLU("fc_1x1_2048", 2048, 1)(net, x)
        x = Pool("pool5", "AVE", global_pooling=True)(net, x)
        x = ConvBNReLU("fc_1x1_4096", 4096, 1)(net, x)
        x = Dropout("fc_1x1_4096_drop", 0.2)(net, x)
        logits = ConvBN("fc_classifier", num_classes, 1)(net, x)
    else:
        x = Pool("pool5", "AVE", global_pooling=True)(net, x)
        logits = InnerProduct("fc_classifier", num_classes)(net, x)
    classification_outputs(net, logits, label)
    return net


FAMILIES = [
    Family(
        "resnet_imagenet",
        resnet_imagenet,
        "imagenet",
        {
            "ResNet-18": {"main_branch": "normal", "num_output_stage1": 64,
                          "blocks": (2, 2, 2, 2)},
            "ResNet-34": {"main_branch": "normal", "num_output_stage1": 64,
                          "blocks": (3, 4, 6, 3)},
            "ResNet-50": {"main_branch": "bottleneck", "num_output_stage1": 256},
            "ResNet-101": {"main_branch": "bottleneck", "num_output_stage1": 256,
                           "blocks": (3, 4, 23, 3)},
            "ResNet-152": {"main_branch": "bottleneck", "num_output_stage1": 256,
                           "blocks": (3, 8, 36, 3)},
        },
    ),
]
