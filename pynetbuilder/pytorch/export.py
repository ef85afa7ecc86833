"""A module as ONNX or TorchScript, with Caffe's rounding spelt out.

The exported graph takes the net's inputs positionally (named as Caffe's blobs) and
gives its outputs in order (named as Caffe's blobs).  Pooling that relies on
PyTorch's ceil mode is rewritten with explicit padding and floor rounding first
(ONNX's ceil mode keeps windows Caffe drops).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pynetbuilder.pytorch.emit_pool import Pooling

FORMATS = ("onnx", "torchscript")


class Positional(nn.Module):
    """``forward(*inputs) -> tuple of outputs`` over a :class:`CaffeNet`."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net
        self.input_names = tuple(net.inputs)
        self.output_names = tuple(net.outputs)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        blobs = self.net.run(dict(zip(self.input_names, xs)))
        return tuple(blobs[name] for name in self.output_names)


def exportable(net: Any) -> Positional:
    for m in net.modules():
        if isinstance(m, Pooling):
            m.explicit()
    return Positional(net).eval()


def example_inputs(net: Any) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(net.blob_shapes[name]) for name in net.inputs)


def export_bytes(net: Any, fmt: str, opset: int = 17,
                 inputs: Sequence[torch.Tensor] | None = None) -> bytes:
    """The net as an ONNX model or a TorchScript archive (bytes)."""
    wrapped = exportable(net)
    args = tuple(inputs) if inputs is not None else example_inputs(net)
    buffer = io.BytesIO()
    with torch.no_grad():
        if fmt == "onnx":
            torch.onnx.export(wrapped, args, buffer, dynamo=False, opset_version=opset,
                              input_names=list(wrapped.input_names),
                              output_names=list(wrapped.output_names))
        elif fmt == "torchscript":
            torch.jit.save(torch.jit.trace(wrapped, args, check_trace=False), buffer)
        else:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return buffer.getvalue()
