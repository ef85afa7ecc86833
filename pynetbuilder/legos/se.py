"""Squeeze-and-excitation: rescale each channel by a gate computed from the whole map."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.checks import check_positive
from pynetbuilder.legos.primitives import InnerProduct, Pool, ReLU, Scale


class SqueezeExcitation(Lego):
    """``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` per channel.

    Layers (inside the current scope): ``se_pool`` (global average pooling,
    N x C x 1 x 1), ``se_fc1`` (C -> ``reduced_channels``, with bias), ``se_relu``,
    ``se_fc2`` (-> C, with bias), ``se_gate`` (Sigmoid, N x C) and ``se_scale``
    (a two-input Scale with ``axis: 0``: Caffe needs the gate's shape to match a
    contiguous span of the data's axes, and N x C matches axes 0-1 of N x C x H x W).
    The fully connected layers equal the 1x1 convolutions of PyTorch SE modules
    in parameters and multiply-accumulates.  Top: ``se_scale``.
    """

    def __init__(self, channels: int, reduced_channels: int, *, prefix: str = "se"):
        for what, value in (("channels", channels), ("reduced_channels", reduced_channels)):
            check_positive(f"squeeze-excitation {what}", value)
        self.channels, self.reduced, self.prefix = channels, reduced_channels, prefix

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        p = self.prefix
        s = Pool(f"{p}_pool", "AVE", global_pooling=True)(net, x)
        s = InnerProduct(f"{p}_fc1", self.reduced, weight_filler={"type": "msra"})(net, s)
        s = ReLU(f"{p}_relu")(net, s)
        s = InnerProduct(f"{p}_fc2", self.channels, weight_filler={"type": "msra"})(net, s)
        gate = net.layer("Sigmoid", [s], name=f"{p}_gate", inplace=True)[0]
        return Scale(f"{p}_scale", inplace=False, bias_term=False, axis=0).attach(net, [x, gate])
