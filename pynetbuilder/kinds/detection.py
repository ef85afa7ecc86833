"""SSD's detection layer kinds (this build's extras)."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    Shape,
    float32,
    kind,
    legacy,
    refuse,
)


def _prior_count(layer: LayerLike) -> int:
    """Priors per location: aspect ratios (1, each new ratio, its flip) x min sizes,
    plus one per max size (PriorBoxLayer::LayerSetUp)."""
    p = layer.prior_box_param
    if not p.min_size:
        raise refuse(layer, "needs min_size")
    ratios = [1.0]
    for ar in p.aspect_ratio:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if p.flip:
            ratios.append(float32(1.0 / ar))
    if p.max_size and len(p.max_size) != len(p.min_size):
        raise refuse(layer, f"{len(p.max_size)} max_size for {len(p.min_size)} min_size")
    return len(ratios) * len(p.min_size) + len(p.max_size)


def _prior_box(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """``1 x 2 x (H * W * priors * 4)``: box corners and their variances."""
    f = bottoms[0]
    return LayerCost([(1, 2, legacy(f, 2) * legacy(f, 3) * _prior_count(layer) * 4)])


def _detection_output(layer: LayerLike, bottoms: list[Shape],
                      declared: Sequence[Shape] | None) -> LayerCost:
    """``1 x 1 x 1 x 7`` at set-up (one row per kept box after a forward pass)."""
    p = layer.detection_output_param
    loc, conf, prior = bottoms[:3]
    priors = legacy(prior, 2) // 4
    loc_classes = 1 if p.share_location else p.num_classes
    if loc[0] != conf[0]:
        raise refuse(layer, f"location and confidence inputs have batch {loc[0]} and "
                            f"{conf[0]}")
    if priors * loc_classes * 4 != legacy(loc, 1):
        raise refuse(layer, f"{priors} priors need {priors * loc_classes * 4} location values "
                            f"per image, got {legacy(loc, 1)}")
    if priors * p.num_classes != legacy(conf, 1):
        raise refuse(layer, f"{priors} priors x {p.num_classes} classes need "
                            f"{priors * p.num_classes} confidences per image, "
                            f"got {legacy(conf, 1)}")
    return LayerCost([(1, 1, 1, 7)])


def _detection_evaluate(layer: LayerLike, bottoms: list[Shape],
                        declared: Sequence[Shape] | None) -> LayerCost:
    """``1 x 1 x (positive classes + detections) x 5``."""
    p = layer.detection_evaluate_param
    positive = p.num_classes if p.background_label_id == -1 else p.num_classes - 1
    return LayerCost([(1, 1, positive + legacy(bottoms[0], 2), 5)])


KINDS = (
    kind("PriorBox", _prior_box, origin="ssd", torch="emit_shape:prior_box"),
    kind("DetectionOutput", _detection_output, category=Category.NO_BACKWARD, origin="ssd",
         torch="emit_detection:detection_output"),
    kind("DetectionEvaluate", _detection_evaluate,
         category=Category.ACCURACY | Category.NO_BACKWARD, origin="ssd"),
)
