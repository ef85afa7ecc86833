"""Sizing a net the original pynetbuilder's way: ask compiled Caffe.

Used as an independent check (tests) and as the baseline of the benchmark; the
library's own report (``pynetbuilder.report``) needs no Caffe.
"""

from __future__ import annotations

import math
from typing import Any


def legacy_counts_from_caffe(net: Any) -> tuple[int, int]:
    """("Number of params", "Number of flops") of a ``caffe.Net``: the first parameter
    blob of each layer, times the output H x W for Convolution layers."""
    types = {name: layer.type for name, layer in zip(net._layer_names, net.layers)}
    params = flops = 0
    for name, blobs in net.params.items():
        size = blobs[0].data.size
        params += size
        if types[name] == "Convolution":
            flops += size * math.prod(net.blobs[name].data.shape[2:])
        else:
            flops += size
    return params, flops
