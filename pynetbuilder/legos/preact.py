"""Pre-activation residual legos: BN-ReLU before each convolution, no ReLU after the sum.

The block of He et al., "Identity Mappings in Deep Residual Networks" (2016), with
the options of the CIFAR pre-activation ResNets, SE-ResNets and wide ResNets
(Zagoruyko and Komodakis, 2016) of hysts/pytorch_image_classification.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.blocks import BNReLU, EltwiseReLU
from pynetbuilder.legos.checks import check_positive, check_quarter, check_stride
from pynetbuilder.legos.primitives import Conv, Dropout
from pynetbuilder.legos.se import SqueezeExcitation

PREACT_KINDS = ("basic", "bottleneck")


class PreactBlock(Lego):
    """A pre-activation residual block: ``shortcut(x) + branch(x)``, nothing after the sum.

    The branch (``n`` = ``num_output``; every convolution without bias, named
    ``branch2a``, ``branch2b``, ``branch2c``, each preceded by its BN + Scale + ReLU
    ``<conv>_bn``, ``<conv>_scale``, ``<conv>_relu``):

    - ``basic``: 3x3 n (``stride``), 3x3 n;
    - ``bottleneck``: 1x1 n/4, 3x3 n/4 (``stride`` on the 3x3), 1x1 n.

    Options, as the reference code names them:

    - ``preact_shortcut``: the first BN-ReLU is applied to the block's input in
      place, so the shortcut also reads the activated input (the first block of
      a stage in He et al.'s code); otherwise only the branch is pre-activated
      (``branch2a_bn`` writes a new blob) and the shortcut reads the raw input;
    - ``remove_first_relu``: without ``preact_shortcut``, the first BN has no ReLU
      (Han et al.'s PyramidNet finding, used by the SE-ResNet config);
    - ``add_last_bn``: BN + Scale (``last_bn``, ``last_scale``) after the last convolution;
    - ``se_reduction``: squeeze-excitation (``se_*``, width ``n // se_reduction``,
      fully connected layers with bias) on the branch's output, before the sum;
    - ``drop_rate``: Dropout (``branch2a_drop``) after the first convolution (WRN).

    Shortcut: identity, or a 1x1 convolution ``branch1`` with the block's stride and
    no BN (nor bias) where the shape changes.  Sum: ``add``.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        num_output: int,
        *,
        stride: int = 1,
        preact_shortcut: bool = False,
        remove_first_relu: bool = False,
        add_last_bn: bool = False,
        se_reduction: int = 0,
        drop_rate: float = 0.0,
    ):
        if kind not in PREACT_KINDS:
            raise UsageError(f"{name}: block kind must be one of {', '.join(PREACT_KINDS)}, "
                             f"not {kind!r}")
        check_positive(f"{name}: num_output", num_output)
        if kind == "bottleneck":
            check_quarter(name, kind, num_output)
        check_stride(name, stride)
        if se_reduction and not 1 <= se_reduction <= num_output:
            raise UsageError(f"{name}: se_reduction must be between 1 and num_output "
                             f"({num_output}), got {se_reduction!r}")
        self.name, self.kind, self.num_output, self.stride = name, kind, num_output, stride
        self.preact_shortcut = preact_shortcut
        self.remove_first_relu = remove_first_relu
        self.add_last_bn = add_last_bn
        self.se_reduction = se_reduction
        self.drop_rate = drop_rate

    def _convs(self) -> list[tuple[str, int, int, int]]:
        """(name, width, kernel, stride) of the branch's convolutions."""
        n, s = self.num_output, self.stride
        if self.kind == "basic":
            return [("branch2a", n, 3, s), ("branch2b", n, 3, 1)]
        q = n // 4
        return [("branch2a", q, 1, 1), ("branch2b", q, 3, s), ("branch2c", n, 1, 1)]

    def _branch(self, net: Net, x: str) -> str:
        """The branch from the (already pre-activated, with ``preact_shortcut``) input."""
        for i, (conv, width, kernel, stride) in enumerate(self._convs()):
            if i > 0 or not self.preact_shortcut:
                first = i == 0
                relu = not (first and self.remove_first_relu)
                (x,) = BNReLU(conv, relu=relu, inplace=not first).attach(net, [x])
            x = Conv(conv, width, kernel, stride=stride, bias_term=False)(net, x)
            if i == 0 and self.drop_rate > 0:
                x = Dropout(f"{conv}_drop", self.drop_rate)(net, x)
        if self.add_last_bn:
            (x,) = BNReLU("last", relu=False).attach(net, [x])
        if self.se_reduction:
            se = SqueezeExcitation(self.num_output, self.num_output // self.se_reduction)
            (x,) = se.attach(net, [x])
        return x

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        with net.scope(self.name, block=True):
            if self.preact_shortcut:
                first = self._convs()[0][0]
                (x,) = BNReLU(first).attach(net, [x])
            y = self._branch(net, x)
            short = x
            if self.stride != 1 or net.blob_shape(x)[1] != self.num_output:
                short = Conv("branch1", self.num_output, 1, stride=self.stride,
                             bias_term=False)(net, x)
            return EltwiseReLU(relu=False).attach(net, [short, y])
