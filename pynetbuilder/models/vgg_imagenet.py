"""VGG-16 and VGG-19 for ImageNet (Simonyan & Zisserman, configurations D and E).

Layer for layer as torchvision's ``vgg16`` / ``vgg19`` (and ``*_bn``):

- five stages ``stage1`` .. ``stage5`` of widths 64, 128, 256, 512, 512 with
  2, 2, 3, 3, 3 (VGG-16) or 2, 2, 4, 4, 4 (VGG-19) convolutions ``convJ``: 3x3,
  stride 1, pad 1, each followed by a ReLU (``use_bn``: BatchNorm + Scale before the
  ReLU, and the convolution has no bias, as Scale carries the shift);
- each stage ends with a 2x2 / 2 max pool ``stageI_pool`` (224 -> 7 x 7 x 512);
- the head: ``fc6`` 4096 + ReLU + dropout 0.5, ``fc7`` 4096 + ReLU + dropout 0.5,
  ``fc8`` ``num_classes``.

torchvision's adaptive 7x7 average pool before ``fc6`` is the identity at the 224
crop and is left out (Caffe has no adaptive pooling): at another ``--crop_size``
``fc6`` takes the feature map as it is, as the original Caffe VGG models did.
"""

from __future__ import annotations

from pynetbuilder.graph import Net
from pynetbuilder.legos import (
    ClassificationData,
    ConvBNReLU,
    Dropout,
    InnerProduct,
    Pool,
    ReLU,
)
from pynetbuilder.models.datasets import outputs, start
from pynetbuilder.models.registry import Family, require

WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)
VGG19_CONVS = (2, 2, 4, 4, 4)


def _features(net: Net, x: str, convs: tuple[int, ...], use_bn: bool) -> str:
    """The five convolution stages, each closed by a 2x2/2 max pool."""
    for stage, (width, count) in enumerate(zip(WIDTHS, convs), start=1):
        with net.scope(f"stage{stage}", block=True):
            for j in range(1, count + 1):
                x = ConvBNReLU(f"conv{j}", width, 3, bn=use_bn)(net, x)
            x = Pool("pool", "MAX", 2, stride=2)(net, x)
    return x


def _classifier(net: Net, x: str, num_classes: int) -> str:
    """fc6, fc7 (4096, ReLU, dropout 0.5 each) and the ``fc8`` logits."""
    for fc in ("fc6", "fc7"):
        x = InnerProduct(fc, 4096)(net, x)
        ReLU(f"{fc}_relu")(net, x)
        Dropout(f"{fc}_drop", 0.5)(net, x)
    return InnerProduct("fc8", num_classes)(net, x)


def _vgg(depth: int, convs: tuple[int, ...], use_bn: bool, num_classes: int,
         data: ClassificationData | None) -> Net:
    require(num_classes >= 1, "num_classes", "a positive integer", num_classes)
    net, x, label = start(f"vgg{depth}{'_bn' if use_bn else ''}", "imagenet", data)
    x = _features(net, x, convs, use_bn)
    outputs(net, _classifier(net, x, num_classes), label, "imagenet")
    return net


def vgg16(use_bn: bool = False, num_classes: int = 1000, *,
          data: ClassificationData | None = None) -> Net:
    """VGG-16 (configuration D): 13 3x3 convolutions in 5 stages (2-2-3-3-3), 3 fc layers.

    ``use_bn`` adds BatchNorm + Scale after every convolution (torchvision's vgg16_bn).
    """
    return _vgg(16, VGG16_CONVS, use_bn, num_classes, data)


def vgg19(use_bn: bool = False, num_classes: int = 1000, *,
          data: ClassificationData | None = None) -> Net:
    """VGG-19 (configuration E): 16 3x3 convolutions in 5 stages (2-2-4-4-4), 3 fc layers.

    ``use_bn`` adds BatchNorm + Scale after every convolution (torchvision's vgg19_bn).
    """
    return _vgg(19, VGG19_CONVS, use_bn, num_classes, data)


FAMILIES = [
    Family("vgg16", vgg16, "imagenet", {"VGG-16": {}, "VGG-16-BN": {"use_bn": True}}),
    Family("vgg19", vgg19, "imagenet", {"VGG-19": {}, "VGG-19-BN": {"use_bn": True}}),
]
