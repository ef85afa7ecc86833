"""Legos for single Caffe layers, with the defaults a Caffe user expects.

Each default is visible in the constructor's signature; an argument the user
passes replaces it.  Net-wide defaults from ``net.defaults(...)`` sit below both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import ALL_PHASES, Phase
from pynetbuilder.legos.base import LayerLego
from pynetbuilder.legos.checks import check_positive

Size = int | tuple[int, int]

# Learning-rate / decay multipliers for weights and biases (Caffe's classic choice:
# biases learn twice as fast and are not decayed).
WEIGHT_SPEC = {"lr_mult": 1, "decay_mult": 1}
BIAS_SPEC = {"lr_mult": 2, "decay_mult": 0}


def _pair(value: Size, what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) for v in pair):
        raise UsageError(f"{what} must be an int or a (height, width) pair, not {value!r}")
    return pair  # type: ignore[return-value]


def _geometry(name: str, value: Size, minimum: int) -> dict[str, Any]:
    """``kernel_size: 3`` for a square value, ``kernel_h``/``kernel_w`` otherwise."""
    h, w = _pair(value, name)
    if h < minimum or w < minimum:
        raise UsageError(f"{name} must be >= {minimum}, got {value!r}")
    field = "kernel_size" if name == "kernel" else name
    if h == w:
        return {field: h}
    return {f"{name}_h": h, f"{name}_w": w}


def _param_specs(bias_term: bool, param: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if param is not None:
        return list(param)
    return [WEIGHT_SPEC, BIAS_SPEC] if bias_term else [WEIGHT_SPEC]


class Conv(LayerLego):
    """Convolution.  ``pad`` defaults to keeping the size at stride 1 (odd kernels)."""

    def __init__(
        self,
        name: str,
        num_output: int,
        kernel: Size = 3,
        *,
        stride: Size = 1,
        pad: Size | None = None,
        dilation: int = 1,
        group: int = 1,
        bias_term: bool = True,
        weight_filler: dict[str, Any] | None = None,
        bias_filler: dict[str, Any] | None = None,
        param: Sequence[dict[str, Any]] | None = None,
        layer_type: str = "Convolution",
        **extra: Any,
    ):
        check_positive(f"{name}: num_output", num_output)
        if group < 1 or num_output % group:
            raise UsageError(f"{name}: group {group} must divide num_output {num_output}")
        if type(kernel) is int and type(stride) is int and (pad is None or type(pad) is int):
            # the common square case, without the general pair handling below
            if kernel < 1 or stride < 1 or (pad is not None and pad < 0):
                raise UsageError(f"{name}: kernel and stride must be >= 1 and pad >= 0, got "
                                 f"kernel {kernel!r}, stride {stride!r}, pad {pad!r}")
            geometry = {"kernel_size": kernel, "stride": stride,
                        "pad": dilation * (kernel - 1) // 2 if pad is None else pad}
        else:
            kh, kw = _pair(kernel, "kernel")
            if pad is None:
                pad = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
            geometry = {**_geometry("kernel", kernel, 1), **_geometry("stride", stride, 1),
                        **_geometry("pad", pad, 0)}
        params: dict[str, Any] = {"num_output": num_output, **geometry, "bias_term": bias_term,
                                  "weight_filler": weight_filler or {"type": "msra"},
                                  "param": _param_specs(bias_term, param)}
        if dilation != 1:
            params["dilation"] = dilation
        if group != 1:
            params["group"] = group
        if bias_term:
            params["bias_filler"] = bias_filler or {"type": "constant", "value": 0}
        self._configure(layer_type, name, params, extra)


# BatchNorm's three statistics blobs are never learnt; TEST and deploy use them as they are.
# Read-only: module constants shared by every net.
_BN_STATISTICS = MappingProxyType({"param": ({"lr_mult": 0, "decay_mult": 0},) * 3})
_GLOBAL_STATS = {"use_global_stats": True}
_BN_OVERRIDES = MappingProxyType({Phase.TEST: _GLOBAL_STATS, Phase.DEPLOY: _GLOBAL_STATS})
_AFFINE = MappingProxyType({"bias_term": True})
_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


def batch_norm(net: Any, bottom: str, name: str, *, inplace: bool = True) -> str:
    """Add ``BatchNorm(name, inplace=inplace)`` to ``net`` (no lego object); its top."""
    return net.add("BatchNorm", (bottom,), name, _BN_STATISTICS, inplace=inplace,
                   overrides=_BN_OVERRIDES)[0]


def scale(net: Any, bottom: str, name: str) -> str:
    """Add ``Scale(name)`` (in place, with a bias) to ``net``; its top."""
    return net.add("Scale", (bottom,), name, _AFFINE, inplace=True)[0]


def relu(net: Any, bottom: str, name: str, negative_slope: float = 0.0) -> str:
    """Add ``ReLU(name, negative_slope=...)`` (in place) to ``net``; its top."""
    params = {"negative_slope": negative_slope} if negative_slope else _NO_PARAMS
    return net.add("ReLU", (bottom,), name, params, inplace=True)[0]


class BatchNorm(LayerLego):
    """BatchNorm, in place.  Statistics are never learnt (``lr_mult: 0`` on its three
    blobs, accepted by every Caffe); TEST and deploy nets use the global statistics."""

    def __init__(self, name: str, *, inplace: bool = True, eps: float | None = None, **extra: Any):
        params = dict(_BN_STATISTICS)
        if eps is not None:
            params["eps"] = eps
        params.update(extra)
        super().__init__("BatchNorm", name, inplace=inplace, **params)

    def attach(self, net: Any, bottoms: Sequence[str]) -> list[str]:
        return net.add("BatchNorm", bottoms, self.name, self.params, inplace=self.inplace,
                       phases=self.phases, overrides=_BN_OVERRIDES)


class Scale(LayerLego):
    """Scale with a bias: the learnt affine part that follows BatchNorm."""

    def __init__(self, name: str, *, inplace: bool = True, bias_term: bool = True, **extra: Any):
        super().__init__("Scale", name, inplace=inplace, bias_term=bias_term, **extra)


class ReLU(LayerLego):
    def __init__(self, name: str, *, inplace: bool = True, negative_slope: float = 0.0,
                 **extra: Any):
        if negative_slope:
            extra["negative_slope"] = negative_slope
        super().__init__("ReLU", name, inplace=inplace, **extra)


class Pool(LayerLego):
    """Pooling; ``global_pooling=True`` averages or maxes the whole feature map."""

    def __init__(
        self,
        name: str,
        pool: str = "MAX",
        kernel: Size | None = None,
        *,
        stride: Size = 1,
        pad: Size = 0,
        global_pooling: bool = False,
        **extra: Any,
    ):
        if pool not in ("MAX", "AVE"):
            raise UsageError(f"{name}: pool must be MAX or AVE, not {pool!r}")
        params: dict[str, Any] = {"pool": pool}
        if global_pooling:
            params["global_pooling"] = True
        else:
            if kernel is None:
                raise UsageError(f"{name}: a kernel size is needed unless global_pooling")
            params.update(_geometry("kernel", kernel, 1))
            params.update(_geometry("stride", stride, 1))
            if pad != 0:
                params.update(_geometry("pad", pad, 0))
        params.update(extra)
        super().__init__("Pooling", name, **params)


class InnerProduct(LayerLego):
    def __init__(
        self,
        name: str,
        num_output: int,
        *,
        bias_term: bool = True,
        weight_filler: dict[str, Any] | None = None,
        bias_filler: dict[str, Any] | None = None,
        param: Sequence[dict[str, Any]] | None = None,
        **extra: Any,
    ):
        check_positive(f"{name}: num_output", num_output)
        params: dict[str, Any] = {
            "num_output": num_output,
            "bias_term": bias_term,
            "weight_filler": weight_filler or {"type": "gaussian", "std": 0.01},
            "param": _param_specs(bias_term, param),
        }
        if bias_term:
            params["bias_filler"] = bias_filler or {"type": "constant", "value": 0}
        params.update(extra)
        super().__init__("InnerProduct", name, **params)


class Eltwise(LayerLego):
    def __init__(self, name: str, operation: str = "SUM", *,
                 coeff: Sequence[float] | None = None, **extra: Any):
        if operation not in ("SUM", "PROD", "MAX"):
            raise UsageError(f"{name}: operation must be SUM, PROD or MAX, not {operation!r}")
        params: dict[str, Any] = {"operation": operation}
        if coeff:
            params["coeff"] = list(coeff)
        if extra:
            params.update(extra)
        super().__init__("Eltwise", name, **params)


class Concat(LayerLego):
    def __init__(self, name: str, *, axis: int = 1, **extra: Any):
        if axis != 1:
            extra["axis"] = axis
        super().__init__("Concat", name, **extra)


class Dropout(LayerLego):
    def __init__(self, name: str, ratio: float = 0.5, *, inplace: bool = True, **extra: Any):
        if not 0.0 <= ratio < 1.0:
            raise UsageError(f"{name}: dropout ratio must be in [0, 1), got {ratio!r}")
        super().__init__("Dropout", name, inplace=inplace, dropout_ratio=ratio, **extra)


class Softmax(LayerLego):
    def __init__(self, name: str = "prob", *, phases: frozenset[Phase] = frozenset({Phase.DEPLOY}),
                 **extra: Any):
        super().__init__("Softmax", name, phases=phases, **extra)


class SoftmaxWithLoss(LayerLego):
    def __init__(self, name: str = "loss", *,
                 phases: frozenset[Phase] = frozenset({Phase.TRAIN, Phase.TEST}), **extra: Any):
        super().__init__("SoftmaxWithLoss", name, phases=phases, **extra)


class Accuracy(LayerLego):
    def __init__(self, name: str = "accuracy", top_k: int = 1, *,
                 phases: frozenset[Phase] = frozenset({Phase.TEST}), **extra: Any):
        if top_k != 1:
            extra["top_k"] = top_k
        super().__init__("Accuracy", name, phases=phases, **extra)


class Input(LayerLego):
    """An ``Input`` layer with fixed shapes (deploy nets by default)."""

    def __init__(self, name: str, shapes: Sequence[Sequence[int]], *,
                 tops: Sequence[str] | None = None,
                 phases: frozenset[Phase] = frozenset({Phase.DEPLOY}), **extra: Any):
        for shape in shapes:
            if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
                raise UsageError(f"{name}: input shape must be positive integers, got {shape!r}")
        self.tops = list(tops) if tops else [name]
        super().__init__(
            "Input", name, phases=phases,
            shape=[{"dim": list(s)} for s in shapes], **extra,
        )

    def attach(self, net: Any, bottoms: Sequence[str]) -> list[str]:
        return net.layer("Input", [], name=self.name, tops=self.tops, phases=self.phases,
                         **self.params)


__all__ = [
    "ALL_PHASES", "Accuracy", "BatchNorm", "Concat", "Conv", "Dropout", "Eltwise",
    "InnerProduct", "Input", "Pool", "ReLU", "Scale", "Softmax", "SoftmaxWithLoss",
    "batch_norm", "relu", "scale",
]
