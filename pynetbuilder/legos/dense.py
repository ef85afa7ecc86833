"""Densely connected legos (DenseNet): pre-activation convolutions, dense layers, transitions.

A dense layer appends ``growth_rate`` new channels to its input: ``concat[x, f(x)]``,
``f`` being one (basic) or two (bottleneck) pre-activation composite layers
BN-ReLU-conv.  Since ``x`` itself goes on into the Concat, the BatchNorm that
reads it must not overwrite it: :class:`PreActConv` writes its normalised input
to a new blob unless told the input has no other reader.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.blocks import BNReLU
from pynetbuilder.legos.checks import check_positive
from pynetbuilder.legos.primitives import Concat, Conv, Dropout, Pool


def _rate(what: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UsageError(f"{what} must be in [0, 1), got {value!r}")


class PreActConv(Lego):
    """Pre-activation composite layer: BatchNorm + Scale, ReLU, convolution (no bias),
    then Dropout when ``drop_rate`` > 0.

    Layers: ``<name>_bn`` (top ``<name>_bn``, or in place with ``inplace=True``),
    ``<name>_scale`` and ``<name>_relu`` (in place), ``<name>`` (the convolution,
    ``kernel`` x ``kernel``, stride 1, size-keeping padding) and ``<name>_drop``
    (in place on the convolution's output).  Keep ``inplace=False`` whenever another
    layer also reads the input (a Concat or a shortcut).
    """

    def __init__(
        self,
        name: str,
        num_output: int,
        kernel: int = 3,
        *,
        drop_rate: float = 0.0,
        inplace: bool = False,
    ):
        check_positive(f"{name}: num_output", num_output)
        _rate(f"{name}: drop_rate", drop_rate)
        self.name, self.num_output, self.kernel = name, num_output, kernel
        self.drop_rate, self.inplace = drop_rate, inplace

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        (y,) = BNReLU(self.name, inplace=self.inplace).attach(net, [x])
        (y,) = Conv(self.name, self.num_output, self.kernel, bias_term=False).attach(net, [y])
        if self.drop_rate > 0:
            Dropout(f"{self.name}_drop", self.drop_rate).attach(net, [y])
        return [y]


class DenseLayer(Lego):
    """One dense layer in its own block scope ``name``: ``concat[x, f(x)]``, the input first.

    ``f`` (layer names inside the scope):
      - basic: ``conv`` = BN-ReLU-3x3 conv to ``growth_rate`` channels;
      - bottleneck (DenseNet-B): ``conv1`` = BN-ReLU-1x1 conv to ``4 * growth_rate``,
        then ``conv2`` = BN-ReLU-3x3 conv to ``growth_rate``;
    each convolution followed by Dropout when ``drop_rate`` > 0.  ``concat`` joins
    the input and the new channels (its top is the layer's output).
    """

    def __init__(self, name: str, growth_rate: int, *, bottleneck: bool = False,
                 drop_rate: float = 0.0):
        check_positive(f"{name}: growth_rate", growth_rate)
        _rate(f"{name}: drop_rate", drop_rate)
        self.name, self.growth_rate = name, growth_rate
        self.bottleneck, self.drop_rate = bottleneck, drop_rate

    def _composites(self) -> list[PreActConv]:
        k, p = self.growth_rate, self.drop_rate
        if not self.bottleneck:
            return [PreActConv("conv", k, 3, drop_rate=p)]
        # the second BN reads the 1x1 output alone, so it may work in place
        return [PreActConv("conv1", 4 * k, 1, drop_rate=p),
                PreActConv("conv2", k, 3, drop_rate=p, inplace=True)]

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        with net.scope(self.name, block=True):
            y = x
            for composite in self._composites():
                (y,) = composite.attach(net, [y])
            return Concat("concat").attach(net, [x, y])


class Transition(Lego):
    """DenseNet transition in block scope ``name``: BN-ReLU-1x1 conv to ``num_output``
    channels (``conv``; Dropout ``conv_drop`` when ``drop_rate`` > 0), then 2x2
    average pooling with stride 2 (``pool``), halving height and width.

    The BatchNorm works in place: a transition is the only reader of a dense
    block's output."""

    def __init__(self, name: str, num_output: int, *, drop_rate: float = 0.0):
        check_positive(f"{name}: num_output", num_output)
        _rate(f"{name}: drop_rate", drop_rate)
        self.name, self.num_output, self.drop_rate = name, num_output, drop_rate

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        with net.scope(self.name, block=True):
            (y,) = PreActConv("conv", self.num_output, 1, drop_rate=self.drop_rate,
                              inplace=True).attach(net, bottoms)
            return Pool("pool", "AVE", 2, stride=2).attach(net, [y])


__all__ = ["DenseLayer", "PreActConv", "Transition"]
