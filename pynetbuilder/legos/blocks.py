"""Hybrid legos: Conv-BN-ReLU chains and the residual ShortcutLego."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.checks import check_positive, check_quarter, check_stride
from pynetbuilder.legos.primitives import Conv, Eltwise, Size, batch_norm, scale
from pynetbuilder.legos.primitives import relu as add_relu


def normalize_and_activate(
    net: Net, bottom: str, name: str, *, bn: bool = True, relu: bool = True,
    negative_slope: float = 0.0, inplace: bool = True,
) -> str:
    """BatchNorm + Scale (``name_bn``, ``name_scale``) unless ``bn=False``, then ReLU
    (``name_relu``) unless ``relu=False``; Scale and ReLU work in place.  The top."""
    top = bottom
    if bn:
        top = batch_norm(net, bottom, name + "_bn", inplace=inplace)
        scale(net, top, name + "_scale")
    if relu:
        add_relu(net, top, name + "_relu", negative_slope)
    return top


class BNReLU(Lego):
    """BatchNorm + Scale (``name_bn``, ``name_scale``: PyTorch's affine BatchNorm2d)
    and, unless ``relu=False``, ReLU (``name_relu``).

    ``inplace=True`` overwrites the bottom; ``inplace=False`` writes a new blob
    ``name_bn`` (Scale and ReLU then work in place on it), leaving the bottom for
    other readers.
    """

    def __init__(self, name: str, *, relu: bool = True, inplace: bool = True):
        self.name, self.relu, self.inplace = name, relu, inplace

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (bottom,) = bottoms
        return [normalize_and_activate(net, bottom, self.name, relu=self.relu,
                                       inplace=self.inplace)]


class ConvBNReLU(Lego):
    """Convolution (named ``name``), BatchNorm + Scale (``name_bn``, ``name_scale``)
    and ReLU (``name_relu``), all but the convolution in place.  The convolution
    has no bias when BatchNorm follows (Scale carries the shift)."""

    def __init__(
        self,
        name: str,
        num_output: int,
        kernel: Size = 3,
        *,
        stride: Size = 1,
        pad: Size | None = None,
        bn: bool = True,
        relu: bool = True,
        negative_slope: float = 0.0,
        **conv: Any,
    ):
        conv.setdefault("bias_term", not bn)
        self.name = name
        self.conv = Conv(name, num_output, kernel, stride=stride, pad=pad, **conv)
        self.bn = bn
        self.relu = relu
        self.negative_slope = negative_slope

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (top,) = self.conv.attach(net, bottoms)
        return [normalize_and_activate(net, top, self.name, bn=self.bn, relu=self.relu,
                                       negative_slope=self.negative_slope)]


def ConvBN(name: str, num_output: int, kernel: Size = 3, **kwargs: Any) -> ConvBNReLU:  # noqa: N802
    """Convolution + BatchNorm + Scale, no ReLU."""
    return ConvBNReLU(name, num_output, kernel, relu=False, **kwargs)


def ConvReLU(name: str, num_output: int, kernel: Size = 3, **kwargs: Any) -> ConvBNReLU:  # noqa: N802
    """Convolution (with bias) + ReLU, no BatchNorm."""
    return ConvBNReLU(name, num_output, kernel, bn=False, **kwargs)


class EltwiseReLU(Lego):
    """Element-wise sum of the bottoms (``name_add`` or ``add``), then ReLU in place."""

    def __init__(self, name: str = "", operation: str = "SUM", relu: bool = True):
        self.name = name
        self.operation = operation
        self.relu = relu

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        prefix = f"{self.name}_" if self.name else ""
        (top,) = Eltwise(f"{prefix}add", self.operation).attach(net, bottoms)
        if self.relu:
            add_relu(net, top, f"{prefix}relu")
        return [top]


MAIN_BRANCHES = ("normal", "bottleneck", "inception_trick", "inception_trick_bottleneck")
SHORTCUTS = ("auto", "identity", "projection")


class ShortcutLego(Lego):
    """A residual block: ``relu(main_branch(x) + shortcut(x))``.

    main branches (``n`` = ``num_output``):
      - ``normal``: 3x3 n, 3x3 n
      - ``bottleneck``: 1x1 n/4, 3x3 n/4, 1x1 n
      - ``inception_trick``: each 3x3 of ``normal`` as a 1x3 then a 3x1
      - ``inception_trick_bottleneck``: the 3x3 of ``bottleneck`` as a 1x3 then a 3x1
    Every convolution has BN + Scale and all but the last a ReLU.  ``stride``
    sits on the first convolution (the first 1x1 of a bottleneck, as in the
    original Caffe ResNets); a strided 1x3 strides along the width and the 3x1
    that follows along the height.

    ``shortcut``: ``identity``, ``projection`` (1x1 convolution + BN with the
    block's stride) or ``auto`` (projection exactly where the shape changes).
    Layers are named ``<name>_branch2a``..., ``<name>_branch1`` (projection),
    ``<name>_add`` and ``<name>_relu``.
    """

    def __init__(
        self,
        name: str,
        main_branch: str,
        num_output: int,
        *,
        stride: int = 1,
        shortcut: str = "auto",
    ):
        if main_branch not in MAIN_BRANCHES:
            raise UsageError(
                f"main branch {main_branch!r} is unknown; allowed: {', '.join(MAIN_BRANCHES)}"
            )
        if shortcut not in SHORTCUTS:
            raise UsageError(f"shortcut {shortcut!r} is unknown; allowed: {', '.join(SHORTCUTS)}")
        check_positive(f"{name}: num_output", num_output)
        if "bottleneck" in main_branch:
            check_quarter(name, main_branch, num_output)
        check_stride(name, stride)
        self.name = name
        self.main_branch = main_branch
        self.num_output = num_output
        self.stride = stride
        self.shortcut = shortcut

    def _branch(self) -> list[ConvBNReLU]:
        n, s = self.num_output, self.stride
        q = n // 4
        if self.main_branch == "normal":
            return [ConvBNReLU("branch2a", n, 3, stride=s), ConvBN("branch2b", n, 3)]
        if self.main_branch == "bottleneck":
            return [
                ConvBNReLU("branch2a", q, 1, stride=s),
                ConvBNReLU("branch2b", q, 3),
                ConvBN("branch2c", n, 1),
            ]
        if self.main_branch == "inception_trick":
            return [
                ConvBNReLU("branch2a_1x3", n, (1, 3), stride=(1, s)),
                ConvBNReLU("branch2a_3x1", n, (3, 1), stride=(s, 1)),
                ConvBNReLU("branch2b_1x3", n, (1, 3)),
                ConvBN("branch2b_3x1", n, (3, 1)),
            ]
        return [  # inception_trick_bottleneck
            ConvBNReLU("branch2a", q, 1, stride=s),
            ConvBNReLU("branch2b_1x3", q, (1, 3)),
            ConvBNReLU("branch2b_3x1", q, (3, 1)),
            ConvBN("branch2c", n, 1),
        ]

    def needs_projection(self, net: Net, bottom: str) -> bool:
        if self.shortcut != "auto":
            return self.shortcut == "projection"
        return self.stride != 1 or net.blob_shape(bottom)[1] != self.num_output

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (bottom,) = bottoms
        with net.scope(self.name, block=True):
            if self.needs_projection(net, bottom):
                (short,) = ConvBN("branch1", self.num_output, 1, stride=self.stride).attach(
                    net, [bottom]
                )
            else:
                short = bottom
            top = bottom
            for conv in self._branch():
                (top,) = conv.attach(net, [top])
            return EltwiseReLU().attach(net, [short, top])
