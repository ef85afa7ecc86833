"""Caffe's solvers in PyTorch, arithmetic for arithmetic (``sgd_solver.cpp``,
``nesterov_solver.cpp``, ``adam_solver.cpp`` of the pinned Caffe).

Every Caffe parameter blob of the train net takes part, in Caffe's order (layers in
net order, each layer's blobs in order): its ``lr_mult`` and ``decay_mult`` are the
layer's ``param`` specs (default 1 and 1).  A blob that is a buffer in the module
(BatchNorm's statistics) has a zero gradient, as in Caffe, where its ``lr_mult`` is
what keeps it fixed.  One iteration's update, after the gradients of ``iter_size``
forward/backward passes were summed:

1. ``clip_gradients`` (if >= 0): the L2 norm of all gradients; above the limit every
   gradient is scaled by ``limit / norm``;
2. per blob: the gradient times ``1 / iter_size`` (when > 1); plus ``weight_decay *
   decay_mult`` times the weight (L2) or its sign (L1);
3. ``local_rate = rate * lr_mult`` and
   - SGD: ``h = local_rate * g + momentum * h``; ``w -= h``;
   - Nesterov: ``h' = local_rate * g + momentum * h``; ``w -= (1 + momentum) * h' -
     momentum * h``;
   - Adam (``t = iter + 1``): ``m = beta1 m + (1 - beta1) g``, ``v = beta2 v + (1 -
     beta2) g^2``; ``w -= local_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m /
     (sqrt(v) + delta)``.

``rate`` is :func:`learning_rate`: every policy Caffe has.  The state (iteration,
``current_step`` of multistep, the history blobs: SGD/Nesterov one per blob, Adam
``m`` then ``v``) is exactly Caffe's ``SolverState``, so a ``.solverstate`` is read
and written in Caffe's format and a run resumes in either engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
TYPES = ("SGD", "Nesterov", "Adam")
_LEGACY_TYPES = {caffe_pb2.SolverParameter.SGD: "SGD",
                 caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
                 caffe_pb2.SolverParameter.ADAM: "Adam"}

# SolverParameter fields the engine reproduces (or that do not change training)
_FIELDS = {
    "net", "train_net", "test_iter", "test_interval", "test_compute_loss",
    "test_initialization", "base_lr", "display", "average_loss", "max_iter", "iter_size",
    "lr_policy", "gamma", "power", "momentum", "weight_decay", "regularization_type",
    "stepsize", "stepvalue", "clip_gradients", "snapshot", "snapshot_prefix",
    "snapshot_format", "solver_mode", "device_id", "random_seed", "type", "delta",
    "momentum2", "snapshot_after_train", "solver_type", "eval_type", "snapshot_diff",
    "debug_info",
}
_F32 = np.float32


def solver_type(s: Any) -> str:
    """Caffe's solver type: the ``type`` string, else the deprecated ``solver_type``."""
    if s.HasField("type"):
        return s.type
    if s.HasField("solver_type"):
        return _LEGACY_TYPES.get(s.solver_type,
                                 caffe_pb2.SolverParameter.SolverType.Name(s.solver_type))
    return "SGD"


def check_reproducible(s: Any) -> None:
    """UsageError naming the first solver field or value the torch engine cannot
    reproduce exactly (it never approximates)."""
    why = "the torch engine cannot reproduce it; train with --engine caffe"
    for fd, _ in s.ListFields():
        if fd.name not in _FIELDS:
            raise UsageError(f"solver field {fd.name!r} is set: {why}")
    kind = solver_type(s)
    if kind not in TYPES:
        raise UsageError(f"solver type {kind!r}: the torch engine has {', '.join(TYPES)}; "
                         "train with --engine caffe")
    if s.lr_policy not in POLICIES:
        raise UsageError(f"lr_policy {s.lr_policy!r} is not one of Caffe's policies "
                         f"({', '.join(POLICIES)})")
    if s.lr_policy == "step" and s.stepsize <= 0:
        raise UsageError("lr_policy step needs stepsize > 0")
    if s.regularization_type not in ("L1", "L2"):
        raise UsageError(f"regularization_type {s.regularization_type!r}: Caffe knows L1 and L2")
    if s.snapshot_format != caffe_pb2.SolverParameter.BINARYPROTO:
        raise UsageError("snapshot_format HDF5: the torch engine writes Caffe's binary proto "
                         "snapshots only (drop snapshot_format)")
    if s.snapshot_diff:
        raise UsageError(f"solver field 'snapshot_diff' is true: {why}")
    if s.debug_info:
        raise UsageError(f"solver field 'debug_info' is true (Caffe's per-blob debug log): {why}")
    if s.eval_type != "classification":
        raise UsageError(f"eval_type {s.eval_type!r}: {why}")
    if len(s.test_iter) > 1:
        raise UsageError(f"{len(s.test_iter)} test nets (test_iter given {len(s.test_iter)} "
                         f"times): the torch engine tests one net")
    if s.iter_size < 1:
        raise UsageError("iter_size must be at least 1")
    if s.max_iter <= 0:
        raise UsageError("max_iter must be positive")


def learning_rate(s: Any, iteration: int, current_step: int) -> tuple[float, int]:
    """``(rate, current_step)`` of Caffe's ``GetLearningRate`` at ``iteration``, in
    float32 as Caffe computes it (multistep advances at most one step per call)."""
    policy, base, gamma, power = s.lr_policy, _F32(s.base_lr), _F32(s.gamma), _F32(s.power)
    it = iteration
    if policy == "fixed":
        rate = base
    elif policy == "step":
        current_step = it // s.stepsize
        rate = float(base) * math.pow(float(gamma), current_step)
    elif policy == "exp":
        rate = float(base) * math.pow(float(gamma), it)
    elif policy == "inv":
        rate = base * np.power(_F32(1) + gamma * _F32(it), -power, dtype=_F32)
    elif policy == "multistep":
        if current_step < len(s.stepvalue) and it >= s.stepvalue[current_step]:
            current_step += 1
        rate = float(base) * math.pow(float(gamma), current_step)
    elif policy == "poly":
        frac = _F32(it) / _F32(s.max_iter)
        rate = base * np.power(_F32(1) - frac, power, dtype=_F32)
    elif policy == "sigmoid":
        rate = base * (_F32(1) / (_F32(1) + np.exp(-gamma * (_F32(it) - _F32(s.stepsize)),
                                                    dtype=_F32)))
    else:
        raise UsageError(f"unknown learning rate policy {policy!r}")
    return float(_F32(rate)), current_step


@dataclass
class Blob:
    """One Caffe parameter blob: the module's tensor and its multipliers."""

    name: str  # "layer/index"
    tensor: torch.Tensor
    lr_mult: float
    decay_mult: float


def net_blobs(module: Any) -> list[Blob]:
    """The train module's parameter blobs in Caffe's ``learnable_params`` order, with
    their ``param`` specs; UsageError for blobs shared by name (not reproduced)."""
    layers = {layer.name: layer for layer in module.net_param.layer}
    blobs: list[Blob] = []
    for name, mod in module.layer_modules.items():
        specs = layers[name].param
        for i, tensor in enumerate(mod.caffe_blobs()):
            spec = specs[i] if i < len(specs) else None
            if spec is not None and spec.name:
                raise UsageError(f"layer {name!r} shares parameter blob {i} by name "
                                 f"({spec.name!r}): the torch engine cannot reproduce it")
            lr = spec.lr_mult if spec is not None else 1.0
            decay = spec.decay_mult if spec is not None else 1.0
            blobs.append(Blob(f"{name}/{i}", tensor, lr, decay))
    return blobs


class CaffeSolver:
    """Caffe's SGD, Nesterov or Adam over ``blobs`` (see the module doc)."""

    def __init__(self, s: Any, blobs: Sequence[Blob]) -> None:
        self.s, self.blobs = s, list(blobs)
        self.kind = solver_type(s)
        self.iter = 0
        self.current_step = 0
        n = 2 if self.kind == "Adam" else 1
        self.history = [torch.zeros_like(b.tensor) for _ in range(n) for b in self.blobs]

    # ------------------------------------------------------------ the update

    def rate(self) -> float:
        """The learning rate of this iteration (advances multistep's step, as Caffe)."""
        rate, self.current_step = learning_rate(self.s, self.iter, self.current_step)
        return rate

    def clip(self) -> tuple[float, float] | None:
        """Caffe's ClipGradients: ``(norm, factor)`` when it scaled, else None."""
        limit = float(_F32(self.s.clip_gradients))
        if limit < 0:
            return None
        grads = [b.tensor.grad for b in self.blobs if b.tensor.grad is not None]
        if not grads:
            return None
        sumsq = torch.stack([g.double().pow(2).sum() for g in grads]).sum()
        norm = float(_F32(math.sqrt(float(sumsq))))
        if norm > limit:
            factor = float(_F32(limit) / _F32(norm))
            torch._foreach_mul_(grads, factor)
            return norm, factor
        return None

    @torch.no_grad()
    def update(self, rate: float) -> None:
        """Normalise, regularise and apply one update to every blob; ``iter`` += 1
        is the caller's (Caffe increments it after the snapshot check)."""
        s = self.s
        momentum = float(_F32(s.momentum))
        decay = _F32(s.weight_decay)
        n = len(self.blobs)
        for i, b in enumerate(self.blobs):
            w = b.tensor
            g = w.grad if isinstance(w, torch.nn.Parameter) and w.grad is not None else None
            g = torch.zeros_like(w) if g is None else g.to(torch.float32)
            if s.iter_size > 1:
                g = g * float(_F32(1) / _F32(s.iter_size))
            local_decay = float(decay * _F32(b.decay_mult))
            if local_decay:
                g = g + local_decay * (w if s.regularization_type == "L2" else torch.sign(w))
            local_rate = float(_F32(rate) * _F32(b.lr_mult))
            h = self.history[i]
            if self.kind == "SGD":
                h.mul_(momentum).add_(g, alpha=local_rate)
                step = h
            elif self.kind == "Nesterov":
                previous = h.clone()
                h.mul_(momentum).add_(g, alpha=local_rate)
                step = h * (1.0 + momentum) - previous * momentum
            else:
                step = self._adam(g, h, self.history[n + i], local_rate)
            w.sub_(step.to(w.dtype))

    def _adam(self, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
              local_rate: float) -> torch.Tensor:
        s = self.s
        beta1, beta2 = _F32(s.momentum), _F32(s.momentum2)
        t = self.iter + 1
        correction = _F32(math.sqrt(float(_F32(1) - _F32(math.pow(beta2, t))))) / \
            (_F32(1) - _F32(math.pow(beta1, t)))
        m.mul_(float(beta1)).add_(g, alpha=float(_F32(1) - beta1))
        v.mul_(float(beta2)).add_(g * g, alpha=float(_F32(1) - beta2))
        return m / (v.sqrt() + float(_F32(s.delta))) * float(_F32(local_rate) * correction)

    # ------------------------------------------------------------ Caffe's SolverState

    def state_bytes(self, learned_net: str) -> bytes:
        """This solver's state as Caffe's ``SolverState`` (``learned_net``: the
        weights' path as Caffe would name it, relative to the run folder)."""
        from pynetbuilder.pytorch.weights import blob_bytes

        state = caffe_pb2.SolverState(iter=self.iter, learned_net=learned_net,
                                      current_step=self.current_step)
        for h in self.history:
            state.history.add().ParseFromString(blob_bytes(h))
        return state.SerializeToString()

    def load_state(self, state: Any, source: str) -> None:
        """Restore iteration, step and history from a ``SolverState`` (either engine's);
        UsageError when its history does not fit this net and solver type."""
        if len(state.history) != len(self.history):
            per = len(self.blobs)
            kinds = {per: "SGD or Nesterov", 2 * per: "Adam"}
            theirs = kinds.get(len(state.history), "another net")
            raise UsageError(f"cannot resume from {source}: it holds {len(state.history)} "
                             f"history blobs ({theirs}), this {self.kind} solver of "
                             f"{per} parameter blobs needs {len(self.history)}")
        from pynetbuilder.pytorch.weights import _blob_array

        for i, (h, proto) in enumerate(zip(self.history, state.history)):
            arr = _blob_array(proto)
            if arr.size != h.numel():
                raise UsageError(f"cannot resume from {source}: history blob {i} has "
                                 f"{arr.size} values, parameter {self._name(i)} has "
                                 f"{h.numel()}")
            h.copy_(torch.from_numpy(np.ascontiguousarray(arr)).reshape(h.shape))
        self.iter, self.current_step = int(state.iter), int(state.current_step)

    def _name(self, i: int) -> str:
        return self.blobs[i % len(self.blobs)].name
