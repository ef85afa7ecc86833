"""SqueezeNet 1.0 and 1.1 for ImageNet (Iandola et al.), as torchvision builds them.

- ``conv1`` + ReLU: 1.0: 7x7 / 2, 96 channels; 1.1: 3x3 / 2, 64 channels (no pad);
- ``pool1`` 3x3 / 2 max, then eight :class:`~pynetbuilder.legos.fire.Fire` modules
  ``fire2`` .. ``fire9`` with (squeeze, expand1x1 = expand3x3) of (16, 64),
  (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256);
  two more 3x3 / 2 max pools: after ``fire4`` and ``fire8`` (1.0: ``pool4``,
  ``pool8``) or after ``fire3`` and ``fire5`` (1.1: ``pool3``, ``pool5``);
- the head: dropout 0.5 on ``fire9``, ``conv10`` (1x1 to ``num_classes``, bias) +
  ReLU, ``pool10`` global average pool: the logits (N x num_classes x 1 x 1).

Every convolution has a bias and no BatchNorm.  Caffe pools in ceil mode, as
torchvision's SqueezeNet does (``ceil_mode=True``), so the sizes agree at any
crop: 224 -> 109 -> 54 -> 27 -> 13 (1.0), 224 -> 111 -> 55 -> 27 -> 13 (1.1).
"""

from __future__ import annotations

from typing import Literal

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, Conv, ConvReLU, Dropout, Pool, ReLU
from pynetbuilder.legos.fire import Fire
from pynetbuilder.models.datasets import outputs, start
from pynetbuilder.models.registry import Family, require

# (squeeze, expand) of fire2 .. fire9; each expands to ``expand`` 1x1 and ``expand`` 3x3.
FIRES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))
# version: (conv1 channels, conv1 kernel, the fires followed by a max pool)
VERSIONS = {"1_0": (96, 7, (4, 8)), "1_1": (64, 3, (3, 5))}


def _features(net: Net, x: str, version: str) -> str:
    channels, kernel, pool_after = VERSIONS[version]
    x = ConvReLU("conv1", channels, kernel, stride=2, pad=0)(net, x)
    x = Pool("pool1", "MAX", 3, stride=2)(net, x)
    for index, (squeeze, expand) in enumerate(FIRES, start=2):
        x = Fire(f"fire{index}", squeeze, expand, expand)(net, x)
        if index in pool_after:
            x = Pool(f"pool{index}", "MAX", 3, stride=2)(net, x)
    return x


def _classifier(net: Net, x: str, num_classes: int) -> str:
    """Dropout, the 1x1 ``conv10`` classifier + ReLU, global average pool ``pool10``."""
    Dropout("fire9_drop", 0.5)(net, x)
    x = Conv("conv10", num_classes, 1,
             weight_filler={"type": "gaussian", "mean": 0.0, "std": 0.01})(net, x)
    ReLU("conv10_relu")(net, x)
    return Pool("pool10", "AVE", global_pooling=True)(net, x)


def squeezenet(version: Literal["1_0", "1_1"] = "1_0", num_classes: int = 1000, *,
               data: ClassificationData | None = None) -> Net:
    """SqueezeNet 1.0 / 1.1: conv1, eight Fire modules, 1x1 conv classifier, global pool.

    ``version`` 1_1 has a 3x3 64-channel conv1 and pools earlier (2.4x fewer MACs,
    about the same parameters); ``num_classes`` is the width of ``conv10``.
    """
    require(num_classes >= 1, "num_classes", "a positive integer", num_classes)
    net, x, label = start(f"squeezenet{version}", "imagenet", data)
    x = _features(net, x, version)
    outputs(net, _classifier(net, x, num_classes), label, "imagenet")
    return net


FAMILIES = [
    Family("squeezenet", squeezenet, "imagenet",
           {"SqueezeNet-1.0": {"version": "1_0"}, "SqueezeNet-1.1": {"version": "1_1"}}),
]
