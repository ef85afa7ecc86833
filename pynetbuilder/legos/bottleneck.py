"""The post-activation bottleneck with its stride on the 3x3 (and grouped 3x3 for ResNeXt)."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.blocks import ConvBN, ConvBNReLU, EltwiseReLU
from pynetbuilder.legos.checks import check_positive, check_stride


class BottleneckBlock(Lego):
    """``relu(branch(x) + shortcut(x))`` with a 1x1 - 3x3 - 1x1 branch.

    Branch: ``branch2a`` 1x1 ``inner``, ``branch2b`` 3x3 ``inner`` with the block's
    ``stride`` and ``group`` groups (ResNeXt's cardinality; 1 for ResNet),
    ``branch2c`` 1x1 ``num_output``; each convolution without bias, followed by
    BN + Scale, and ReLU on all but ``branch2c``.  Unlike :class:`ShortcutLego`'s
    bottleneck (stride on the first 1x1, as the original Caffe ResNets) the stride
    sits on the 3x3 ("ResNet v1.5", the CIFAR ResNets and ResNeXts).

    Shortcut: identity, or ``branch1`` (1x1 convolution with the stride + BN +
    Scale) where the shape changes.  Then ``add`` and ``relu``.
    """

    def __init__(self, name: str, num_output: int, inner: int, *, stride: int = 1,
                 group: int = 1):
        for what, value in (("num_output", num_output), ("inner", inner), ("group", group)):
            check_positive(f"{name}: {what}", value)
        if inner % group:
            raise UsageError(f"{name}: group {group} must divide the inner width {inner}")
        check_stride(name, stride)
        self.name, self.num_output, self.inner = name, num_output, inner
        self.stride, self.group = stride, group

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        with net.scope(self.name, block=True):
            short = x
            if self.stride != 1 or net.blob_shape(x)[1] != self.num_output:
                short = ConvBN("branch1", self.num_output, 1, stride=self.stride)(net, x)
            y = ConvBNReLU("branch2a", self.inner, 1)(net, x)
            y = ConvBNReLU("branch2b", self.inner, 3, stride=self.stride, group=self.group)(net, y)
            y = ConvBN("branch2c", self.num_output, 1)(net, y)
            return EltwiseReLU().attach(net, [short, y])
