"""VGG-like CIFAR networks (hysts/pytorch_image_classification's ``vgg``).

Up to five stages of 3x3 convolutions (stride 1, padding 1), each followed by BN
+ Scale (with ``use_bn``) and ReLU; a 2x2 max pooling with stride 2 closes every
stage.  Stage ``i`` (counting from 0) is ``n_channels * 2**min(i, 3)`` wide:
64, 128, 256, 512, 512 for ``n_channels`` 64, the reference's widths.  One fully
connected classifier reads the flattened last feature map (512 x 1 x 1 after five
stages on 32x32 images); there is no global pooling and no hidden fc layer.

Differences from the PyTorch reference: with ``use_bn`` the convolutions have
no bias (BatchNorm subtracts the mean, so a bias before it is never learnt; the
Scale after it carries the shift) -- the reference's nets have one bias per
convolution channel more.  Without ``use_bn`` they have biases, as there.
"""

from __future__ import annotations

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, ConvBNReLU, InnerProduct, Pool
from pynetbuilder.models.datasets import outputs, start
from pynetbuilder.models.registry import Family, require

MAX_STAGES = 5  # 32x32 images are 1x1 after five 2x2 poolings


def stage_widths(n_channels: int, stages: int) -> list[int]:
    """Widths of the stages: doubling from ``n_channels``, at most ``8 * n_channels``."""
    return [n_channels * 2 ** min(i, 3) for i in range(stages)]


def _check(n_channels: int, n_layers: tuple[int, ...], num_classes: int) -> None:
    require(n_channels >= 1, "n_channels", "a positive integer (first stage width)", n_channels)
    require(1 <= len(n_layers) <= MAX_STAGES, "n_layers",
            f"1 to {MAX_STAGES} convolution counts (one per stage)", n_layers)
    require(all(n >= 1 for n in n_layers), "n_layers",
            "positive convolution counts (one per stage)", n_layers)
    require(num_classes >= 1, "num_classes", "a positive integer", num_classes)


def vgg(
    n_channels: int = 64,
    n_layers: tuple[int, ...] = (2, 2, 3, 3, 3),
    use_bn: bool = True,
    num_classes: int = 10,
    *,
    data: ClassificationData | None = None,
) -> Net:
    """VGG-like CIFAR net: stages of 3x3 convs (+BN) + ReLU and 2x2 max pooling, one fc.

    ``n_channels``: first stage width (doubling per stage up to 8x);
    ``n_layers``: convolutions per stage (1 to 5 stages); ``use_bn``: BatchNorm
    after every convolution.  Default: the reference's "VGG-like depth 15, w/ BN,
    channel 64" (2, 2, 3, 3, 3 convolutions of widths 64, 128, 256, 512, 512).
    """
    n_layers = tuple(n_layers)
    _check(n_channels, n_layers, num_classes)
    name = f"vgg_{n_channels}_{'_'.join(map(str, n_layers))}{'_bn' if use_bn else ''}"
    net, x, label = start(name, "cifar", data)
    for stage, (width, count) in enumerate(zip(stage_widths(n_channels, len(n_layers)),
                                               n_layers), start=1):
        with net.scope(f"stage{stage}", block=True):
            for i in range(1, count + 1):
                x = ConvBNReLU(f"conv{i}", width, 3, bn=use_bn)(net, x)
            x = Pool("pool", "MAX", 2, stride=2)(net, x)
    logits = InnerProduct("fc", num_classes)(net, x)
    outputs(net, logits, label, "cifar")
    return net


FAMILIES = [
    Family("vgg", vgg, "cifar", {
        "VGG-15 BN 64": {"n_channels": 64, "n_layers": (2, 2, 3, 3, 3), "use_bn": True},
    }),
]
