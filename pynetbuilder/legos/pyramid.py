"""PyramidNet's residual block: widths grow a little every block, the shortcut is zero-padded.

``out = f(x) + pad(shortcut(x))``: ``shortcut`` is the identity, or 2x2 average
pooling with stride 2 where the block downsamples, and ``pad`` appends
``C_out - C_in`` channels of zeros.

Zero padding, exactly and with layers BVLC Caffe master has: adding zeros to the
last ``C_out - C_in`` channels of ``f(x)`` leaves them unchanged, so the block
Slices ``f(x)`` at channel ``C_in`` into a head (``C_in`` channels) and a tail,
adds the shortcut to the head (Eltwise SUM) and Concats ``[sum, tail]``.  Every
output value and every gradient is bit for bit what ``f(x) + pad(shortcut(x))``
gives (``a + 0 == a``; the tail's gradient passes through unchanged); nothing
is learnt, nothing depends on the batch size, and no zero tensor is made or
added.  (The alternative, zeros from a Power layer with scale 0, a Slice, a
Silence for the unused part and a Concat onto the shortcut, needs two more
layers, a blob of zeros as large as the block's output and as many additions.)
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.blocks import ConvBN, ConvBNReLU
from pynetbuilder.legos.checks import check_positive, check_quarter, check_stride
from pynetbuilder.legos.primitives import BatchNorm, Concat, Eltwise, Pool, Scale

PYRAMID_BRANCHES = ("basic", "bottleneck")


class PyramidBlock(Lego):
    """One PyramidNet block in block scope ``name``, ``num_output`` channels out.

    Residual branch (no ReLU on the block's input nor after the addition):
      - basic: ``bn`` (BatchNorm + Scale ``bn_scale``), ``conv1`` 3x3 with the
        block's stride + BN + ReLU, ``conv2`` 3x3 + BN;
      - bottleneck: ``bn``, ``conv1`` 1x1 to ``num_output / 4`` + BN + ReLU,
        ``conv2`` 3x3 ``num_output / 4`` with the block's stride + BN + ReLU,
        ``conv3`` 1x1 to ``num_output`` + BN.
    Convolutions have no bias (a BatchNorm follows each).  ``bn`` writes a new
    blob: the shortcut reads the block's input too.

    Shortcut: the input, or ``shortcut_pool`` (2x2 average, stride 2) when
    ``stride`` is 2.  Same width: ``add`` (Eltwise SUM).  Wider (the usual case):
    ``slice`` splits the branch at the input's width into ``slice_head`` and
    ``slice_tail``, ``add`` sums the head and the shortcut, ``concat`` appends the
    tail (the zero padding, see the module docstring).
    """

    def __init__(self, name: str, branch: str, num_output: int, *, stride: int = 1):
        if branch not in PYRAMID_BRANCHES:
            raise UsageError(
                f"{name}: branch {branch!r} is unknown; allowed: {', '.join(PYRAMID_BRANCHES)}"
            )
        check_positive(f"{name}: num_output", num_output)
        if branch == "bottleneck":
            check_quarter(name, branch, num_output)
        check_stride(name, stride)
        self.name, self.branch, self.num_output, self.stride = name, branch, num_output, stride

    def _convs(self) -> list[ConvBNReLU]:
        n, s = self.num_output, self.stride
        if self.branch == "basic":
            return [ConvBNReLU("conv1", n, 3, stride=s), ConvBN("conv2", n, 3)]
        q = n // 4
        return [ConvBNReLU("conv1", q, 1), ConvBNReLU("conv2", q, 3, stride=s),
                ConvBN("conv3", n, 1)]

    def _residual(self, net: Net, x: str) -> str:
        (y,) = BatchNorm("bn", inplace=False).attach(net, [x])
        Scale("bn_scale").attach(net, [y])
        for conv in self._convs():
            (y,) = conv.attach(net, [y])
        return y

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        width = net.blob_shape(x)[1]
        if width > self.num_output:
            raise UsageError(f"{self.name}: a pyramid block cannot narrow its input "
                             f"({width} channels) to {self.num_output}")
        with net.scope(self.name, block=True):
            y = self._residual(net, x)
            short = x
            if self.stride == 2:
                short = Pool("shortcut_pool", "AVE", 2, stride=2)(net, x)
            if width == self.num_output:
                return Eltwise("add").attach(net, [y, short])
            head, tail = net.layer("Slice", [y], name="slice", tops=["slice_head", "slice_tail"],
                                   axis=1, slice_point=[width])
            total = Eltwise("add")(net, head, short)
            return Concat("concat").attach(net, [total, tail])


__all__ = ["PYRAMID_BRANCHES", "PyramidBlock"]
