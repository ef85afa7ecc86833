"""SqueezeNet's Fire module: a 1x1 squeeze, then 1x1 and 3x3 expansions side by side."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.blocks import ConvReLU
from pynetbuilder.legos.checks import check_positive
from pynetbuilder.legos.primitives import Concat


class Fire(Lego):
    """``concat(relu(expand1x1(s)), relu(expand3x3(s)))`` with ``s = relu(squeeze1x1(x))``.

    Layers, inside the scope ``name`` (a lego block): ``squeeze1x1`` (1x1 convolution
    to ``squeeze`` channels, with bias) + ``squeeze1x1_relu``; ``expand1x1`` (1x1 to
    ``expand1x1`` channels) and ``expand3x3`` (3x3, pad 1, to ``expand3x3`` channels),
    each with bias and its ReLU, both reading the squeezed blob; ``concat`` joins them
    along the channels.  Stride 1 throughout: the output has the input's height and
    width and ``expand1x1 + expand3x3`` channels.  Top: ``<name>_concat``.
    """

    def __init__(self, name: str, squeeze: int, expand1x1: int, expand3x3: int):
        for what, value in (("squeeze", squeeze), ("expand1x1", expand1x1),
                            ("expand3x3", expand3x3)):
            check_positive(f"{name}: fire {what}", value)
        self.name = name
        self.squeeze, self.expand1x1, self.expand3x3 = squeeze, expand1x1, expand3x3

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        with net.scope(self.name, block=True):
            s = ConvReLU("squeeze1x1", self.squeeze, 1)(net, x)
            e1 = ConvReLU("expand1x1", self.expand1x1, 1)(net, s)
            e3 = ConvReLU("expand3x3", self.expand3x3, 3, pad=1)(net, s)
            return Concat("concat").attach(net, [e1, e3])
