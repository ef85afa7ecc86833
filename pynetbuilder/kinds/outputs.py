"""Layer kinds at the end of a net: losses, scores, writers."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    Shape,
    axis_index,
    kind,
    refuse,
)

PINK = "#f4cccc"
_LOSS = Category.LOSS


def _loss(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
          ) -> LayerCost:
    tops: list[Shape] = [()]
    if len(layer.top) > 1:  # SoftmaxWithLoss may also output the probabilities
        tops.append(bottoms[0])
    return LayerCost(tops)


def _softmax_loss(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                  ) -> LayerCost:
    """``SoftmaxWithLossLayer::Reshape``: one label per item of the softmax axis's outer
    x inner count."""
    scores, labels = bottoms[0], bottoms[1] if len(bottoms) > 1 else ()
    axis = axis_index(layer.softmax_param.axis, len(scores))
    outer = inner = 1
    for d in scores[:axis]:
        outer *= d
    for d in scores[axis + 1 :]:
        inner *= d
    label_count = 1
    for d in labels:
        label_count *= d
    if len(bottoms) > 1 and outer * inner != label_count:
        raise refuse(layer, f"{outer * inner} predictions (outer x inner of {scores}) need as "
                            f"many labels, got {labels}")
    return _loss(layer, bottoms, declared)


def _accuracy(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
              ) -> LayerCost:
    p = layer.accuracy_param
    axis = axis_index(p.axis, len(bottoms[0]))
    if p.top_k > (bottoms[0][axis] if bottoms[0] else 1):
        raise refuse(layer, f"top_k {p.top_k} must not exceed the {bottoms[0][axis]} classes")
    tops: list[Shape] = [()]
    if len(layer.top) > 1:
        tops.append((bottoms[0][axis],))
    return LayerCost(tops)


def _softmax_labels(layer: LayerLike, scores: Shape) -> tuple[int, int | None]:
    """``SoftmaxWithLossLayer``: classes along ``softmax_param.axis``; ``loss_param``'s
    ``ignore_label`` is skipped."""
    p = layer.loss_param
    ignored = p.ignore_label if p.HasField("ignore_label") else None
    return scores[axis_index(layer.softmax_param.axis, len(scores))], ignored


def _accuracy_labels(layer: LayerLike, scores: Shape) -> tuple[int, int | None]:
    """``AccuracyLayer``: classes along ``accuracy_param.axis``, its ``ignore_label``."""
    p = layer.accuracy_param
    ignored = p.ignore_label if p.HasField("ignore_label") else None
    return scores[axis_index(p.axis, len(scores))], ignored


def _per_item_labels(layer: LayerLike, scores: Shape) -> tuple[int, int | None]:
    """MultinomialLogistic, Infogain and Hinge losses: one label per item, indexing
    ``count / num`` values (``dim``)."""
    items = scores[0] if scores else 1
    return (math.prod(scores) // items if items else 0), None


def _no_tops(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    return LayerCost([])


def _loss_kind(type_name: str, v1: str = "", rule=_loss, **details: object):  # noqa: ANN001, ANN202
    return kind(type_name, rule, category=_LOSS, v1=v1, fill=PINK, **details)


KINDS = (
    _loss_kind("SoftmaxWithLoss", "SOFTMAX_LOSS", _softmax_loss, param="softmax_param",
               labels=_softmax_labels, torch="emit_loss:softmax_with_loss"),
    _loss_kind("EuclideanLoss", "EUCLIDEAN_LOSS", torch="emit_loss:euclidean_loss"),
    _loss_kind("SigmoidCrossEntropyLoss", "SIGMOID_CROSS_ENTROPY_LOSS"),
    _loss_kind("HingeLoss", "HINGE_LOSS", labels=_per_item_labels),
    _loss_kind("MultinomialLogisticLoss", "MULTINOMIAL_LOGISTIC_LOSS", labels=_per_item_labels),
    _loss_kind("InfogainLoss", "INFOGAIN_LOSS", labels=_per_item_labels),
    _loss_kind("ContrastiveLoss", "CONTRASTIVE_LOSS"),
    _loss_kind("SmoothL1Loss", origin="brocolli"),
    _loss_kind("MultiBoxLoss", origin="ssd"),
    kind("Accuracy", _accuracy, category=Category.ACCURACY | Category.NO_BACKWARD, v1="ACCURACY",
         fill=PINK,
         labels=_accuracy_labels, torch="emit_loss:accuracy"),
    kind("HDF5Output", _no_tops, v1="HDF5_OUTPUT"),
)
