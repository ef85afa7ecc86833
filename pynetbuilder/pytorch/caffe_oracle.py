"""Run real Caffe (pycaffe) on a net in a child process and bring back every blob.

Caffe aborts the whole process on a failed check, and a Python layer's teardown
can crash it, so each run is a child ``python -m pynetbuilder.pytorch.caffe_oracle
DIR``: the parent writes ``net.prototxt``, ``inputs.npz`` and ``request.json`` into
``DIR``; the child writes ``result.npz`` (and ``weights.caffemodel`` when it made
random weights).  Randomness is replayed: the child seeds Caffe's generator right
before the forward pass, and :class:`CaffeNoise` draws the same Dropout masks
(Caffe's ``caffe_rng_bernoulli``: boost's mt19937, seeded as NumPy's legacy
``RandomState``) and the same ShakeShake coefficients (their ``param_str`` seed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pynetbuilder.caffe_process import cpu_engine
from pynetbuilder.schema import caffe_pb2

SHAKE = ("pynetbuilder.caffe_layers.shake_shake", "ShakeShake")
# the Parameter layer that holds an input when the oracle runs without force_backward
INPUT_PARAMETER = "pynetbuilder-input:"
class CaffeError(RuntimeError):
    """Caffe refused the net or crashed (the message carries its last log lines)."""


@dataclass
class CaffeRun:
    blobs: dict[str, np.ndarray]  # every blob after the forward pass
    params: dict[str, list[np.ndarray]]  # parameter blobs after the forward pass
    diffs: dict[str, np.ndarray] = field(default_factory=dict)  # blob diffs after backward
    param_diffs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    weights: Path | None = None  # the random weights Caffe was given, when it made them


def caffe_ready(net: Any, shapes: Mapping[str, tuple[int, ...]], seed: int,
                drop_types: tuple[str, ...] = (), parameters: Collection[str] = ()) -> Any:
    """``net`` (one phase's NetParameter) as Caffe can run it without data: every data
    layer an ``Input`` layer of the analysed shapes, ShakeShake layers seeded
    (``seed + i`` for the i-th), layers of ``drop_types`` removed.  The inputs named in
    ``parameters`` are each the blob of a ``Parameter`` layer instead (named
    ``INPUT_PARAMETER + input``): without force_backward, Caffe computes the gradient
    of a learnt blob, never of an ``Input``'s."""
    from pynetbuilder.pytorch.adapter import DATA_TYPES

    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    if set(net.input) & set(parameters):
        _header_inputs(out, shapes, parameters)
    shake = 0
    for layer in net.layer:
        if layer.type in drop_types:
            continue
        if layer.type in DATA_TYPES and (layer.type != "Input" or set(layer.top) & set(
                parameters)):
            _inputs_of(out, layer, shapes, parameters)
            continue
        new = out.layer.add()
        new.CopyFrom(layer)
        del new.include[:]
        del new.exclude[:]
        if layer.type == "DetectionOutput":
            _no_side_effects(new.detection_output_param)
        cpu_engine(new)
        if layer.type == "Python" and (layer.python_param.module,
                                       layer.python_param.layer) == SHAKE:
            new.python_param.param_str = json.dumps({"seed": seed + shake})
            shake += 1
    return out


# types this build registers with a CPU forward that is NOT_IMPLEMENTED (it aborts)
GPU_ONLY = {"PSROIPooling": "R-FCN's kernel is GPU-only: psroi_pooling_layer.cpp's "
                            "Forward_cpu is NOT_IMPLEMENTED"}


def _inputs_of(out: Any, layer: Any, shapes: Mapping[str, tuple[int, ...]],
               parameters: Collection[str]) -> None:
    """A data layer's tops as ``Input`` layer tops, or ``Parameter`` layers' blobs."""
    kept = [t for t in layer.top if t not in parameters]
    if kept:
        new = out.layer.add(name=layer.name, type="Input")
        new.top.extend(kept)
        for top in kept:
            new.input_param.shape.add().dim.extend(shapes[top])
    for top in layer.top:
        if top in parameters:
            _hold(out, top, shapes[top])


def _hold(out: Any, blob: str, shape: tuple[int, ...]) -> None:
    """Blob ``blob`` as the learnt blob of a ``Parameter`` layer of ``out``."""
    held = out.layer.add(name=INPUT_PARAMETER + blob, type="Parameter", top=[blob])
    held.parameter_param.shape.dim.extend(shape)


def _header_inputs(out: Any, shapes: Mapping[str, tuple[int, ...]],
                   parameters: Collection[str]) -> None:
    """The net's header inputs (``input:``) named in ``parameters`` as ``Parameter``
    layers; the others kept, each with its ``input_shape``."""
    names = list(out.input)
    for header in ("input", "input_shape", "input_dim"):
        out.ClearField(header)
    for name in names:
        if name in parameters:
            _hold(out, name, shapes[name])
        else:
            out.input.append(name)
            out.input_shape.add().dim.extend(shapes[name])


def forcing_aborts(net: Any) -> Any | None:
    """The first layer of ``net`` whose backward aborts under force_backward, or None.
    Caffe forces every bottom a layer's ``AllowForceBackward`` allows (all but a loss's
    second, its labels); a NO_FORCED_BACKWARD type refuses to differentiate its constant
    bottoms (Embed's indices, BatchReindex's, InfogainLoss's matrix given as an input)."""
    from pynetbuilder.kinds import Category, kind_of

    for layer in net.layer:
        entry = kind_of(layer.type)
        if entry.is_a(Category.NO_FORCED_BACKWARD) and any(
                i < len(layer.bottom) and not (entry.is_a(Category.LOSS) and i == 1)
                for i in entry.constant_bottoms):
            return layer
    return None


def what_caffe_cannot_run(net: Any) -> str | None:
    """Why the pinned Caffe cannot run ``net`` (one phase's NetParameter) as written, or
    None: the first layer of a fork's type (pynetbuilder/kinds/forks.py; none of them is
    registered in this build), of a type whose CPU forward it lacks (:data:`GPU_ONLY`),
    SegNet's unpooling Upsample (this build's Upsample takes one input), or a layer
    setting a fork's field (read through the dialect schema, kept as an unknown field:
    Caffe would silently run the layer without it, e.g. Fast R-CNN's Dropout
    ``scale_train``).  Data layers are exempt (they become inputs)."""
    from pynetbuilder.kinds.forks import KINDS as FORKS
    from pynetbuilder.kinds.forks import is_segnet_upsample
    from pynetbuilder.pytorch.adapter import DATA_TYPES

    origins = {k.type: k.origin for k in FORKS}
    for layer in net.layer:
        if layer.type in DATA_TYPES:
            continue
        where = f"layer {layer.name!r} ({layer.type}"
        if layer.type in origins:
            return f"{where}, a layer type of the {origins[layer.type]} fork)"
        if layer.type in GPU_ONLY:
            return f"{where}: {GPU_ONLY[layer.type]})"
        if layer.type == "Upsample" and is_segnet_upsample(layer):
            return f"{where} with SegNet's pooling mask)"
        known = caffe_pb2.LayerParameter()
        known.CopyFrom(layer)
        known.DiscardUnknownFields()
        if known.ByteSize() != layer.ByteSize():
            return f"{where} sets a field of a fork's dialect, which this build ignores)"
    return None


def _no_side_effects(p: Any) -> None:
    """SSD's DetectionOutput without what it does besides computing its top: with
    ``save_output_param.output_directory`` set, its set-up deletes that directory
    (``remove_all``), creates it anew and aborts unless the label-map and name-size
    files it names exist (published deploy nets name their authors' own paths);
    ``visualize`` draws on images.  Neither changes the top blob."""
    p.ClearField("save_output_param")
    p.ClearField("visualize")
    p.ClearField("visualize_threshold")
    p.ClearField("save_file")


def out_of_place(net: Any) -> Any:
    """``net`` with every in-place layer writing a new blob (``BLOB@LAYER``) that later
    layers read instead: the same computation, every intermediate value and gradient
    visible (Caffe keeps only an in-place blob's last value and its first gradient)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    current: dict[str, str] = {}
    for layer in out.layer:
        original = set(layer.bottom)
        bottoms = [current.get(b, b) for b in layer.bottom]
        del layer.bottom[:]
        layer.bottom.extend(bottoms)
        tops = []
        for t in layer.top:
            if t in original:
                new = f"{t}@{layer.name}"
                current[t] = new
                tops.append(new)
            else:
                current.pop(t, None)
                tops.append(t)
        del layer.top[:]
        layer.top.extend(tops)
    return out


def loss_on_outputs(net: Any, outputs: Mapping[str, Any]) -> Any:
    """``net`` with ``loss_weight`` 1 on each top in ``outputs`` (0 on the other tops of
    its layer), so that Caffe's backward reaches every layer without force_backward
    (a layer must contribute to a loss); the oracle then replaces those tops' diffs by
    the gradients it is given."""
    from pynetbuilder.pytorch.adapter import DATA_TYPES

    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    last: dict[str, Any] = {}
    for layer in out.layer:
        for top in layer.top:
            last[top] = layer
    for layer in {id(la): la for t, la in last.items() if t in outputs}.values():
        if layer.type not in DATA_TYPES:
            del layer.loss_weight[:]
            layer.loss_weight.extend(1.0 if t in outputs else 0.0 for t in layer.top)
    return out


def run_caffe(
    net: Any,
    phase: str,
    inputs: Mapping[str, np.ndarray],
    *,
    weights: str | Path | None = None,
    seed: int = 0,
    top_diffs: Mapping[str, np.ndarray] | None = None,
    backward: bool = False,
    keep: Path | None = None,
    timeout: float = 1800,
    force_backward: bool = True,
) -> CaffeRun:
    """Forward (and with ``backward`` a backward pass) in real Caffe.  ``net`` must be
    ready (:func:`caffe_ready`).  Without ``weights`` every parameter blob is set to
    random values (BatchNorm statistics positive) and saved: ``CaffeRun.weights``, in
    ``keep`` (a folder that outlives the call; without it the run's files are removed
    and ``weights`` is None).  The backward pass is forced through every layer unless
    ``force_backward`` is False (then Caffe runs it as training does: from the losses
    to the learnt blobs, ``INPUT_PARAMETER`` layers included)."""
    folder = Path(tempfile.mkdtemp(prefix="caffe-oracle-", dir=keep))
    try:
        run = _run_in(folder, net, phase, inputs, weights, seed, top_diffs,
                      backward and force_backward, backward, timeout)
    finally:
        if keep is None:  # nothing left behind (a run's files can be large)
            shutil.rmtree(folder, ignore_errors=True)
    if weights is None and keep is not None:
        run.weights = folder / "weights.caffemodel"
    return run


def _run_in(folder: Path, net: Any, phase: str, inputs: Mapping[str, np.ndarray],
            weights: str | Path | None, seed: int, top_diffs: Mapping[str, np.ndarray] | None,
            force: bool, backward: bool, timeout: float) -> CaffeRun:
    from pynetbuilder.schema import to_text

    proto = caffe_pb2.NetParameter()
    proto.CopyFrom(net)
    proto.force_backward = force
    (folder / "net.prototxt").write_text(to_text(proto))
    names = list(inputs)
    np.savez(folder / "inputs.npz", *[np.asarray(inputs[n], dtype=np.float32) for n in names])
    diff_names = list(top_diffs or {})
    if top_diffs:
        np.savez(folder / "top_diffs.npz", *[np.asarray(top_diffs[n], np.float32)
                                              for n in diff_names])
    request = {"phase": phase, "inputs": names, "weights": str(weights) if weights else None,
               "seed": seed, "backward": backward, "top_diffs": diff_names,
               "layers": [[la.name, la.type] for la in proto.layer]}
    (folder / "request.json").write_text(json.dumps(request))
    proc = subprocess.run([sys.executable, "-m", "pynetbuilder.pytorch.caffe_oracle",
                           str(folder)], capture_output=True, text=True, timeout=timeout)
    if (folder / "unknown.json").exists():
        name, kind = json.loads((folder / "unknown.json").read_text())
        raise CaffeError(f"layer {name!r} of type {kind!r} is not a layer type of the Caffe "
                         "build verify runs (BVLC Caffe 1.0 with SSD's and brocolli's extras), "
                         "so it cannot be compared with real Caffe")
    if not (folder / "result.json").exists():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        fatal = [ln for ln in lines if ln.startswith(("F", "E")) or "Error" in ln]
        raise CaffeError("Caffe failed: " + " | ".join((fatal or lines)[-3:]))
    meta = json.loads((folder / "result.json").read_text())
    with np.load(folder / "result.npz") as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    run = CaffeRun({}, {})
    for (kind, name, _), arr in zip(meta, arrays):
        if kind == "blob":
            run.blobs[name] = arr
        elif kind == "diff":
            run.diffs[name] = arr
        elif kind == "param":
            run.params.setdefault(name, []).append(arr)
        else:
            run.param_diffs.setdefault(name, []).append(arr)
    return run


class CaffeNoise:
    """Caffe's random draws, for a module's Dropout and ShakeShake layers (set as their
    ``noise``), in the order the forward pass asks for them."""

    def __init__(self, seed: int) -> None:
        self.mt = np.random.RandomState(seed)  # boost::mt19937(seed): same generator
        self.seed = seed
        self.shake: dict[int, np.random.Generator] = {}
        self.shake_order: list[int] = []

    def __call__(self, module: Any, shape: Any):
        import torch

        if hasattr(module, "ratio"):  # Dropout: caffe_rng_bernoulli(count, 1 - ratio)
            count = int(np.prod(shape))
            draws = self.mt.randint(0, 2**32, size=count, dtype=np.uint64).astype(np.uint32)
            p = np.float32(1.0 - float(np.float32(module.ratio)))
            if p == 0:
                mask = np.zeros(count, dtype=np.float32)
            else:
                mask = (draws.astype(np.float32) <= p * np.float32(4294967295.0))
            return torch.from_numpy(mask.astype(np.float32).reshape(shape))
        key = id(module)  # ShakeShake: its own generator, seeded seed + i
        if key not in self.shake:
            self.shake[key] = np.random.default_rng(self.seed + len(self.shake))
        rng = self.shake[key]
        alpha = rng.uniform(0.0, 1.0, size=shape)
        beta = rng.uniform(0.0, 1.0, size=shape)
        return torch.from_numpy(alpha), torch.from_numpy(beta)


def random_weights(net: Any, seed: int) -> None:
    """Every parameter blob of a pycaffe net random: weights ~ N(0, 1/fan_in), biases
    and shifts ~ N(0, 0.1), scales ~ U(0.5, 1.5), BatchNorm means ~ N(0, 0.1) and
    variances ~ U(0.5, 1.5) times a scale factor ~ U(0.5, 2) (all positive)."""
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        for i, blob in enumerate(blobs):
            shape = blob.data.shape
            if kind == "BatchNorm":
                continue
            if kind in ("Scale", "Normalize") and i == 0:
                value = rng.uniform(0.5, 1.5, size=shape)
            elif kind == "PReLU":
                value = rng.uniform(0.0, 0.5, size=shape)
            elif i == 0 and len(shape) >= 2:
                fan_in = int(np.prod(shape[1:])) if kind != "InnerProduct" else shape[-1]
                value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), size=shape)
            else:
                value = rng.normal(0.0, 0.1, size=shape)
            blob.data[...] = value
        if kind == "BatchNorm":
            sf = rng.uniform(0.5, 2.0)
            blobs[0].data[...] = rng.normal(0.0, 0.1, size=blobs[0].data.shape) * sf
            blobs[1].data[...] = rng.uniform(0.5, 1.5, size=blobs[1].data.shape) * sf
            blobs[2].data[...] = sf


def _child(folder: Path) -> None:
    import caffe

    caffe.set_mode_cpu()
    request = json.loads((folder / "request.json").read_text())
    known = set(caffe.layer_type_list())
    unknown = [pair for pair in request["layers"] if pair[1] not in known]
    if unknown:  # refused here: Caffe's own refusal is a fatal check, logged by glog
        (folder / "unknown.json").write_text(json.dumps(unknown[0]))
        return
    phase = caffe.TRAIN if request["phase"] == "train" else caffe.TEST
    net = caffe.Net(str(folder / "net.prototxt"), phase)
    if request["weights"]:
        net.copy_from(request["weights"])
    else:
        random_weights(net, request["seed"])
        net.save(str(folder / "weights.caffemodel"))
    with np.load(folder / "inputs.npz") as data:
        for i, name in enumerate(request["inputs"]):
            held = net.params.get(INPUT_PARAMETER + name)
            (held[0] if held is not None else net.blobs[name]).data[...] = data[f"arr_{i}"]
    caffe.set_random_seed(request["seed"])
    net._forward(0, len(net.layers) - 1)
    meta: list[tuple[str, str, int]] = []
    arrays: list[np.ndarray] = []
    for name, blob in net.blobs.items():
        meta.append(("blob", name, 0))
        arrays.append(blob.data.copy())
    for name, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            meta.append(("param", name, i))
            arrays.append(blob.data.copy())
    if request["backward"]:
        if request["top_diffs"]:
            with np.load(folder / "top_diffs.npz") as data:
                for i, name in enumerate(request["top_diffs"]):
                    net.blobs[name].diff[...] = data[f"arr_{i}"]
        net._backward(len(net.layers) - 1, 0)
        for name, blob in net.blobs.items():
            meta.append(("diff", name, 0))
            arrays.append(blob.diff.copy())
        for name, blobs in net.params.items():
            for i, blob in enumerate(blobs):
                meta.append(("param_diff", name, i))
                arrays.append(blob.diff.copy())
    np.savez(folder / "result.npz", *arrays)
    (folder / "result.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    import os

    _child(Path(sys.argv[1]))
    sys.stdout.flush()
    os._exit(0)  # skip pycaffe's teardown (a Python layer's can crash it)
