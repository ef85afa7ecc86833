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


# ---------------------------------------------------------------- BVLC's per-item losses


def _legacy(layer: LayerLike, shape: Shape, what: str) -> tuple[int, int, int, int]:
    """``Blob::LegacyShape``: num, channels, height, width (1 past the last axis);
    Caffe aborts on a blob of more than 4 axes."""
    if len(shape) > 4:
        raise refuse(layer, f"its {what} has {len(shape)} axes {shape}; this layer reads it "
                            "through Caffe's num/channels/height/width, at most 4 axes")
    n, c, h, w = (*shape, 1, 1, 1, 1)[:4]
    return n, c, h, w


def _scalar_loss(layer: LayerLike, bottoms: list[Shape], low: int, high: int) -> LayerCost:
    """``LossLayer``: ``low``..``high`` inputs, one scalar top, and (``Reshape``) the
    first two inputs with one first axis."""
    if not low <= len(bottoms) <= high:
        wanted = str(low) if low == high else f"{low} or {high}"
        raise refuse(layer, f"takes {wanted} inputs, got {len(bottoms)}")
    if len(layer.top) > 1:
        raise refuse(layer, f"has one output (the loss), got {len(layer.top)}")
    first, second = bottoms[0], bottoms[1]
    if not first or not second:
        raise refuse(layer, f"its inputs need a first axis (items), got {first} and {second}")
    if first[0] != second[0]:
        raise refuse(layer, f"its first two inputs need one first axis (items), got {first} "
                            f"and {second}")
    return LayerCost([()])


def _sigmoid_cross_entropy(layer: LayerLike, bottoms: list[Shape],
                           declared: Sequence[Shape] | None) -> LayerCost:
    """``SigmoidCrossEntropyLossLayer::Reshape``: as many targets as scores."""
    cost = _scalar_loss(layer, bottoms, 2, 2)
    if math.prod(bottoms[0]) != math.prod(bottoms[1]):
        raise refuse(layer, f"needs as many targets as scores, got {bottoms[1]} for "
                            f"{bottoms[0]}")
    _legacy(layer, bottoms[0], "first input")
    return cost


def _hinge(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    """``HingeLossLayer``: ``num`` items of the scores (one label each)."""
    cost = _scalar_loss(layer, bottoms, 2, 2)
    _legacy(layer, bottoms[0], "first input")
    return cost


def _one_label_per_item(layer: LayerLike, bottoms: list[Shape]) -> int:
    """``MultinomialLogisticLossLayer``/``InfogainLossLayer::Reshape``: a label blob of
    channels, height and width 1; the values per item (``count / num``)."""
    n = _legacy(layer, bottoms[0], "first input")[0]
    if _legacy(layer, bottoms[1], "label input")[1:] != (1, 1, 1):
        raise refuse(layer, f"takes one label per item (N or N x 1 x 1 x 1), got {bottoms[1]}")
    return math.prod(bottoms[0]) // n


def _multinomial_logistic(layer: LayerLike, bottoms: list[Shape],
                          declared: Sequence[Shape] | None) -> LayerCost:
    cost = _scalar_loss(layer, bottoms, 2, 2)
    _one_label_per_item(layer, bottoms)
    return cost


def _infogain(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
              ) -> LayerCost:
    """``InfogainLossLayer``: its matrix H, the third input or the file named by
    ``infogain_loss_param.source``, of legacy shape 1 x 1 x dim x dim."""
    cost = _scalar_loss(layer, bottoms, 2, 3)
    dim = _one_label_per_item(layer, bottoms)
    if len(bottoms) == 2 and not layer.infogain_loss_param.source:
        raise refuse(layer, "needs its matrix H: a third input or infogain_loss_param.source")
    if len(bottoms) == 3 and _legacy(layer, bottoms[2], "matrix H") != (1, 1, dim, dim):
        raise refuse(layer, f"its matrix H must be 1 x 1 x {dim} x {dim} (one row and column "
                            f"per value of an item), got {bottoms[2]}")
    return cost


def _contrastive(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                 ) -> LayerCost:
    """``ContrastiveLossLayer::LayerSetUp``: two N x C (x 1 x 1) inputs and one
    similarity per pair."""
    cost = _scalar_loss(layer, bottoms, 3, 3)
    a, b, same = (_legacy(layer, s, w) for s, w in zip(bottoms, ("first input",
                                                                 "second input", "third input")))
    if a[1] != b[1] or a[2:] != (1, 1) or b[2:] != (1, 1):
        raise refuse(layer, f"compares two N x C (x 1 x 1) inputs of one C, got {bottoms[0]} "
                            f"and {bottoms[1]}")
    if same[1:] != (1, 1, 1):
        raise refuse(layer, f"takes one similarity per pair (N or N x 1 x 1 x 1), got "
                            f"{bottoms[2]}")
    return cost


def _smooth_l1(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """``SmoothL1LossLayer`` (SSD's): two inputs of one channels, height and width (its
    header allows a third, weights, but keeps LossLayer's ``ExactNumBottomBlobs`` 2,
    so Caffe refuses it)."""
    cost = _scalar_loss(layer, bottoms, 2, 2)
    if _legacy(layer, bottoms[0], "first input")[1:] != _legacy(layer, bottoms[1],
                                                               "second input")[1:]:
        raise refuse(layer, f"needs inputs of one channels, height and width, got "
                            f"{bottoms[0]} and {bottoms[1]}")
    return cost


def _no_tops(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    return LayerCost([])


def _loss_kind(type_name: str, v1: str = "", rule=_loss, extra: Category = Category.NONE,  # noqa: ANN001, ANN202
               **details: object):
    return kind(type_name, rule, category=_LOSS | extra, v1=v1, fill=PINK, **details)


KINDS = (
    _loss_kind("SoftmaxWithLoss", "SOFTMAX_LOSS", _softmax_loss, param="softmax_param",
               labels=_softmax_labels, torch="emit_loss:softmax_with_loss",
               constant_bottoms=(1,)),
    _loss_kind("EuclideanLoss", "EUCLIDEAN_LOSS", torch="emit_loss:euclidean_loss"),
    _loss_kind("SigmoidCrossEntropyLoss", "SIGMOID_CROSS_ENTROPY_LOSS", _sigmoid_cross_entropy,
               torch="emit_loss:sigmoid_cross_entropy_loss", constant_bottoms=(1,)),
    _loss_kind("HingeLoss", "HINGE_LOSS", _hinge, labels=_per_item_labels,
               torch="emit_loss:hinge_loss", constant_bottoms=(1,)),
    _loss_kind("MultinomialLogisticLoss", "MULTINOMIAL_LOGISTIC_LOSS", _multinomial_logistic,
               labels=_per_item_labels, torch="emit_loss:multinomial_logistic_loss",
               constant_bottoms=(1,)),
    # infogain_loss_layer.cpp: "cannot backpropagate to infogain inputs" (H as bottom 2)
    _loss_kind("InfogainLoss", "INFOGAIN_LOSS", _infogain, labels=_per_item_labels,
               extra=Category.NO_FORCED_BACKWARD, torch="emit_loss:infogain_loss",
               constant_bottoms=(1, 2)),
    _loss_kind("ContrastiveLoss", "CONTRASTIVE_LOSS", _contrastive,
               torch="emit_loss:contrastive_loss", constant_bottoms=(2,)),
    _loss_kind("SmoothL1Loss", rule=_smooth_l1, origin="brocolli",
               torch="emit_loss:smooth_l1_loss"),
    _loss_kind("MultiBoxLoss", origin="ssd"),
    kind("Accuracy", _accuracy, category=Category.ACCURACY | Category.NO_BACKWARD, v1="ACCURACY",
         fill=PINK,
         labels=_accuracy_labels, torch="emit_loss:accuracy", constant_bottoms=(1,)),
    kind("HDF5Output", _no_tops, v1="HDF5_OUTPUT"),
)
