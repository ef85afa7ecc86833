"""What every emitted layer module shares.

An emitter turns one Caffe ``LayerParameter`` (with the shapes of its bottoms and
tops in the analysed phase) into a small ``nn.Module``: ``forward(*bottoms)`` gives
its top (one tensor) or tops (a tuple), with Caffe's semantics in that phase.
``blob_names`` lists the module's parameters and buffers in the order of Caffe's
parameter blobs (``layer.blobs[i]`` in a ``.caffemodel``), each shaped exactly as
Caffe's blob.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pynetbuilder.errors import NetError

Shape = tuple[int, ...]


class CaffeLayer(nn.Module):
    """Base of every emitted layer (``blob_names``: Caffe's parameter blobs in order)."""

    blob_names: tuple[str, ...] = ()
    # False for a layer whose computation depends on its input's values in Python
    # (it runs eagerly): a trace (ONNX, TorchScript) would keep one input's result
    # as a constant, so export refuses it
    traceable: bool = True

    def caffe_blobs(self) -> list[torch.Tensor]:
        return [getattr(self, n) for n in self.blob_names]


def param(shape: Sequence[int], fan_in: int = 0) -> nn.Parameter:
    """A learnable blob, initialised uniformly in +-1/sqrt(fan_in) (as torch's layers)."""
    t = torch.empty(tuple(shape))
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 1.0
    nn.init.uniform_(t, -bound, bound)
    return nn.Parameter(t)


def caffe_axis(axis: int, ndim: int) -> int:
    """Caffe's ``CanonicalAxisIndex``."""
    return axis + ndim if axis < 0 else axis


def spatial(p: Any, name: str, default: int, nd: int) -> tuple[int, ...]:
    """kernel/stride/pad/dilation as Caffe reads them (``x_h``/``x_w`` first)."""
    from pynetbuilder.kinds.base import spatial as rule_spatial

    return tuple(int(v) for v in rule_spatial(p, name, default, nd))


class EmitError(NetError):
    """A layer the backend cannot express (one line naming the layer and why)."""
