"""AlexNet for ImageNet, the one-tower variant torchvision builds ("One weird trick").

- ``conv1`` 11x11 / 4, pad 2, 64 + ReLU, ``pool1`` 3x3 / 2 max (224 -> 55 -> 27);
- ``conv2`` 5x5, pad 2, 192 + ReLU, ``pool2`` 3x3 / 2 max (-> 13);
- ``conv3`` 384, ``conv4`` 256, ``conv5`` 256: 3x3, pad 1, each + ReLU;
  ``pool5`` 3x3 / 2 max (-> 6 x 6 x 256);
- the head: dropout 0.5 on ``pool5``, ``fc6`` 4096 + ReLU, dropout 0.5, ``fc7``
  4096 + ReLU, ``fc8`` ``num_classes``.

Every convolution and fc layer has a bias.  No local response normalisation and
no grouped convolutions (the original two-GPU Caffe AlexNet had both; torchvision
has neither).  torchvision's adaptive 6x6 average pool is the identity at the 224
crop and is left out (Caffe has none); Caffe's ceil-mode pooling gives the same
sizes as torchvision's floor mode here (55, 27 and 13 are odd).
"""

from __future__ import annotations

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, ConvReLU, Dropout, InnerProduct, Pool, ReLU
from pynetbuilder.models.datasets import outputs, start
from pynetbuilder.models.registry import Family, require

# (name, channels, kernel, stride, pad, max pool after it)
CONVS = (
    ("conv1", 64, 11, 4, 2, "pool1"),
    ("conv2", 192, 5, 1, 2, "pool2"),
    ("conv3", 384, 3, 1, 1, None),
    ("conv4", 256, 3, 1, 1, None),
    ("conv5", 256, 3, 1, 1, "pool5"),
)


def _features(net: Net, x: str) -> str:
    for name, channels, kernel, stride, pad, pool in CONVS:
        x = ConvReLU(name, channels, kernel, stride=stride, pad=pad)(net, x)
        if pool:
            x = Pool(pool, "MAX", 3, stride=2)(net, x)
    return x


def _classifier(net: Net, x: str, num_classes: int) -> str:
    """Dropout before each of fc6 and fc7 (in place on the blob it drops), fc8 logits."""
    for fc in ("fc6", "fc7"):
        Dropout(f"{x}_drop", 0.5)(net, x)
        x = InnerProduct(fc, 4096)(net, x)
        ReLU(f"{fc}_relu")(net, x)
    return InnerProduct("fc8", num_classes)(net, x)


def alexnet(num_classes: int = 1000, *, data: ClassificationData | None = None) -> Net:
    """AlexNet as torchvision builds it: convs 64-192-384-256-256, fc 4096-4096, no LRN.

    ``num_classes`` is the width of the ``fc8`` classifier.
    """
    require(num_classes >= 1, "num_classes", "a positive integer", num_classes)
    net, x, label = start("alexnet", "imagenet", data)
    x = _features(net, x)
    outputs(net, _classifier(net, x, num_classes), label, "imagenet")
    return net


FAMILIES = [Family("alexnet", alexnet, "imagenet", {"AlexNet": {}})]
