"""Shake-shake regularisation legos (Gastaldi, "Shake-Shake regularization", 2017).

- :class:`ShakeShake` joins two residual branches: a per-sample random convex
  combination in the train net (the Caffe Python layer
  :mod:`pynetbuilder.caffe_layers.shake_shake`), their average in the test and
  deploy nets (``Eltwise`` SUM with coefficients 0.5, 0.5).
- :class:`ShakeShakeShortcut` is the paper's downsampling shortcut.
- :class:`ShakeShakeBlock` is one residual block of a shake-shake network.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net, Phase
from pynetbuilder.legos.base import Lego
from pynetbuilder.legos.blocks import ConvBN, ConvBNReLU
from pynetbuilder.legos.checks import check_positive, check_stride
from pynetbuilder.legos.primitives import BatchNorm, Concat, Conv, Eltwise, ReLU, Scale

PYTHON_MODULE = "pynetbuilder.caffe_layers.shake_shake"
PYTHON_LAYER = "ShakeShake"
_TRAIN = frozenset({Phase.TRAIN})
_TEST_DEPLOY = frozenset({Phase.TEST, Phase.DEPLOY})


class ShakeShake(Lego):
    """``y = alpha * x1 + (1 - alpha) * x2`` per sample; one layer named ``name`` per phase.

    TRAIN: a ``Python`` layer (module :data:`PYTHON_MODULE`, class ``ShakeShake``)
    drawing ``alpha ~ U(0, 1)`` per sample in forward and an independent
    ``beta ~ U(0, 1)`` per sample in backward.  TEST and deploy: ``Eltwise`` SUM
    with ``coeff: 0.5 coeff: 0.5`` (the expected value).  Both layers write the
    same top, ``name``.  ``seed`` (optional) makes the Python layer's draws
    repeatable (pass a different one per layer).
    """

    def __init__(self, name: str = "shake", *, seed: int | None = None):
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise UsageError(f"{name}: seed must be a non-negative integer, got {seed!r}")
        self.name = name
        self.seed = seed

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        if len(bottoms) != 2:
            raise UsageError(f"{self.name}: shake-shake joins two branches, got {len(bottoms)}")
        available = net.phases_of(bottoms[0]) & net.phases_of(bottoms[1])
        tops: list[str] = []
        if available & _TRAIN:
            python = {"module": PYTHON_MODULE, "layer": PYTHON_LAYER}
            if self.seed is not None:
                python["param_str"] = f'{{"seed": {self.seed}}}'
            tops = net.layer("Python", bottoms, name=self.name, phases=_TRAIN, **python)
        if available & _TEST_DEPLOY:
            tops = Eltwise(self.name, "SUM", coeff=(0.5, 0.5), phases=available & _TEST_DEPLOY
                           ).attach(net, bottoms)
        return tops


class ShakeShakeShortcut(Lego):
    """The shake-shake paper's shortcut where a block changes width (and maybe size).

    ``relu(x)`` feeds two paths of ``num_output / 2`` channels each, both 1x1
    convolutions without bias at the block's stride ``s`` (1 or 2):

    - path 1 samples ``x`` at rows/columns ``0, s, 2s, ...``: ``conv1``, a 1x1
      convolution with stride ``s``;
    - path 2 samples ``x`` shifted by one pixel down and right (zero past the
      last row/column) at ``1, 1 + s, ...``: ``conv2``, a 1x1 convolution with
      stride ``s`` and pad 1 (its output ``i`` sees ``x[s*i - 1]``, 0 in the
      padding), then ``crop`` (``Crop`` axis 2, offset ``2 / s``, to path 1's
      size), which keeps exactly outputs ``x[s*j + 1]``, with zeros where
      ``s*j + 1`` lies past the input: the reference's ``pad(x[:, :, 1:, 1:])``;

    then ``concat`` (path 1's channels first) and BatchNorm + Scale (``bn``,
    ``scale``).  Convolving before cropping is exact because a 1x1 convolution
    without bias maps the zero padding to zero; it costs ``conv2`` a
    ``(H/s + 2/s)^2 / (H/s)^2`` share more MACs than convolving the sampled
    input would (a Crop cannot shift without a reference blob of the shifted size).
    The bottom given is ``relu(x)``.
    """

    def __init__(self, name: str, num_output: int, stride: int):
        if not isinstance(num_output, int) or num_output < 2 or num_output % 2:
            raise UsageError(f"{name}: num_output must be an even integer >= 2 (two halves), "
                             f"got {num_output!r}")
        check_stride(name, stride)
        self.name, self.num_output, self.stride = name, num_output, stride

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        half, s = self.num_output // 2, self.stride
        with net.scope(self.name):
            y1 = Conv("conv1", half, 1, stride=s, pad=0, bias_term=False)(net, x)
            y2 = Conv("conv2", half, 1, stride=s, pad=1, bias_term=False)(net, x)
            y2 = net.layer("Crop", [y2, y1], name="crop", axis=2, offset=[2 // s])[0]
            z = Concat("concat")(net, y1, y2)
            BatchNorm("bn")(net, z)
            Scale("scale")(net, z)
        return [z]


class ShakeShakeBlock(Lego):
    """One shake-shake residual block, ``shortcut(x) + shake(branch1(r), branch2(r))``
    with ``r = relu(x)`` (layer ``relu``, not in place: the identity shortcut reads
    ``x`` itself) and no ReLU after the sum (layer ``add``).

    Each branch (``branch1``, ``branch2``): 3x3 conv (``num_output``, stride
    ``stride``, no bias) + BN + Scale + ReLU (``branchKa``), 3x3 conv + BN + Scale
    (``branchKb``).  The shortcut is ``x`` where the width stays and the stride
    is 1, else :class:`ShakeShakeShortcut` (``shortcut_*``).  ``seed`` seeds the
    train net's Python layer (default: fresh randomness).
    """

    def __init__(self, name: str, num_output: int, stride: int = 1, *,
                 seed: int | None = None):
        check_positive(f"{name}: num_output", num_output)
        check_stride(name, stride)
        self.name, self.num_output, self.stride, self.seed = name, num_output, stride, seed

    def _branch(self, net: Net, label: str, r: str) -> str:
        x = ConvBNReLU(f"{label}a", self.num_output, 3, stride=self.stride)(net, r)
        return ConvBN(f"{label}b", self.num_output, 3)(net, x)

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        (x,) = bottoms
        with net.scope(self.name, block=True):
            r = ReLU("relu", inplace=False)(net, x)
            b1 = self._branch(net, "branch1", r)
            b2 = self._branch(net, "branch2", r)
            y = ShakeShake("shake", seed=self.seed)(net, b1, b2)
            if self.stride == 1 and net.blob_shape(x)[1] == self.num_output:
                short = x
            else:
                short = ShakeShakeShortcut("shortcut", self.num_output, self.stride)(net, r)
            return Eltwise("add")(net, short, y)
