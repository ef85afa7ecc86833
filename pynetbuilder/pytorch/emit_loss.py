"""Losses and metrics: SoftmaxWithLoss (every normalization, ignore_label),
EuclideanLoss, Accuracy (top_k, ignore_label, per-class top)."""

from __future__ import annotations

import math
from typing import Any

import torch

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape, caffe_axis

FLT_MIN = 1.1754943508222875e-38  # Caffe clamps probabilities there


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
