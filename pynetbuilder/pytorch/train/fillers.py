"""A train net's initial weights from its prototxt's fillers, as Caffe's ``filler.hpp``
defines them (the distributions; the random streams are torch's, seeded).

Which filler fills which blob: Convolution / Deconvolution / InnerProduct
``weight_filler`` and ``bias_filler``; Scale ``filler`` (default constant 1) and
``bias_filler``; Bias ``filler``; PReLU ``filler`` (default constant 0.25);
Normalize ``scale_filler`` (default constant 1); BatchNorm's three blobs 0.  A
filler type or a layer with blobs the engine does not know is refused by name.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2

_SOURCES = {
    "Convolution": ("convolution_param", ("weight_filler", "bias_filler")),
    "Deconvolution": ("convolution_param", ("weight_filler", "bias_filler")),
    "InnerProduct": ("inner_product_param", ("weight_filler", "bias_filler")),
    "Scale": ("scale_param", ("filler", "bias_filler")),
    "Bias": ("bias_param", ("filler",)),
    "PReLU": ("prelu_param", ("filler",)),
    "Normalize": ("norm_param", ("scale_filler",)),
}
_DEFAULTS = {("Scale", 0): 1.0, ("PReLU", 0): 0.25, ("Normalize", 0): 1.0}


def fill(module: Any, generator: torch.Generator) -> None:
    """Every parameter blob of ``module`` (a train-phase CaffeNet) from its filler."""
    layers = {layer.name: layer for layer in module.net_param.layer}
    with torch.no_grad():
        for name, mod in module.layer_modules.items():
            layer = layers[name]
            for i, tensor in enumerate(mod.caffe_blobs()):
                if layer.type == "BatchNorm":
                    tensor.zero_()
                    continue
                if layer.type not in _SOURCES:
                    raise UsageError(f"layer {name!r} ({layer.type}) has parameter blobs the "
                                     "torch engine cannot initialise: start from --weights")
                field, fillers = _SOURCES[layer.type]
                p = getattr(layer, field)
                filler = None
                if i < len(fillers) and p.HasField(fillers[i]):
                    filler = getattr(p, fillers[i])
                default = _DEFAULTS.get((layer.type, i), 0.0)
                _fill(tensor, filler, default, generator, f"layer {name!r} blob {i}")


def _fill(t: torch.Tensor, f: Any, default: float, gen: torch.Generator, what: str) -> None:
    if f is None:
        t.fill_(default)
        return
    kind = f.type
    shape = tuple(t.shape)
    count = t.numel()
    fan_in = count // shape[0] if shape else count
    fan_out = count // shape[1] if len(shape) > 1 else count
    norm = f.variance_norm
    n = {caffe_pb2.FillerParameter.FAN_IN: fan_in,
         caffe_pb2.FillerParameter.FAN_OUT: fan_out}.get(norm, (fan_in + fan_out) / 2.0)
    if kind == "constant":
        t.fill_(f.value)
    elif kind == "uniform":
        t.uniform_(f.min, f.max, generator=gen)
    elif kind == "gaussian":
        if f.sparse >= 0:
            raise UsageError(f"{what}: a sparse gaussian filler is not reproduced; start from "
                             "--weights")
        t.normal_(f.mean, f.std, generator=gen)
    elif kind == "xavier":
        scale = math.sqrt(3.0 / n)
        t.uniform_(-scale, scale, generator=gen)
    elif kind == "msra":
        t.normal_(0.0, math.sqrt(2.0 / n), generator=gen)
    elif kind == "bilinear":
        k = shape[-1]
        factor = math.ceil(k / 2.0)
        c = (2 * factor - 1 - factor % 2) / (2.0 * factor)
        flat = t.view(-1)
        for i in range(count):
            x, y = i % k, (i // k) % shape[-2]
            flat[i] = (1 - abs(x / factor - c)) * (1 - abs(y / factor - c))
    else:
        raise UsageError(f"{what}: filler type {kind!r} is not reproduced by the torch engine; "
                         "start from --weights")
