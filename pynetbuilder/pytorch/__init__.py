"""PyTorch backend: any net the analyser reads, as a ``torch.nn.Module`` with Caffe's
semantics; Caffe weights both ways; ONNX export.  Needs ``pip install
pynetbuilder[torch]``.

    from pynetbuilder.pytorch import to_module
    m = to_module("ResNet-50-deploy.prototxt", phase="deploy")
    m.load_caffemodel("ResNet-50-model.caffemodel")
    out = m(data=torch.randn(1, 3, 224, 224))["prob"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynetbuilder.pytorch.adapter import analysed
from pynetbuilder.pytorch.module import CaffeNet
from pynetbuilder.pytorch.weights import load_caffemodel, save_caffemodel

__all__ = ["CaffeNet", "load_caffemodel", "save_caffemodel", "to_module"]


def to_module(
    net: Any,
    knobs: Sequence[str] = (),
    *,
    phase: str = "deploy",
    input_shape: tuple[int, ...] | None = None,
    weights: str | None = None,
    fuse: bool = True,
    outputs: Sequence[str] | None = None,
) -> CaffeNet:
    """The module of ``net`` (prototxt path, model spec, ``Net`` or ``NetParameter``)
    in ``phase``; with ``weights`` (a ``.caffemodel``) loaded; with ``outputs`` (blob
    names) only the layers they need."""
    module = CaffeNet(analysed(net, knobs, phase=phase, input_shape=input_shape,
                               outputs=outputs), fuse=fuse)
    if weights is not None:
        load_caffemodel(module, weights)
    return module
