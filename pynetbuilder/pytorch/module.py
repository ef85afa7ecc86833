"""The PyTorch module of a Caffe net: one submodule per Caffe layer, run in order.

``forward(**inputs)`` takes the input blobs (``Input`` layers, header inputs and
data layers' tops) by name and returns the net's output blobs by name (Caffe's
outputs: blobs that no later layer reads).  In-place layers rebind the same name,
as Caffe overwrites the same blob.  A BatchNorm followed by a per-channel Scale on
its output runs as one ``batch_norm`` call with the Scale as its affine part.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from pynetbuilder.pytorch.adapter import DATA_TYPES, Analysed
from pynetbuilder.pytorch.base import CaffeLayer, EmitError
from pynetbuilder.pytorch.emit_conv import Convolution, InnerProduct
from pynetbuilder.pytorch.emit_neuron import Elementwise
from pynetbuilder.pytorch.emit_norm import BatchNorm, Scale
from pynetbuilder.pytorch.emit_shape import Eltwise
from pynetbuilder.pytorch.emitters import emitter_for


class _BatchNormScale:
    """BatchNorm then Scale as one operation (not a module: the two layers keep their
    own parameters, so weights still map one-to-one to Caffe's layers)."""

    def __init__(self, bn: BatchNorm, scale: Scale) -> None:
        self.bn, self.scale = bn, scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn.affine(x, self.scale.weight, self.scale.bias)


class CaffeNet(nn.Module):
    """See the module doc.  ``layer_modules``: Caffe layer name -> submodule (layers
    with an emitter, in net order); ``inputs``/``outputs``: blob names."""

    def __init__(self, analysed: Analysed, fuse: bool = True) -> None:
        super().__init__()
        net, shapes, phase = analysed.net, analysed.shapes, analysed.phase
        self.phase = phase
        self.net_name = analysed.name
        self.net_param = net  # the phase's NetParameter (weights are written with it)
        self.blob_shapes = dict(shapes)
        inputs: list[str] = list(net.input)
        self.attr_of: dict[str, str] = {}
        steps: list[tuple[Any, tuple[str, ...], tuple[str, ...]]] = []
        layer_steps: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        available: dict[str, None] = dict.fromkeys(inputs)
        self.loss_weights: dict[str, float] = {}
        weighted: dict[str, Any] = {}  # name -> the layer with parameter blobs of that name
        for layer in net.layer:
            bottoms, tops = tuple(layer.bottom), tuple(layer.top)
            for b in bottoms:
                available.pop(b, None)
            available.update(dict.fromkeys(tops))
            if layer.type in DATA_TYPES:
                inputs.extend(t for t in tops if t not in inputs)
                continue
            module = emitter_for(layer)(
                layer, [shapes[b] for b in bottoms], [shapes[t] for t in tops], phase
            )
            if module.blob_names:
                _unique_with_weights(layer, weighted)
            attr = self._attr_name(layer.name)
            self.add_module(attr, module)
            self.attr_of[layer.name] = attr
            steps.append((module, bottoms, tops))
            layer_steps.append((layer.name, bottoms, tops))
            for j, top in enumerate(tops):
                weight = layer.loss_weight[j] if j < len(layer.loss_weight) else (
                    1.0 if j == 0 and layer.type.endswith("Loss") else 0.0)
                if weight:
                    self.loss_weights[top] = float(weight)
        self.inputs = tuple(inputs)
        self.outputs = tuple(available)
        self._steps = _in_place(_fused(steps)) if fuse else steps
        self._lean = with_last_uses(self._steps, set(self.outputs))

    def _attr_name(self, name: str) -> str:
        attr = name.replace(".", "_") or "_"
        while hasattr(self, attr) or keyword.iskeyword(attr):
            attr = "layer_" + attr
        return attr

    @property
    def layer_modules(self) -> dict[str, CaffeLayer]:
        return {name: getattr(self, attr) for name, attr in self.attr_of.items()}

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The outputs; each blob is let go after the last step that reads it (as an
        ordinary module's locals are), so a batch's activations are not all held at
        once: at batch 32, ResNet-50's blobs are 6 GB (:meth:`run` keeps them all)."""
        # each input looked up by name (not iterated), so torch.fx can trace it
        blobs = execute(self._lean, {name: inputs[name] for name in self.inputs})
        return {name: blobs[name] for name in self.outputs}

    def run(self, inputs: Mapping[str, torch.Tensor],
            forced: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Every blob after the forward pass (an in-place blob holds its last value).

        ``forced``: final blob values from elsewhere (Caffe's); a layer reading a blob
        that no later layer rewrites takes it from there instead of from this pass,
        so each layer (with the in-place layers after it) is checked on its own."""
        blobs = dict(inputs)
        rewritten_after = self._rewritten_after() if forced is not None else None
        for i, (fn, bottoms, tops) in enumerate(self._steps):
            if rewritten_after is None:
                args = [blobs[b] for b in bottoms]
            else:
                args = [forced[b] if b in forced and b not in rewritten_after[i] else blobs[b]
                        for b in bottoms]
            out = fn(*args)
            if len(tops) == 1:
                blobs[tops[0]] = out
            else:
                for top, value in zip(tops, out):
                    blobs[top] = value
        return blobs

    def steps_for(self, outputs: Sequence[str]) -> list[tuple[Any, tuple[str, ...],
                                                               tuple[str, ...]]]:
        """The steps (fused, in order) that the blobs ``outputs`` depend on: a step is
        kept when it writes a blob still needed (an in-place step needs its blob from
        before it too)."""
        needed = set(outputs)
        kept = []
        for step in reversed(self._steps):
            _, bottoms, tops = step
            if needed & set(tops):
                kept.append(step)
                needed.difference_update(tops)
                needed.update(bottoms)
        return kept[::-1]

    def _rewritten_after(self) -> list[set[str]]:
        """For each step, the blobs it or a later step writes."""
        later: set[str] = set()
        sets = []
        for _, _, tops in reversed(self._steps):
            later.update(tops)
            sets.append(set(later))
        return sets[::-1]

    def loss(self, blobs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Caffe's net loss: the sum of each loss-weighted top, times its weight."""
        terms = [blobs[t].sum() * w for t, w in self.loss_weights.items()]
        if not terms:
            raise ValueError(f"net {self.net_name!r} has no loss (no top with a loss_weight)")
        return torch.stack(terms).sum()


def _unique_with_weights(layer: Any, weighted: dict[str, Any]) -> None:
    """Caffe matches weights by layer name (``CopyTrainedLayersFrom`` copies every
    source layer of a name into the first layer of that name), so two layers with
    parameter blobs under one name cannot both have their weights: refused, naming
    them (layers without parameters may share a name, as HED's five ``crop`` do)."""
    first = weighted.setdefault(layer.name, layer)
    if first is not layer:
        raise EmitError(f"layers {layer.name!r} ({first.type}) and {layer.name!r} "
                        f"({layer.type}) share a name and both have parameter blobs: Caffe "
                        "matches weights by layer name (a .caffemodel loads both from the "
                        "first), so rename one")


class _ReLUInPlace:
    """ReLU rewriting its input, as Caffe's in-place ReLU does (and torchvision's)."""

    def __init__(self, slope: float) -> None:
        self.slope = slope

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(x) if not self.slope else nnf.leaky_relu_(x, self.slope)


# producers whose backward does not need their output, so a ReLU may overwrite it
_OVERWRITABLE = (Convolution, InnerProduct, _BatchNormScale, BatchNorm, Scale, Eltwise)


def _in_place(steps: list) -> list:
    """A Caffe in-place ReLU (top = bottom) right after the layer that wrote its blob
    overwrites it, when nothing else read the blob and autograd does not need it."""
    out = list(steps)
    for i in range(1, len(out)):
        module, bottoms, tops = out[i]
        if not (isinstance(module, Elementwise) and bottoms == tops and len(tops) == 1):
            continue
        slope = 0.0 if module.fn is nnf.relu else getattr(module.fn, "slope", None)
        producer, _, p_tops = out[i - 1]
        if slope is None or tops[0] not in p_tops or not isinstance(producer, _OVERWRITABLE):
            continue
        if isinstance(producer, Eltwise) and producer.op != "SUM":
            continue
        out[i] = (_ReLUInPlace(slope), bottoms, tops)
    return out


def execute(steps: list, blobs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run ``steps`` as :func:`with_last_uses` gives them on ``blobs`` (updated and
    returned): each step's tops bound, then the blobs it was the last to use let go."""
    for fn, bottoms, tops, done in steps:
        out = fn(*[blobs[b] for b in bottoms])
        if len(tops) == 1:
            blobs[tops[0]] = out
        else:
            for top, value in zip(tops, out):
                blobs[top] = value
        for name in done:
            del blobs[name]
    return blobs


def with_last_uses(steps: list, keep: set[str]) -> list:
    """``steps`` as (fn, bottoms, tops, done): ``done``, the blobs (not in ``keep``) that
    no later step reads or writes, to be let go after this one."""
    last: dict[str, int] = {}
    for i, (_, bottoms, tops) in enumerate(steps):
        for name in (*bottoms, *tops):
            last[name] = i
    done: list[list[str]] = [[] for _ in steps]
    for name, i in last.items():
        if name not in keep:
            done[i].append(name)
    return [(fn, bottoms, tops, tuple(done[i]))
            for i, (fn, bottoms, tops) in enumerate(steps)]


def _fused(steps: list) -> list:
    """Fold each BatchNorm whose output the next layer, a per-channel Scale, rewrites
    in place into one step."""
    out = []
    i = 0
    while i < len(steps):
        module, bottoms, tops = steps[i]
        if (isinstance(module, BatchNorm) and i + 1 < len(steps)
                and isinstance(steps[i + 1][0], Scale)):
            scale, s_bottoms, s_tops = steps[i + 1]
            if (s_bottoms == tops and s_tops == tops and scale.weight is not None
                    and scale.weight.dim() == 1 and len(scale.view) >= 2
                    and scale.view[1] == scale.weight.numel() == math.prod(scale.view)
                    and scale.weight.numel() == module.mean.numel()):
                out.append((_BatchNormScale(module, scale), bottoms, tops))
                i += 2
                continue
        out.append(steps[i])
        i += 1
    return out
