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
from pynetbuilder.pytorch.module import execute, with_last_uses

FORMATS = ("onnx", "torchscript")


class Positional(nn.Module):
    """``forward(*inputs) -> tuple of outputs`` over a :class:`CaffeNet`: the layers
    ``outputs`` need (default: the net's outputs), fed by the inputs they read."""

    def __init__(self, net: Any, outputs: Sequence[str] | None = None) -> None:
        super().__init__()
        self.net = net
        self.left_out: tuple[tuple[str, str], ...] = ()  # (name, type) not exported
        if not outputs:
            outputs, self.left_out = _default_outputs(net)
        self.output_names = tuple(outputs)
        unknown = [b for b in self.output_names if b not in net.blob_shapes]
        if unknown:
            raise EmitError(f"net {net.net_name!r} has no blob {unknown[0]!r} to export")
        self.steps = net.steps_for(self.output_names)
        read = {b for _, bottoms, _ in self.steps for b in bottoms} | set(self.output_names)
        self.input_names = tuple(name for name in net.inputs if name in read)
        eager = [name for name, module in net.layer_modules.items()
                 if not getattr(module, "traceable", True)
                 and any(module is step[0] for step in self.steps)]
        if eager:
            layers = list(net.net_param.layer)
            at = next(i for i, lay in enumerate(layers) if lay.name == eager[0])
            layer, tops = layers[at], set(layers[at].top)
            kept = {step[0] for step in self.steps}
            modules = net.layer_modules
            reader = next((lay for lay in layers[at + 1:] if tops & set(lay.bottom)
                           and any(modules.get(lay.name) is m for m in kept)), None)
            why = (f"and layer {reader.name!r} reads its output" if reader is not None
                   else "so its output cannot be exported")
            raise EmitError(
                f"layer {layer.name!r} ({layer.type}) runs on the host (its output size "
                f"depends on the data; a trace would keep one input's result as a constant) "
                f"{why}: export the blobs it reads instead "
                f"(--outputs {','.join(dict.fromkeys(layer.bottom))})")
        self._run = with_last_uses(self.steps, set(self.output_names))

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        blobs = execute(self._run, dict(zip(self.input_names, xs)))
        return tuple(blobs[name] for name in self.output_names)


def _default_outputs(net: Any) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    """The net's outputs, except that the top of a layer that runs on the host and ends
    the net (SSD's DetectionOutput: nothing reads it) is replaced by the blobs that layer
    reads: decoding and NMS stay with the caller, as every Caffe-to-ONNX SSD export does.
    Also (name, type) of the layers so left out."""
    modules = net.layer_modules
    writers = {top: layer for layer in net.net_param.layer for top in layer.top}
    outputs: dict[str, None] = {}
    left_out: dict[tuple[str, str], None] = {}
    for name in net.outputs:
        layer = writers.get(name)
        module = modules.get(layer.name) if layer is not None else None
        if module is not None and not getattr(module, "traceable", True):
            outputs.update(dict.fromkeys(layer.bottom))
            left_out[(layer.name, layer.type)] = None
        else:
            outputs[name] = None
    return list(outputs), tuple(left_out)


def exportable(net: Any, outputs: Sequence[str] | None = None) -> Positional:
    """The net as an exportable module (``outputs``: the blobs it gives; default the
    net's outputs, see :func:`_default_outputs`).  EmitError for an unknown blob or a
    layer that cannot be traced and is needed."""
    wrapped = Positional(net, outputs)
    for m in net.modules():
        if isinstance(m, Pooling):
            m.explicit()
    return wrapped.eval()


def example_inputs(net: Any, names: Sequence[str] | None = None) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(net.blob_shapes[name])
                 for name in (net.inputs if names is None else names))


def export_bytes(net: Any, fmt: str, opset: int = 17,
                 inputs: Sequence[torch.Tensor] | None = None,
                 outputs: Sequence[str] | None = None) -> bytes:
    """The net (a CaffeNet, or one :func:`exportable` already made) as an ONNX model or a
    TorchScript archive (bytes); ``outputs``: the blobs it gives (see :class:`Positional`)."""
    wrapped = net if isinstance(net, Positional) else exportable(net, outputs)
    args = tuple(inputs) if inputs is not None else example_inputs(wrapped.net,
                                                                   wrapped.input_names)
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
