"""The one table of PyTorch emitters, keyed by Caffe layer type.

Every emitter is a plain function ``(layer, bottom_shapes, top_shapes, phase) ->
CaffeLayer`` (``phase``: ``train``, ``test`` or ``deploy``).  Data layers have no
emitter: their tops are the module's inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynetbuilder.pytorch import (
    emit_conv,
    emit_detection,
    emit_loss,
    emit_neuron,
    emit_norm,
    emit_pool,
    emit_python,
    emit_shape,
)
from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape

Emitter = Callable[[Any, list[Shape], list[Shape], str], CaffeLayer]

EMITTERS: dict[str, Emitter] = {
    "Convolution": emit_conv.convolution,
    "Deconvolution": emit_conv.deconvolution,
    "InnerProduct": emit_conv.inner_product,
    "Pooling": emit_pool.pooling,
    "BatchNorm": emit_norm.batch_norm,
    "Scale": emit_norm.scale,
    "Bias": emit_norm.bias,
    "LRN": emit_norm.lrn,
    "Normalize": emit_norm.normalize,
    "MVN": emit_norm.mvn,
    "ReLU": emit_neuron.relu,
    "ReLU6": emit_neuron.relu6,
    "PReLU": emit_neuron.prelu,
    "ELU": emit_neuron.elu,
    "Sigmoid": emit_neuron.sigmoid,
    "TanH": emit_neuron.tanh,
    "AbsVal": emit_neuron.absval,
    "Power": emit_neuron.power,
    "Exp": emit_neuron.exp,
    "Log": emit_neuron.log,
    "BNLL": emit_neuron.bnll,
    "Threshold": emit_neuron.threshold,
    "HardSwish": emit_neuron.hardswish,
    "HardSigmoid": emit_neuron.hardsigmoid,
    "Dropout": emit_neuron.dropout,
    "Eltwise": emit_shape.eltwise,
    "Concat": emit_shape.concat,
    "Slice": emit_shape.slice_,
    "Split": emit_shape.split,
    "Flatten": emit_shape.reshape,
    "Reshape": emit_shape.reshape,
    "Crop": emit_shape.crop,
    "Permute": emit_shape.permute,
    "Upsample": emit_shape.upsample,
    "Pad": emit_shape.pad,
    "Silence": emit_shape.silence,
    "Softmax": emit_shape.softmax,
    "ArgMax": emit_shape.argmax,
    "PriorBox": emit_shape.prior_box,
    "DetectionOutput": emit_detection.detection_output,
    "SoftmaxWithLoss": emit_loss.softmax_with_loss,
    "EuclideanLoss": emit_loss.euclidean_loss,
    "Accuracy": emit_loss.accuracy,
    "Python": emit_python.python,
}


def emitter_for(layer: Any) -> Emitter:
    """The emitter of ``layer``'s type; EmitError naming the layer and type if none."""
    fn = EMITTERS.get(layer.type)
    if fn is None:
        raise EmitError(f"layer {layer.name!r} of type {layer.type!r} has no PyTorch emitter; "
                        f"types with one: {', '.join(sorted(EMITTERS))}")
    return fn
