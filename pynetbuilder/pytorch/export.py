"""A module as ONNX or TorchScript, with Caffe's rounding spelt out.

The exported graph takes the net's inputs positionally (named as Caffe's blobs) and
gives its outputs in order (named as Caffe's blobs).  Pooling that relies on
PyTorch's ceil mode is rewritten with explicit padding and floor rounding first
(ONNX's ceil mode keeps windows Caffe drops).

A layer computed on the host (SSD's DetectionOutput: as many rows as boxes kept)
cannot be traced: tracing would freeze the detections of the example input into the
graph as a constant.  When it ends the net (nothing reads its top) it is left out
and its inputs become outputs (decoding and NMS stay with the caller, as every
Caffe-to-ONNX SSD export does); when a later layer reads it the net is refused.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pynetbuilder.pytorch.base import EmitError
from pynetbuilder.pytorch.emit_pool import Pooling

FORMATS = ("onnx", "torchscript")


class Positional(nn.Module):
    """``forward(*inputs) -> tuple of outputs`` over a :class:`CaffeNet`."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net
        self.input_names = tuple(net.inputs)
        self.left_out = host_layers(net)  # (name, type) of the layers not exported
        modules = net.layer_modules
        self._skip = tuple(modules[name] for name, _ in self.left_out)
        outputs: dict[str, None] = {}
        left_out = {name for name, _ in self.left_out}
        by_name = {layer.name: layer for layer in net.net_param.layer}
        for name in net.outputs:
            writer = next((la for la in by_name.values() if name in la.top
                           and la.name in left_out), None)
            outputs.update(dict.fromkeys(writer.bottom if writer is not None else [name]))
        self.output_names = tuple(outputs)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        blobs = self.net.run(dict(zip(self.input_names, xs)), skip=self._skip)
        return tuple(blobs[name] for name in self.output_names)


def host_layers(net: Any) -> list[tuple[str, str]]:
    """(name, type) of the layers of ``net`` that run on the host and end the net;
    EmitError naming the layer when a later layer reads one of them."""
    modules = net.layer_modules
    layers = list(net.net_param.layer)
    host = []
    for i, layer in enumerate(layers):
        module = modules.get(layer.name)
        if module is None or module.traceable:
            continue
        tops = set(layer.top)
        reader = next((la for la in layers[i + 1:] if tops & set(la.bottom)), None)
        if reader is not None:
            raise EmitError(
                f"layer {layer.name!r} ({layer.type}) runs on the host (its output size "
                f"depends on the data) and layer {reader.name!r} reads its output: the net "
                "cannot be traced for export")
        host.append((layer.name, layer.type))
    return host


def exportable(net: Any) -> Positional:
    for m in net.modules():
        if isinstance(m, Pooling):
            m.explicit()
    return Positional(net).eval()


def example_inputs(net: Any) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(net.blob_shapes[name]) for name in net.inputs)


def export_bytes(net: Any, fmt: str, opset: int = 17,
                 inputs: Sequence[torch.Tensor] | None = None,
                 wrapped: Positional | None = None) -> bytes:
    """The net as an ONNX model or a TorchScript archive (bytes); ``wrapped``: the
    net's :func:`exportable` when the caller already made it."""
    wrapped = wrapped if wrapped is not None else exportable(net)
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
