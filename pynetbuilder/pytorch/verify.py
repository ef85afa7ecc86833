"""Real Caffe against the PyTorch module, blob by blob (``pynetbuilder verify``).

Both run the same random input; without given weights Caffe fills every blob at
random (BatchNorm statistics positive), saves them and the module loads that file.
A blob agrees when ``max |ours - Caffe's| <= tolerance * max |Caffe's|`` (float32
rounding; ``tolerance`` 1e-4 by default).

The random input is N(0, 1), except where a layer reads indices or probabilities
(:data:`BOUNDED_INPUTS` and the registry's ``labels``): a loss's or an accuracy's labels
are integers in [0, classes), an Embed's input integers in [0, input_dim), a
BatchReindex's indices items of its batch.  ``verify(..., inputs={name: array})`` gives
chosen values to the inputs it names (a recurrent layer's ``cont`` with zeros where
sequences start, say); the others stay random.

The backward pass (``gradients``) runs with Caffe's ``force_backward``, which makes
Caffe differentiate every layer and input, except in a net with a layer whose backward
force_backward makes abort (``caffe_oracle.forcing_aborts``: the registry's
NO_FORCED_BACKWARD types reading a constant bottom Caffe would force: Embed's indices,
BatchReindex's, InfogainLoss's matrix given as an input).  Such a net runs its backward
as Caffe trains it: from its losses, or else from loss weights put on its outputs, with
every input that is not constant (labels, indices) held as a learnt blob (a
``Parameter`` layer), so that its gradient is still compared.  Caffe then differentiates
the blobs computed from a learnt blob and the parameters whose ``lr_mult`` is not 0, and
only those are compared.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.pytorch.adapter import Analysed, analysed
from pynetbuilder.pytorch.caffe_oracle import (
    CaffeNoise,
    CaffeRun,
    caffe_ready,
    forcing_aborts,
    loss_on_outputs,
    out_of_place,
    run_caffe,
    what_caffe_cannot_run,
)
from pynetbuilder.pytorch.module import CaffeNet
from pynetbuilder.pytorch.weights import load_caffemodel
from pynetbuilder.schema import caffe_pb2

# inputs read as integers other than class labels (the registry's ``labels`` rule, of a
# layer's second bottom), or as probabilities: type -> (bottom, how many integers from
# the layer and its bottom shapes; None: a value in [0, 1))
BOUNDED_INPUTS: dict[str, tuple[int, Callable[[Any, list[tuple[int, ...]]], int] | None]] = {
    "BatchReindex": (1, lambda layer, shapes: shapes[0][0] if shapes[0] else 1),  # items
    "ContrastiveLoss": (2, lambda layer, shapes: 2),  # similar (1) or not (0)
    "Embed": (0, lambda layer, shapes: layer.embed_param.input_dim),  # table rows
    "SigmoidCrossEntropyLoss": (1, None),  # a target probability
}


@dataclass
class BlobCheck:
    name: str
    shape: tuple[int, ...]
    max_diff: float
    caffe_max: float
    ok: bool
    our_shape: tuple[int, ...] | None = None  # set when the sizes differ

    def as_dict(self) -> dict[str, Any]:
        out = {"blob": self.name, "shape": list(self.shape), "max_abs_diff": self.max_diff,
               "caffe_max_abs": self.caffe_max, "ok": self.ok}
        if self.our_shape is not None:
            out["module_shape"] = list(self.our_shape)
        return out


@dataclass
class Verification:
    net: str
    phase: str
    tolerance: float
    blobs: list[BlobCheck]
    seed: int = 0
    params: list[BlobCheck] = field(default_factory=list)  # after the forward (BatchNorm)
    gradients: list[BlobCheck] = field(default_factory=list)
    hint: str = ""  # the likely cause of the first failure (failure_hint), "" if none

    @property
    def checks(self) -> list[BlobCheck]:
        return [*self.blobs, *self.params, *self.gradients]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def first_failure(self) -> BlobCheck | None:
        return next((c for c in self.checks if not c.ok), None)


def compare(name: str, ours: np.ndarray, theirs: np.ndarray, tolerance: float,
            at_scale: float = 0.0) -> BlobCheck:
    """One blob: shapes must agree (Caffe's 0-d and 1-element blobs alike); the bound is
    ``tolerance`` times the largest of Caffe's magnitudes (or ``at_scale`` if larger)."""
    theirs = np.asarray(theirs, dtype=np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    if ours.size != theirs.size:
        return BlobCheck(name, theirs.shape, math.inf, float(np.abs(theirs).max(initial=0)),
                         False, tuple(ours.shape))
    ours = ours.reshape(theirs.shape)
    both_nan = np.isnan(ours) & np.isnan(theirs)
    diff = np.where(both_nan, 0.0, np.abs(ours - theirs))
    both_inf = np.isinf(ours) & np.isinf(theirs) & (np.sign(ours) == np.sign(theirs))
    diff = np.where(both_inf, 0.0, diff)
    finite = theirs[np.isfinite(theirs)]
    scale = max(float(np.abs(finite).max(initial=0.0)), at_scale)
    worst = float(np.nan_to_num(diff, nan=math.inf).max(initial=0.0))
    return BlobCheck(name, tuple(theirs.shape), worst, scale, worst <= tolerance * scale
                     or worst == 0.0)


def random_inputs(a: Analysed, module: CaffeNet, seed: int) -> dict[str, np.ndarray]:
    """Normal(0, 1) values for every input; labels (a layer's class indices: the
    registry's ``labels``) integers in [0, classes), and the inputs of
    :data:`BOUNDED_INPUTS` integers or probabilities as those layers read them."""
    rng = np.random.default_rng(seed)
    integers, probabilities = _bounded_inputs(a)
    inputs = {}
    for name in module.inputs:
        shape = a.shapes[name]
        if name in integers:
            inputs[name] = rng.integers(0, integers[name], size=shape).astype(np.float32)
        elif name in probabilities:
            inputs[name] = rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
        else:
            inputs[name] = rng.standard_normal(shape).astype(np.float32)
    return inputs


def _given_inputs(a: Analysed, module: CaffeNet, seed: int,
                  given: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The random inputs with the ``given`` arrays in place of those they name (each
    an input of the net, of its analysed shape)."""
    data = random_inputs(a, module, seed)
    for name, value in (given or {}).items():
        if name not in data:
            raise UsageError(f"input {name!r} given to verify is not an input of the net "
                             f"(its inputs: {', '.join(data)})")
        array = np.asarray(value, dtype=np.float32)
        if array.shape != data[name].shape:
            raise UsageError(f"input {name!r} given to verify has the shape {array.shape}; "
                             f"the net's is {data[name].shape}")
        data[name] = array
    return data


@dataclass(frozen=True)
class CaffeBackward:
    """What Caffe's backward pass differentiates: with force_backward every blob and
    parameter (``blobs`` None); without it (see the module's doc) the blobs below a
    parameter with a nonzero lr_mult, and those parameters (``fixed``: the others)."""

    blobs: frozenset[str] | None = None
    fixed: frozenset[tuple[str, int]] = frozenset()

    def blob(self, name: str) -> bool:
        return self.blobs is None or name in self.blobs

    def param(self, layer: str, index: int) -> bool:
        return (layer, index) not in self.fixed


def _unforced_backward(net: Any, run: CaffeRun) -> CaffeBackward:
    """``Net::Init`` without force_backward: a layer needs backward when a bottom does
    or it has a parameter blob whose lr_mult is not 0; its tops then do."""
    need: set[str] = set()
    fixed: set[tuple[str, int]] = set()
    for layer in net.layer:
        learnt = False
        for i in range(len(run.params.get(layer.name, ()))):
            if i < len(layer.param) and layer.param[i].lr_mult == 0:
                fixed.add((layer.name, i))
            else:
                learnt = True
        if learnt or any(b in need for b in layer.bottom):
            need.update(layer.top)
    return CaffeBackward(frozenset(need), frozenset(fixed))


def _bounded_inputs(a: Analysed) -> tuple[dict[str, int], set[str]]:
    """The blobs read as integers (blob -> how many: the fewest any reader takes) and
    those read as probabilities."""
    from pynetbuilder.kinds import kind_of

    integers: dict[str, int] = {}
    probabilities: set[str] = set()
    for layer in a.net.layer:
        shapes = [a.shapes[b] for b in layer.bottom if b in a.shapes]
        if len(shapes) < len(layer.bottom):
            continue
        found: list[tuple[int, int | None]] = []
        rule = kind_of(layer.type).labels
        if rule is not None and len(shapes) > 1:
            found.append((1, rule(layer, shapes[0])[0]))
        bounded = BOUNDED_INPUTS.get(layer.type)
        if bounded is not None and len(shapes) > bounded[0]:
            at, count = bounded
            found.append((at, count(layer, shapes) if count is not None else None))
        for at, n in found:
            blob = layer.bottom[at]
            if n is None:
                probabilities.add(blob)
            else:
                integers[blob] = min(integers.get(blob, n), n)
    return integers, probabilities


def set_noise(module: CaffeNet, noise: CaffeNoise | None) -> None:
    for m in module.modules():
        if hasattr(m, "noise"):
            m.noise = noise


def verify(
    net: Any,
    knobs: Sequence[str] = (),
    *,
    phase: str = "deploy",
    weights: str | Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    seed: int = 0,
    tolerance: float = 1e-4,
    gradients: bool = False,
    inputs: Mapping[str, np.ndarray] | None = None,
    per_layer: bool = False,
) -> Verification:
    """Run ``net`` in real Caffe and as a module on one random input; compare every blob
    (and with ``gradients`` the input and parameter gradients of a backward pass:
    the net's loss, else random output gradients).  ``inputs``: arrays for some of
    the net's inputs, in place of random ones (see the module's doc).  ``per_layer``:
    each layer reads Caffe's own values of its inputs (see :meth:`CaffeNet.run`), so
    rounding does not build up through the depth of an ill-conditioned net."""
    a = analysed(net, knobs, phase=phase, input_shape=input_shape)
    unrunnable = what_caffe_cannot_run(a.net)
    if unrunnable is not None:
        raise NetError(f"real Caffe (the pinned build) cannot run {unrunnable}, so verify "
                       "has no judge for this net; the PyTorch module (to_module, export) "
                       "still runs it")
    if per_layer and gradients:  # every intermediate gradient visible in Caffe
        a = _out_of_place(a)
    module = CaffeNet(a)
    if weights is not None:  # refused here, with the mismatches named, before Caffe runs
        load_caffemodel(module, weights)
    data = _given_inputs(a, module, seed, inputs)
    drop = _without_backward(a.net) if gradients else ()
    # Caffe's backward is forced through every layer, unless a layer would make it abort:
    # then it runs as training does, from the losses (or loss_weight 1 on the outputs) to
    # the learnt blobs, with each non-constant input held as one (a Parameter layer)
    forced = not gradients or forcing_aborts(a.net) is None
    constant = _constant_inputs(a)
    held = () if forced else [n for n in module.inputs if n not in constant]
    ready = caffe_ready(a.net, a.shapes, seed, drop_types=drop, parameters=held)
    top_diffs = None
    if gradients and not module.loss_weights:
        rng = np.random.default_rng(seed + 1)
        top_diffs = {o: rng.standard_normal(a.shapes[o]).astype(np.float32)
                     for o in _outputs(ready)}
    if not forced and top_diffs:
        ready = loss_on_outputs(ready, top_diffs)
    with tempfile.TemporaryDirectory(prefix="pynetbuilder-verify-") as tmp:
        run = run_caffe(ready, phase, data, weights=weights, seed=seed, top_diffs=top_diffs,
                        backward=gradients, force_backward=forced, keep=Path(tmp))
        if weights is None:
            load_caffemodel(module, run.weights)
    backward = CaffeBackward() if forced else _unforced_backward(ready, run)
    return check(module, a, run, data, seed, tolerance, gradients, top_diffs, per_layer,
                 backward)


def _without_backward(net: Any) -> tuple[str, ...]:
    """The types to leave out of a backward run: Caffe has no backward pass for them
    (Accuracy, ArgMax, Threshold, DetectionOutput ...: NOT_IMPLEMENTED aborts, and
    verify's forced backward reaches every layer).  Left out, their outputs are not
    compared; a layer reading one of them makes the net unfit for --gradients."""
    from pynetbuilder.errors import UsageError
    from pynetbuilder.kinds import Category, types_with

    types = types_with(Category.NO_BACKWARD)
    layers = list(net.layer)
    for i, layer in enumerate(layers):
        if layer.type not in types:
            continue
        reader = next((la for la in layers[i:] if set(layer.top) & set(la.bottom)), None)
        if reader is not None:  # a later layer, or the layer itself working in place
            raise UsageError(f"layer {layer.name!r} ({layer.type}) has no backward pass in "
                             f"Caffe and layer {reader.name!r} reads its output: the net's "
                             "gradients cannot be compared (verify it without --gradients)")
    return tuple(sorted(types))


def _outputs(net: Any) -> list[str]:
    """The blobs no later layer reads (a net's outputs), in order."""
    available: dict[str, None] = dict.fromkeys(net.input)
    for layer in net.layer:
        for b in layer.bottom:
            available.pop(b, None)
        available.update(dict.fromkeys(layer.top))
    return list(available)


def check(module: CaffeNet, a: Analysed, run: CaffeRun, data: Mapping[str, np.ndarray],
          seed: int, tolerance: float, gradients: bool,
          top_diffs: Mapping[str, np.ndarray] | None, per_layer: bool = False,
          backward: CaffeBackward | None = None) -> Verification:
    """Compare the module's run on ``data`` with Caffe's ``run`` (``backward``: what
    Caffe differentiated; by default everything)."""
    backward = backward or CaffeBackward()
    set_noise(module, CaffeNoise(seed))
    constant = _constant_inputs(a)
    tensors = {k: torch.from_numpy(np.asarray(v, np.float32)).requires_grad_(
        gradients and k not in constant and backward.blob(k)) for k, v in data.items()}
    forced = {k: torch.from_numpy(v) for k, v in run.blobs.items()} if per_layer else None
    with torch.set_grad_enabled(gradients):
        blobs = module.run(tensors, forced)
    set_noise(module, None)
    result = Verification(a.name, a.phase, tolerance, [], seed)
    scales = _loss_scales(a, run)
    for name, theirs in run.blobs.items():
        if name in blobs and name in a.shapes:
            result.blobs.append(compare(name, _np(blobs[name]), theirs, tolerance,
                                        scales.get(name, 0.0)))
    for layer, tensors_ in _blob_tensors(module).items():
        for i, t in enumerate(tensors_):
            if a.phase == "train" and layer in run.params and \
                    module.layer_modules[layer].blob_names[i] in (
                    "mean", "variance", "scale_factor"):
                result.params.append(compare(f"{layer}[{i}]", _np(t), run.params[layer][i],
                                             tolerance))
    if gradients and per_layer:
        _check_local_gradients(module, run, tolerance, result, backward)
    elif gradients:
        _check_gradients(module, a, run, blobs, tensors, top_diffs, tolerance, result,
                         backward)
    if result.first_failure is not None and not per_layer:
        result.hint = failure_hint(a.net, a.phase, result.first_failure)
    return result


def routes_by_argmax(layer: Any) -> bool:
    """Whether Caffe's backward of ``layer`` sends each output's gradient to the one input
    element its forward chose by comparing values: MAX pooling (pooling_layer.cpp: the
    first ``>`` maximum of the window, its mask), SPP's MAX pooling (spp_layer.cpp) and
    Eltwise MAX (eltwise_layer.cpp: the mask of the larger input, the second on a tie)."""
    if layer.type in ("Pooling", "SPP"):
        param = layer.pooling_param if layer.type == "Pooling" else layer.spp_param
        return param.pool == caffe_pb2.PoolingParameter.MAX
    return (layer.type == "Eltwise"
            and layer.eltwise_param.operation == caffe_pb2.EltwiseParameter.MAX)


def failure_hint(net: Any, phase: str, bad: BlobCheck) -> str:
    """What likely makes ``bad`` (an end-to-end check of ``net`` in ``phase`` that
    failed) differ, when it is float32 rounding rather than a wrong layer, and what to
    check instead: " (...)" or "".

    - a gradient whose blob or parameter feeds a layer that routes it by argmax
      (:func:`routes_by_argmax`): where two inputs of a window are equal, or nearly
      equal after the float32 rounding of the layers before, Caffe and PyTorch can
      pick different elements (the values agree, the gradients do not);
    - any check of a net with a BatchNorm computing batch statistics (Caffe's
      batch_norm_layer.cpp: ``use_global_stats`` unset in TRAIN, or false)."""
    reasons = []
    router = _argmax_router_fed_by(net, bad.name[2:]) if bad.name.startswith("d ") else None
    if router is not None:
        reasons.append(f"layer {router.name!r} ({router.type} MAX) sends each gradient to "
                       "one maximum; where two of its inputs are equal or nearly equal "
                       "after float32 rounding of the layers before it, Caffe and PyTorch "
                       "may send it to different ones")
    if any(la.type == "BatchNorm" and not _global_stats(la, phase) for la in net.layer):
        reasons.append("batch statistics amplify float32 rounding through a deep net")
    if not reasons:
        return ""
    return f" ({'; '.join(reasons)}; --per-layer checks each layer on Caffe's own inputs)"


def _global_stats(layer: Any, phase: str) -> bool:
    """BatchNorm's use_global_stats as Caffe reads it: TEST's default is true, TRAIN's
    false (batch_norm_layer.cpp's LayerSetUp)."""
    p = layer.batch_norm_param
    return p.use_global_stats if p.HasField("use_global_stats") else phase != "train"


def _argmax_router_fed_by(net: Any, checked: str) -> Any:
    """The first layer routing by argmax that ``checked`` reaches: a parameter blob
    ``layer[i]`` (through its layer's outputs, the layer included) or a blob."""
    names = {la.name for la in net.layer}
    owner = checked.rsplit("[", 1)[0] if checked.endswith("]") else None
    reached = set() if owner in names else {checked}
    for layer in net.layer:
        if layer.name == owner or reached & set(layer.bottom):
            if routes_by_argmax(layer):
                return layer
            reached.update(layer.top)
    return None


def _out_of_place(a: Analysed) -> Analysed:
    net = out_of_place(a.net)
    shapes = dict(a.shapes)
    for layer in net.layer:
        for top in layer.top:
            if "@" in top and top not in shapes:
                shapes[top] = shapes[top.split("@")[0]]
    return Analysed(a.name, net, shapes, a.phase)


def _check_local_gradients(module: CaffeNet, run: CaffeRun, tolerance: float,
                           result: Verification, backward: CaffeBackward) -> None:
    """Each layer's backward on Caffe's own inputs and output gradients: the gradient
    of each blob (summed over the layers reading it) and of each parameter blob."""
    grads: dict[str, torch.Tensor] = {}
    module.zero_grad(set_to_none=True)
    set_noise(module, CaffeNoise(result.seed))
    for fn, bottoms, tops in module._steps:
        xs = [torch.from_numpy(run.blobs[b].copy()).requires_grad_(True) for b in bottoms]
        out = fn(*xs)
        outs = [out] if len(tops) == 1 else list(out)
        terms = [(o * torch.from_numpy(run.diffs[t]).reshape(o.shape)).sum()
                 for t, o in zip(tops, outs) if t in run.diffs and o.requires_grad]
        if terms:
            torch.stack(terms).sum().backward()
        for b, x in zip(bottoms, xs):
            if x.grad is not None:
                grads[b] = grads[b] + x.grad if b in grads else x.grad
    set_noise(module, None)
    for name, g in grads.items():
        if name in run.diffs and backward.blob(name):
            result.gradients.append(compare(f"d {name}", _np(g), run.diffs[name], tolerance))
    magnitude = _absolute_param_gradients(module, run)
    for layer, tensors_ in _blob_tensors(module).items():
        for i, t in enumerate(tensors_):
            if isinstance(t, torch.nn.Parameter) and layer in run.param_diffs \
                    and backward.param(layer, i):
                g = t.grad if t.grad is not None else torch.zeros_like(t)
                result.gradients.append(compare(f"d {layer}[{i}]", _np(g),
                                                run.param_diffs[layer][i], tolerance,
                                                magnitude.get((layer, i), 0.0)))


def _absolute_param_gradients(module: CaffeNet, run: CaffeRun) -> dict[tuple[str, int], float]:
    """The largest value of each parameter gradient computed from absolute values
    (``sum |dy| |x|``: the scale of its float32 rounding).  A gradient that cancels
    to nearly 0 has no relative precision and is compared at this scale.  (Measured:
    in PyramidNet every path from a block's last Scale shift enters a TRAIN-phase
    BatchNorm, so its exact gradient is 0; Caffe's is ~1e-8 against a sum of |dy| of
    ~1e-2, and a float64 evaluation is as far from Caffe's as ours.)"""
    names = {id(m): n for n, m in module.layer_modules.items()}
    out: dict[tuple[str, int], float] = {}
    for fn, bottoms, tops in module._steps:
        params = dict(fn.named_parameters()) if isinstance(fn, torch.nn.Module) else {}
        if not params or any(t not in run.diffs for t in tops):
            continue
        absolute = {k: p.detach().abs().requires_grad_(True) for k, p in params.items()}
        xs = [torch.from_numpy(np.abs(run.blobs[b])) for b in bottoms]
        y = torch.func.functional_call(fn, absolute, tuple(xs))
        ys = [y] if len(tops) == 1 else list(y)
        total = torch.stack([(o * torch.from_numpy(np.abs(run.diffs[t])).reshape(o.shape)).sum()
                             for t, o in zip(tops, ys)]).sum()
        grads = torch.autograd.grad(total, list(absolute.values()), allow_unused=True)
        by_name = dict(zip(absolute, grads))
        for i, blob in enumerate(fn.blob_names):
            g = by_name.get(blob)
            if g is not None:
                out[(names[id(fn)], i)] = float(g.abs().max())
    return out


def _loss_scales(a: Analysed, run: CaffeRun) -> dict[str, float]:
    """A loss is a difference of its input scores (``log sum exp(x) - x[label]``), so
    its rounding is that of the scores: it is compared at their scale.  (Measured:
    PyramidNet-110 with random weights has scores up to 2.4e6 that agree to 2.25,
    9e-7 of them, and a loss near 87 that moves by 0.024 with them.)"""
    scales = {}
    for layer in a.net.layer:
        if layer.type.endswith("Loss") and layer.top and layer.bottom[0] in run.blobs:
            scales[layer.top[0]] = float(np.abs(run.blobs[layer.bottom[0]]).max(initial=0.0))
    return scales


def _constant_inputs(a: Analysed) -> set[str]:
    """The blobs read as a bottom that Caffe never differentiates (labels, indices, a
    loss's matrix: the registry's ``constant_bottoms``)."""
    from pynetbuilder.kinds import kind_of

    return {la.bottom[i] for la in a.net.layer
            for i in kind_of(la.type).constant_bottoms if i < len(la.bottom)}


def _blob_tensors(module: CaffeNet) -> dict[str, list[torch.Tensor]]:
    return {n: m.caffe_blobs() for n, m in module.layer_modules.items() if m.blob_names}


def _check_gradients(module: CaffeNet, a: Analysed, run: CaffeRun, blobs: dict, tensors: dict,
                     top_diffs: Mapping[str, np.ndarray] | None, tolerance: float,
                     result: Verification, backward: CaffeBackward) -> None:
    if top_diffs:
        total = sum((blobs[o] * torch.from_numpy(g)).sum() for o, g in top_diffs.items())
    else:
        total = module.loss(blobs)
    module.zero_grad(set_to_none=True)
    total.backward()
    for name, t in tensors.items():
        if t.requires_grad and name in run.diffs:
            g = t.grad if t.grad is not None else torch.zeros_like(t)
            result.gradients.append(compare(f"d {name}", _np(g), run.diffs[name], tolerance))
    for layer, tensors_ in _blob_tensors(module).items():
        for i, t in enumerate(tensors_):
            if isinstance(t, torch.nn.Parameter) and layer in run.param_diffs \
                    and backward.param(layer, i):
                g = t.grad if t.grad is not None else torch.zeros_like(t)
                result.gradients.append(compare(f"d {layer}[{i}]", _np(g),
                                                run.param_diffs[layer][i], tolerance))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
