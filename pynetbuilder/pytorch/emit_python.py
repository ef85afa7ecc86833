"""Caffe ``Python`` layers that ship with pynetbuilder (``pynetbuilder.caffe_layers``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape


class ShakeShake(CaffeLayer):
    """TRAIN: ``alpha x1 + (1 - alpha) x2`` forward with a per-sample ``alpha ~ U(0,1)``,
    gradients mixed by an independent ``beta``; TEST: the mean of the two.

    The value and gradient are one expression, ``mix(beta) + (mix(alpha) -
    mix(beta)).detach()``, so the module stays traceable.  ``noise``: when set (a
    callable ``(module, batch) -> (alpha, beta)``) the draws come from it."""

    def __init__(self, train: bool) -> None:
        super().__init__()
        self.train_phase = train
        self.noise: Callable | None = None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if not self.train_phase:
            return (x1 + x2) * 0.5
        n = x1.shape[0]
        view = (n,) + (1,) * (x1.dim() - 1)
        if self.noise is not None:
            alpha, beta = self.noise(self, n)
            alpha, beta = alpha.to(x1.dtype).reshape(view), beta.to(x1.dtype).reshape(view)
        else:
            alpha = torch.rand(view, dtype=x1.dtype, device=x1.device)
            beta = torch.rand(view, dtype=x1.dtype, device=x1.device)
        forward = alpha * x1 + (1 - alpha) * x2
        backward = beta * x1 + (1 - beta) * x2
        return backward + (forward - backward).detach()


_PYTHON_LAYERS = {("pynetbuilder.caffe_layers.shake_shake", "ShakeShake"): ShakeShake}


def python(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.python_param
    cls = _PYTHON_LAYERS.get((p.module, p.layer))
    if cls is None:
        raise EmitError(f"layer {layer.name!r} (type Python, {p.module}.{p.layer}) has no "
                        "PyTorch emitter: only pynetbuilder's own Python layers "
                        "(pynetbuilder.caffe_layers.shake_shake.ShakeShake) do")
    return cls(phase == "train")
