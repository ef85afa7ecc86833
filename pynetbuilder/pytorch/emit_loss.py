"""Losses and metrics: SoftmaxWithLoss (every normalization, ignore_label),
EuclideanLoss, Accuracy (top_k, ignore_label, per-class top), and the losses of
BVLC Caffe 1.0 that read ``num`` items of ``count / num`` values each:
SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss, InfogainLoss,
ContrastiveLoss, SmoothL1Loss (SSD's, in this build).

Caffe writes these losses' gradients by hand; where its Backward is not the exact
derivative of its Forward (a gradient through a clipped probability, a distance
plus 1e-4, a weight left out), the module's gradient is Caffe's: the value is
computed as Caffe's Forward and a surrogate whose gradient is Caffe's Backward
carries it (``value + (surrogate - surrogate.detach())``).  Labels, indices and a
loss's matrix are read as Caffe reads them (floats cast to int) and get no gradient.
The pinned build's versions of these layers read no ``loss_param`` (normalization,
ignore_label): they divide by ``num``, as here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape, caffe_axis

FLT_MIN = 1.1754943508222875e-38  # Caffe clamps probabilities there
# kLOG_THRESHOLD (include/caffe/layers/loss_layer.hpp), a float
LOG_THRESHOLD = float(np.float32(1e-20))


def _normalization(layer: Any) -> str:
    p = layer.loss_param
    if not p.HasField("normalization") and p.HasField("normalize"):
        return "VALID" if p.normalize else "BATCH_SIZE"
    return p.NormalizationMode.Name(p.normalization)


class SoftmaxWithLoss(CaffeLayer):
    """``-sum log(max(prob[label], FLT_MIN)) / normalizer``; Caffe's gradient
    ``(prob - onehot) / normalizer`` (the clamp does not stop it)."""

    def __init__(self, axis: int, outer: int, classes: int, inner: int, ignore: int | None,
                 normalization: str, tops: int) -> None:
        super().__init__()
        self.axis, self.outer, self.classes, self.inner = axis, outer, classes, inner
        self.ignore, self.normalization, self.tops = ignore, normalization, tops

    def forward(self, x: torch.Tensor, label: torch.Tensor):
        prob = torch.softmax(x, self.axis)
        shaped = (self.outer, self.classes, self.inner)
        lab = label.reshape(self.outer, 1, self.inner).to(torch.int64)
        valid = None
        if self.ignore is not None:
            valid = lab != self.ignore
            lab = torch.where(valid, lab, torch.zeros_like(lab))
        # the value as Caffe's log(max(prob, FLT_MIN)) of its float softmax; the
        # gradient that of log_softmax, (prob - onehot), as Caffe's backward
        value = torch.log(torch.clamp(prob.reshape(shaped).gather(1, lab), min=FLT_MIN))
        picked = torch.log_softmax(x, self.axis).reshape(shaped).gather(1, lab)
        picked = picked + (value - picked).detach()
        if valid is not None:
            picked = picked * valid.to(picked.dtype)
        loss = -picked.sum() / self._normalizer(valid, picked)
        if self.tops == 1:
            return loss
        return loss, prob

    def _normalizer(self, valid: torch.Tensor | None, like: torch.Tensor):
        mode = self.normalization
        if mode == "VALID" and valid is not None:
            return torch.clamp(valid.sum().to(like.dtype), min=1.0)
        n = {"FULL": self.outer * self.inner, "VALID": self.outer * self.inner,
             "BATCH_SIZE": self.outer, "NONE": 1}[mode]
        return float(max(1, n))


def softmax_with_loss(layer: Any, bottoms: list[Shape], tops: list[Shape],
                      phase: str) -> CaffeLayer:
    b = bottoms[0]
    axis = caffe_axis(layer.softmax_param.axis, len(b))
    outer, inner = math.prod(b[:axis]), math.prod(b[axis + 1 :])
    if math.prod(bottoms[1]) != outer * inner:
        raise EmitError(f"SoftmaxWithLoss layer {layer.name!r}: {math.prod(bottoms[1])} labels "
                        f"for {outer * inner} predictions")
    p = layer.loss_param
    ignore = p.ignore_label if p.HasField("ignore_label") else None
    return SoftmaxWithLoss(axis, outer, b[axis], inner, ignore, _normalization(layer),
                           len(layer.top))


class EuclideanLoss(CaffeLayer):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = a - b
        return (d * d).sum() / a.shape[0] / 2.0


def euclidean_loss(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return EuclideanLoss()


class Accuracy(CaffeLayer):
    """Caffe's top-k accuracy: the label's score is in the top k when fewer than k
    classes beat it (a higher score, or an equal one at a higher index: Caffe sorts
    (score, index) pairs descending).  Ignored labels count nowhere; the second top
    is each class's accuracy (0 for a class with no samples)."""

    def __init__(self, outer: int, classes: int, inner: int, top_k: int,
                 ignore: int | None, tops: int) -> None:
        super().__init__()
        self.outer, self.classes, self.inner = outer, classes, inner
        self.top_k, self.ignore, self.tops = top_k, ignore, tops

    def forward(self, x: torch.Tensor, label: torch.Tensor):
        x = x.detach().reshape(self.outer, self.classes, self.inner)
        lab = label.detach().reshape(self.outer, 1, self.inner).to(torch.int64)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None \
            else lab != self.ignore
        safe = torch.where(valid, lab, torch.zeros_like(lab))
        true = x.gather(1, safe)
        index = torch.arange(self.classes, device=x.device).reshape(1, -1, 1)
        better = (x > true) | ((x == true) & (index > safe))
        hit = (better.sum(1, keepdim=True) < self.top_k) & valid
        accuracy = hit.sum().to(x.dtype) / valid.sum().to(x.dtype)
        if self.tops == 1:
            return accuracy
        onehot = (safe == index) & valid  # outer x classes x inner
        per_class_n = onehot.sum((0, 2)).to(x.dtype)
        per_class_hit = (onehot & hit).sum((0, 2)).to(x.dtype)
        per_class = torch.where(per_class_n > 0, per_class_hit / per_class_n.clamp(min=1.0),
                                torch.zeros_like(per_class_n))
        return accuracy, per_class


def accuracy(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.accuracy_param
    b = bottoms[0]
    axis = caffe_axis(p.axis, len(b))
    outer, inner = math.prod(b[:axis]), math.prod(b[axis + 1 :])
    ignore = p.ignore_label if p.HasField("ignore_label") else None
    return Accuracy(outer, b[axis], inner, p.top_k, ignore, len(layer.top))


# ---------------------------------------------------------------- losses over num items


def _num(shape: Shape) -> int:
    """Caffe's ``Blob::num()``: the first axis (1 for a blob without axes)."""
    return shape[0] if shape else 1


def _with_caffe_gradient(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` (computed without gradient) forward, ``surrogate``'s gradient backward;
    ``surrogate - surrogate`` is exactly 0, however large (a probability clipped at
    kLOG_THRESHOLD makes it 1e20)."""
    return value + (surrogate - surrogate.detach())


def _item_labels(label: torch.Tensor, num: int) -> torch.Tensor:
    """The first ``num`` values of ``label`` as integers (``static_cast<int>``: toward 0)."""
    return label.detach().reshape(-1)[:num].to(torch.int64)


class SigmoidCrossEntropyLoss(CaffeLayer):
    """``sigmoid_cross_entropy_loss_layer.cpp``: ``-sum(x (t - [x >= 0]) -
    log(1 + exp(x - 2 x [x >= 0]))) / num``; gradient ``(sigmoid(x) - t) / num``, none
    to the targets."""

    def __init__(self, num: int) -> None:
        super().__init__()
        self.num = num

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.detach().reshape(x.shape)
        v = x.detach()
        positive = (v >= 0).to(v.dtype)
        value = -(v * (t - positive) - torch.log(1 + torch.exp(v - 2 * v * positive))).sum()
        surrogate = nnf.binary_cross_entropy_with_logits(x, t, reduction="sum")
        return _with_caffe_gradient(value, surrogate) / self.num


def sigmoid_cross_entropy_loss(layer: Any, bottoms: list[Shape], tops: list[Shape],
                               phase: str) -> CaffeLayer:
    return SigmoidCrossEntropyLoss(_num(bottoms[0]))


class HingeLoss(CaffeLayer):
    """``hinge_loss_layer.cpp``: per item, ``max(0, 1 + x_j)`` for the other values and
    ``max(0, 1 - x_label)``; their sum (L1) or sum of squares (L2) over ``num``."""

    def __init__(self, num: int, dim: int, squared: bool) -> None:
        super().__init__()
        self.num, self.dim, self.squared = num, dim, squared

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(self.num, self.dim)
        lab = _item_labels(label, self.num).reshape(-1, 1)
        index = torch.arange(self.dim, device=x.device).reshape(1, -1)
        sign = 1.0 - 2.0 * (index == lab).to(flat.dtype)
        margin = torch.relu(1 + flat * sign)
        total = (margin * margin).sum() if self.squared else margin.sum()
        return total / self.num


def hinge_loss(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    num = _num(bottoms[0])
    norm = layer.hinge_loss_param.Norm.Name(layer.hinge_loss_param.norm)
    return HingeLoss(num, math.prod(bottoms[0]) // num, norm == "L2")


class MultinomialLogisticLoss(CaffeLayer):
    """``multinomial_logistic_loss_layer.cpp``: ``-sum log(max(p[label],
    kLOG_THRESHOLD)) / num``; gradient ``-1 / max(p[label], kLOG_THRESHOLD) / num`` at
    each label (a clipped probability still gets it), 0 elsewhere."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.num, self.dim = num, dim

    def forward(self, prob: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        lab = _item_labels(label, self.num).reshape(-1, 1)
        picked = prob.reshape(self.num, self.dim).gather(1, lab)
        clipped = torch.clamp(picked.detach(), min=LOG_THRESHOLD)
        value = -torch.log(clipped).sum()
        surrogate = -(picked / clipped).sum()
        return _with_caffe_gradient(value, surrogate) / self.num


def multinomial_logistic_loss(layer: Any, bottoms: list[Shape], tops: list[Shape],
                              phase: str) -> CaffeLayer:
    num = _num(bottoms[0])
    return MultinomialLogisticLoss(num, math.prod(bottoms[0]) // num)


class InfogainLoss(CaffeLayer):
    """``infogain_loss_layer.cpp``: ``-sum_i sum_j H[label_i, j] log(max(p_ij,
    kLOG_THRESHOLD)) / num``; gradient ``-H[label_i, j] / max(p_ij, kLOG_THRESHOLD) /
    num``.  ``H`` is the third bottom, else ``infogain_loss_param.source`` (``matrix``);
    it gets no gradient (Caffe aborts if asked for one)."""

    def __init__(self, num: int, dim: int, matrix: np.ndarray | None) -> None:
        super().__init__()
        self.num, self.dim = num, dim
        self.register_buffer("matrix", None if matrix is None else torch.from_numpy(
            np.ascontiguousarray(matrix, dtype=np.float32).reshape(dim, dim)), persistent=False)

    def forward(self, prob: torch.Tensor, label: torch.Tensor,
                h: torch.Tensor | None = None) -> torch.Tensor:
        matrix = self.matrix if h is None else h.detach().reshape(self.dim, self.dim)
        rows = matrix.index_select(0, _item_labels(label, self.num))
        flat = prob.reshape(self.num, self.dim)
        clipped = torch.clamp(flat.detach(), min=LOG_THRESHOLD)
        value = -(rows * torch.log(clipped)).sum()
        surrogate = -(rows * flat / clipped).sum()
        return _with_caffe_gradient(value, surrogate) / self.num


def infogain_loss(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    num = _num(bottoms[0])
    dim = math.prod(bottoms[0]) // num
    matrix = None if len(bottoms) > 2 else _infogain_matrix(layer, dim)
    return InfogainLoss(num, dim, matrix)


def _infogain_matrix(layer: Any, dim: int) -> np.ndarray:
    """``InfogainLossLayer::LayerSetUp``: the matrix of a binary ``BlobProto`` file named
    by ``infogain_loss_param.source`` (relative to the working directory, as Caffe
    opens it), checked as its ``Reshape`` does: legacy shape 1 x 1 x dim x dim."""
    from pynetbuilder.errors import UsageError
    from pynetbuilder.pytorch.weights import _blob_array
    from pynetbuilder.schema import caffe_pb2

    where = f"InfogainLoss layer {layer.name!r}"
    p = layer.infogain_loss_param
    if not p.source:
        raise EmitError(f"{where}: needs its matrix H as a third input or in "
                        "infogain_loss_param.source (a binary BlobProto file)")
    try:
        data = Path(p.source).read_bytes()
    except OSError as exc:
        raise EmitError(f"{where}: cannot read infogain_loss_param.source {p.source}: "
                        f"{exc.strerror}") from None
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(data)
        matrix = _blob_array(blob)
    except UsageError as exc:
        raise EmitError(f"{where}: infogain_loss_param.source {p.source}: {exc}") from None
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise EmitError(f"{where}: infogain_loss_param.source {p.source} is not a binary "
                        "BlobProto file") from None
    legacy = (1,) * (4 - matrix.ndim) + matrix.shape if matrix.ndim <= 4 else matrix.shape
    if legacy != (1, 1, dim, dim):
        raise EmitError(f"{where}: the matrix in {p.source} has shape {matrix.shape}; Caffe "
                        f"needs 1 x 1 x {dim} x {dim} (one row and column per value of an item)")
    return matrix


class ContrastiveLoss(CaffeLayer):
    """``contrastive_loss_layer.cpp``: per pair, ``d^2`` if similar, else ``max(margin
    - d^2, 0)`` (``legacy_version``) or ``max(margin - d, 0)^2``; summed, over ``num``
    and 2.  Caffe's gradient of a dissimilar pair divides by ``d + 1e-4`` (not ``d``);
    none to the similarity input."""

    def __init__(self, num: int, channels: int, margin: float, legacy: bool) -> None:
        super().__init__()
        self.num, self.channels = num, channels
        self.margin, self.legacy = margin, legacy

    def forward(self, a: torch.Tensor, b: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
        diff = a.reshape(self.num, self.channels) - b.reshape(self.num, self.channels)
        dist_sq = (diff * diff).sum(1)
        same = _item_labels(similar, self.num) != 0
        d2 = dist_sq.detach()
        if self.legacy:
            gap = self.margin - d2
            term = torch.clamp(gap, min=0.0)
            coeff = -(gap > 0).to(d2.dtype)
        else:
            dist = torch.sqrt(d2)
            gap = self.margin - dist
            term = torch.clamp(gap, min=0.0) ** 2
            coeff = torch.where(gap > 0, -gap / (dist + 1e-4), torch.zeros_like(gap))
        value = torch.where(same, d2, term).sum()
        surrogate = (torch.where(same, torch.ones_like(coeff), coeff) * dist_sq).sum()
        return _with_caffe_gradient(value, surrogate) / self.num / 2


def contrastive_loss(layer: Any, bottoms: list[Shape], tops: list[Shape],
                     phase: str) -> CaffeLayer:
    p = layer.contrastive_loss_param
    num = _num(bottoms[0])
    return ContrastiveLoss(num, math.prod(bottoms[0]) // num, float(np.float32(p.margin)),
                           p.legacy_version)


class SmoothL1Loss(CaffeLayer):
    """``smooth_L1_loss_layer.cpp`` (SSD's, in this build): ``d = a - b``, ``0.5 d^2``
    where ``|d| < 1`` else ``|d| - 0.5``, summed over ``num``; the gradient ``d`` or
    ``sign(d)`` over ``num`` to ``a``, minus it to ``b``.  (Its optional weights input is
    unreachable: the layer keeps LossLayer's exactly two bottoms, and Caffe refuses a
    third.)"""

    def __init__(self, num: int) -> None:
        super().__init__()
        self.num = num

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a - b.reshape(a.shape)
        d = diff.detach()
        small = d.abs() < 1
        value = torch.where(small, 0.5 * d * d, d.abs() - 0.5).sum()
        slope = torch.where(small, d, torch.sign(d))
        return _with_caffe_gradient(value, (slope * diff).sum()) / self.num


def smooth_l1_loss(layer: Any, bottoms: list[Shape], tops: list[Shape],
                   phase: str) -> CaffeLayer:
    return SmoothL1Loss(_num(bottoms[0]))
