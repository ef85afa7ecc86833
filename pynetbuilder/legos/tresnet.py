"""TResNet legos (Ridnik et al. 2021): space-to-depth stem, anti-aliased downsampling,
and the TResNet basic and bottleneck blocks, built from BVLC Caffe layers only.

Caffe has no SpaceToDepth, no reflection padding and no fixed-weight blur layer,
so the two special operations are composed from data-movement and pooling layers
that reproduce timm's / the paper's tensors exactly, with no weights to ship:

- :class:`SpaceToDepth` is ``Reshape`` + ``Slice`` + ``Concat`` + ``Reshape``
  (pure copies: bit-exact, nothing to learn, nothing to load);
- :class:`BlurPool` (the [1,2,1] x [1,2,1] / 16 depthwise blur with stride 2 and
  one pixel of *reflection* padding) is ``Slice`` + ``Concat`` for the reflected
  border, then two 2x2 average poolings, because [1,2,1]/4 = [1,1]/2 * [1,1]/2.

The alternatives were weaker: a fixed convolution needs one-hot or blur weights
that no Caffe filler produces (Caffe's ``bilinear`` filler for kernel 3 gives
[0.25, 0.75, 0.75] per axis, not [0.25, 0.5, 0.25]), hence a weights file that
must travel with every prototxt, and Caffe convolutions pad with zeros where
TResNet's blur reflects.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.checks import check_positive, check_stride
from pynetbuilder.legos.primitives import BatchNorm, Conv, Eltwise, Pool, ReLU, Scale
from pynetbuilder.legos.se import SqueezeExcitation

# timm / the paper: leaky ReLU slopes of inplace-ABN (here BatchNorm + Scale + ReLU).
STEM_SLOPE = 1e-2
BLOCK_SLOPE = 1e-3


class SpaceToDepth(Lego):
    """Space-to-depth with block size ``b``: N x C x H x W -> N x b*b*C x H/b x W/b.

    Output channel ``(i * b + j) * C + c`` at (h, w) is input channel ``c`` at
    ``(b*h + i, b*w + j)``: the order of timm's ``SpaceToDepth`` (view, permute to
    N, b, b, C, H/b, W/b, view), so TResNet weights load unchanged.

    Layers: ``<name>_split`` (Reshape to N x C x H/b x b x W/b x b), ``<name>_rows``
    (Slice on the row offset ``i``, tops ``<name>_i{i}``), ``<name>_i{i}_cols``
    (Slice on the column offset ``j``, tops ``<name>_i{i}j{j}``), ``<name>_concat``
    (Concat on channels in (i, j) order) and ``<name>`` (Reshape to 4 axes).  Only
    copies: the result is bit-exact and there are no weights.
    """

    def __init__(self, name: str = "s2d", block_size: int = 4):
        check_positive("space-to-depth block_size", block_size)
        self.name, self.block = name, block_size

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        n, c, h, w = net.blob_shape(x)
        b, name = self.block, self.name
        if h % b or w % b:
            raise UsageError(
                f"{name}: space-to-depth needs the input's height and width divisible by "
                f"{b}, got {h} x {w}"
            )
        x = net.layer("Reshape", [x], name=f"{name}_split", axis=2,
                      shape={"dim": [h // b, b, w // b, b]})[0]
        rows = net.layer("Slice", [x], name=f"{name}_rows", axis=3,
                         tops=[f"{name}_i{i}" for i in range(b)])
        pieces = []
        for i, row in enumerate(rows):
            pieces += net.layer("Slice", [row], name=f"{name}_i{i}_cols", axis=5,
                                tops=[f"{name}_i{i}j{j}" for j in range(b)])
        x = net.layer("Concat", pieces, name=f"{name}_concat", axis=1)[0]
        return net.layer("Reshape", [x], name=name, axis=2, shape={"dim": [h // b, w // b]})


class BlurPool(Lego):
    """Anti-aliased downsampling: TResNet's depthwise blur ``[1,2,1] x [1,2,1] / 16``
    with stride 2 after one pixel of reflection padding (timm's ``BlurPool2d``).

    Built as: reflection padding by ``Slice`` + ``Concat`` on rows, then on columns
    (row -1 is a copy of row 1; row H a copy of row H-2, added only when H is odd,
    since an even H never reaches it), then ``<name>_box`` (2x2 average pooling,
    stride 1) and ``<name>`` (2x2 average pooling, stride 2): two box filters
    [1,1]/2 make the binomial [1,2,1]/4 on each axis.  Output: ceil(H/2) x ceil(W/2),
    equal to timm's up to float rounding.  No weights, no MACs (pooling), as timm's
    blur is a fixed buffer and no ``Conv2d`` module.
    """

    def __init__(self, name: str = "blur"):
        self.name = name

    def _reflect(self, net: Net, x: str, axis: int, size: int, tag: str) -> str:
        """Pad ``x`` by reflection on ``axis``: one row/column before, one after if odd."""
        if size < 2:
            raise UsageError(f"{self.name}: reflection padding needs at least 2 "
                             f"{tag}s, got {size}")
        bottom_pad = size % 2 == 1
        ends = (1, 2, size - 2, size - 1) if bottom_pad else (1, 2)
        points = sorted({p for p in ends if 0 < p < size})
        bounds = [0, *points, size]
        tops = [f"{self.name}_{tag}{a}" if b - a == 1 else f"{self.name}_{tag}{a}to{b - 1}"
                for a, b in zip(bounds, bounds[1:])]
        pieces = net.layer("Slice", [x], name=f"{self.name}_{tag}s", axis=axis,
                           slice_point=points, tops=tops)
        single = {a: top for a, b, top in zip(bounds, bounds[1:], pieces) if b - a == 1}
        order = [single[1], *pieces] + ([single[size - 2]] if bottom_pad else [])
        return net.layer("Concat", order, name=f"{self.name}_pad_{tag}s", axis=axis)[0]

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        _, _, h, w = net.blob_shape(x)
        x = self._reflect(net, x, 2, h, "row")
        x = self._reflect(net, x, 3, w, "col")
        x = Pool(f"{self.name}_box", "AVE", 2, stride=1)(net, x)
        return Pool(self.name, "AVE", 2, stride=2).attach(net, [x])


class ConvBNAct(Lego):
    """TResNet's conv unit (timm ``ConvNormAct``): bias-free convolution ``name``,
    BatchNorm + Scale (``name_bn``, ``name_scale``: inplace-ABN's normalisation),
    leaky ReLU ``name_relu`` with ``negative_slope`` (none if ``None``), and for
    ``stride`` 2 the convolution keeps stride 1 and :class:`BlurPool` ``name_blur``
    downsamples after the activation.  ``zero_gamma`` starts the Scale at 0 (the
    paper's initialisation of the last BN of each residual branch).
    """

    def __init__(self, name: str, num_output: int, kernel: int = 3, *, stride: int = 1,
                 negative_slope: float | None = BLOCK_SLOPE, zero_gamma: bool = False):
        check_stride(name, stride)
        self.name, self.stride = name, stride
        self.conv = Conv(name, num_output, kernel, bias_term=False)
        self.slope, self.zero_gamma = negative_slope, zero_gamma

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (top,) = self.conv.attach(net, bottoms)
        BatchNorm(f"{self.name}_bn")(net, top)
        if self.zero_gamma:
            Scale(f"{self.name}_scale", filler={"type": "constant", "value": 0.0})(net, top)
        else:
            Scale(f"{self.name}_scale")(net, top)
        if self.slope is not None:
            ReLU(f"{self.name}_relu", negative_slope=self.slope)(net, top)
        if self.stride == 2:
            top = BlurPool(f"{self.name}_blur")(net, top)
        return [top]


BLOCK_KINDS = ("basic", "bottleneck")


class TResNetBlock(Lego):
    """One TResNet residual block ``relu(branch(x) + shortcut(x))`` (timm ``BasicBlock``
    / ``Bottleneck``), in scope ``name``.

    - ``basic`` (output ``planes``): ``conv1`` 3x3 (leaky ReLU 1e-3; stride 2 as
      stride 1 + blur), ``conv2`` 3x3 (no activation, zero-initialised Scale), then
      squeeze-excitation on ``planes`` channels reduced to ``max(planes // 4, 64)``.
    - ``bottleneck`` (output ``4 * planes``): ``conv1`` 1x1, ``conv2`` 3x3 (stride as
      above), both leaky ReLU 1e-3, squeeze-excitation on ``planes`` channels reduced
      to ``max(planes // 2, 64)``, then ``conv3`` 1x1 to ``4 * planes`` (no activation,
      zero-initialised Scale).
    - SE (``se_*``, with ``use_se``): global average pool, fc + ReLU, fc, sigmoid,
      both fc with bias.
    - shortcut: identity when the shape is kept; otherwise ``down_pool`` (2x2
      average pool, stride 2, ceil, dividing by the cells inside the map; only for
      stride 2) then ``down`` (1x1 convolution + BatchNorm + Scale, no activation).
    - ``add`` then ``relu`` (a plain ReLU, as timm).
    """

    def __init__(self, name: str, kind: str, planes: int, *, stride: int = 1,
                 use_se: bool = True):
        if kind not in BLOCK_KINDS:
            raise UsageError(f"{name}: block kind {kind!r} is unknown; "
                             f"allowed: {', '.join(BLOCK_KINDS)}")
        check_positive(f"{name}: planes", planes)
        check_stride(name, stride)
        self.name, self.kind, self.planes = name, kind, planes
        self.stride, self.use_se = stride, use_se

    @property
    def out_channels(self) -> int:
        return self.planes * (4 if self.kind == "bottleneck" else 1)

    def _squeeze(self, net: Net, x: str) -> str:
        if not self.use_se:
            return x
        divisor = 4 if self.kind == "basic" else 2
        reduced = max(self.planes // divisor, 64)
        return SqueezeExcitation(self.planes, reduced)(net, x)

    def _branch(self, net: Net, x: str) -> str:
        p, s = self.planes, self.stride
        if self.kind == "basic":
            x = ConvBNAct("conv1", p, 3, stride=s)(net, x)
            x = ConvBNAct("conv2", p, 3, negative_slope=None, zero_gamma=True)(net, x)
            return self._squeeze(net, x)
        x = ConvBNAct("conv1", p, 1)(net, x)
        x = ConvBNAct("conv2", p, 3, stride=s)(net, x)
        x = self._squeeze(net, x)
        return ConvBNAct("conv3", 4 * p, 1, negative_slope=None, zero_gamma=True)(net, x)

    def _shortcut(self, net: Net, x: str) -> str:
        if self.stride == 1 and net.blob_shape(x)[1] == self.out_channels:
            return x
        if self.stride == 2:
            x = Pool("down_pool", "AVE", 2, stride=2)(net, x)
        return ConvBNAct("down", self.out_channels, 1, negative_slope=None)(net, x)

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        with net.scope(self.name, block=True):
            short = self._shortcut(net, x)
            branch = self._branch(net, x)
            top = Eltwise("add")(net, short, branch)
            ReLU("relu")(net, top)
            return [top]


__all__ = ["BLOCK_KINDS", "BlurPool", "ConvBNAct", "SpaceToDepth", "TResNetBlock"]
