"""MobileNet's depthwise separable convolution."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.blocks import ConvBNReLU
from pynetbuilder.legos.checks import check_positive, check_stride


class DepthwiseSeparable(Lego):
    """A 3x3 depthwise convolution then a 1x1 pointwise one, each + BN + Scale + ReLU.

    Layers, inside the scope ``name`` (a lego block): ``dw`` (3x3 convolution, pad 1,
    ``group`` = its input's channels = its output channels, so each channel is
    filtered alone; ``stride`` sits here) with ``dw_bn``, ``dw_scale``, ``dw_relu``;
    then ``pw`` (1x1 convolution to ``num_output`` channels, stride 1) with ``pw_bn``,
    ``pw_scale``, ``pw_relu``.  Neither convolution has a bias (Scale carries the
    shift).  BVLC Caffe has no depthwise layer type: a grouped ``Convolution`` is the
    depthwise convolution.  No shortcut (MobileNet v1).  Top: ``<name>_pw``.
    """

    def __init__(self, name: str, num_output: int, *, stride: int = 1):
        check_positive(f"{name}: num_output", num_output)
        check_stride(name, stride)
        self.name, self.num_output, self.stride = name, num_output, stride

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        channels = net.blob_shape(x)[1]
        with net.scope(self.name, block=True):
            x = ConvBNReLU("dw", channels, 3, stride=self.stride, group=channels)(net, x)
            return ConvBNReLU("pw", self.num_output, 1).attach(net, [x])
