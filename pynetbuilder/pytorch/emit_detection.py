"""SSD's DetectionOutput as this Caffe computes it (util/bbox_util.cpp): decode the
boxes from the priors, per class keep scores above the confidence threshold, sort
them (stable, descending), non-maximum suppression with an adaptive threshold,
then the ``keep_top_k`` best over all classes; rows ``[image, label, score, xmin,
ymin, xmax, ymax]`` ordered by image, label, then score.

Its output has as many rows as boxes kept, so it runs eagerly (NumPy, float32 as
Caffe's) and is neither differentiable (nor is Caffe's) nor traceable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape
from pynetbuilder.schema import caffe_pb2

FLT_MAX = np.float32(3.4028234663852886e38)
f32 = np.float32


def decode(loc: np.ndarray, prior: np.ndarray, var: np.ndarray, code: str,
           in_target: bool) -> np.ndarray:
    """Caffe's DecodeBBox for every prior (float32): loc, prior, var are P x 4."""
    if not in_target:
        scaled = loc * var
    else:
        scaled = loc
    if code == "CORNER":
        return (prior + scaled).astype(f32)
    pw = prior[:, 2] - prior[:, 0]
    ph = prior[:, 3] - prior[:, 1]
    if code == "CORNER_SIZE":
        size = np.stack([pw, ph, pw, ph], 1)
        return (prior + scaled * size).astype(f32)
    pcx = ((prior[:, 0] + prior[:, 2]) / f32(2)).astype(f32)
    pcy = ((prior[:, 1] + prior[:, 3]) / f32(2)).astype(f32)
    cx = (scaled[:, 0] * pw + pcx).astype(f32)
    cy = (scaled[:, 1] * ph + pcy).astype(f32)
    w = (np.exp(scaled[:, 2].astype(np.float64)) * pw).astype(f32)
    h = (np.exp(scaled[:, 3].astype(np.float64)) * ph).astype(f32)
    return np.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], 1).astype(f32)


def _size(b: np.ndarray) -> np.ndarray:
    valid = (b[..., 2] >= b[..., 0]) & (b[..., 3] >= b[..., 1])
    return np.where(valid, (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), f32(0)).astype(f32)


def jaccard(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Caffe's JaccardOverlap (normalized) of one box with each of ``others``."""
    disjoint = ((others[:, 0] > box[2]) | (others[:, 2] < box[0])
                | (others[:, 1] > box[3]) | (others[:, 3] < box[1]))
    iw = (np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])).astype(f32)
    ih = (np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])).astype(f32)
    inter = (iw * ih).astype(f32)
    union = (_size(box) + _size(others) - inter).astype(f32)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = (inter / union).astype(f32)
    return np.where(disjoint | (iw <= 0) | (ih <= 0), f32(0), overlap)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, nms_threshold: float,
        eta: float, top_k: int) -> list[int]:
    """Caffe's ApplyNMSFast."""
    candidates = np.nonzero(scores > threshold)[0]
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if top_k > -1:
        order = order[:top_k]
    kept: list[int] = []
    adaptive = f32(nms_threshold)
    for idx in order:
        keep = not kept or bool(np.all(jaccard(boxes[idx], boxes[kept]) <= adaptive))
        if keep:
            kept.append(int(idx))
            if eta < 1 and adaptive > 0.5:
                adaptive = f32(adaptive * f32(eta))
    return kept


class DetectionOutput(CaffeLayer):
    traceable = False  # NMS over the values, in NumPy: as many rows as boxes kept

    def __init__(self, classes: int, share: bool, background: int, code: str,
                 in_target: bool, keep_top_k: int, threshold: float,
                 nms: tuple[float, float, int] | None) -> None:
        super().__init__()
        self.classes, self.share, self.background = classes, share, background
        self.code, self.in_target, self.keep_top_k = code, in_target, keep_top_k
        self.threshold, self.nms = threshold, nms

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor,
                *rest: torch.Tensor) -> torch.Tensor:
        num = loc.shape[0]
        loc_classes = 1 if self.share else self.classes
        locs = loc.detach().cpu().numpy().astype(f32).reshape(num, -1, loc_classes, 4)
        confs = conf.detach().cpu().numpy().astype(f32).reshape(num, -1, self.classes)
        priors = prior.detach().cpu().numpy().astype(f32).reshape(-1, 2, locs.shape[1] * 4)[0]
        boxes_p, var = priors[0].reshape(-1, 4), priors[1].reshape(-1, 4)
        rows: list[list[float]] = []
        for i in range(num):
            decoded = [decode(locs[i, :, c], boxes_p, var, self.code, self.in_target)
                       for c in range(loc_classes)]
            picked: dict[int, list[int]] = {}
            for c in range(self.classes):
                if c == self.background:
                    continue
                boxes = decoded[0 if self.share else c]
                scores = confs[i, :, c]
                if self.nms is None:
                    picked[c] = list(range(len(scores)))
                else:
                    picked[c] = nms(boxes, scores, self.threshold, *self.nms)
            total = sum(len(v) for v in picked.values())
            if -1 < self.keep_top_k < total:
                pairs = [(confs[i, j, c], c, j) for c, js in picked.items() for j in js]
                pairs.sort(key=lambda t: -t[0])
                picked = {}
                for _, c, j in pairs[: self.keep_top_k]:
                    picked.setdefault(c, []).append(j)
            for c in sorted(picked):
                boxes = decoded[0 if self.share else c]
                for j in picked[c]:
                    rows.append([i, c, float(confs[i, j, c]), *map(float, boxes[j])])
        if not rows:
            rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(num)]
        return torch.tensor(rows, dtype=torch.float32).reshape(1, 1, len(rows), 7)


def detection_output(layer: Any, bottoms: list[Shape], tops: list[Shape],
                     phase: str) -> CaffeLayer:
    p = layer.detection_output_param
    if not p.HasField("num_classes"):
        raise EmitError(f"DetectionOutput layer {layer.name!r} has no num_classes")
    threshold = p.confidence_threshold if p.HasField("confidence_threshold") else -FLT_MAX
    nms_setting = None
    if p.HasField("nms_param"):
        n = p.nms_param
        nms_setting = (n.nms_threshold, n.eta, n.top_k if n.HasField("top_k") else -1)
    code = caffe_pb2.PriorBoxParameter.CodeType.Name(p.code_type)
    return DetectionOutput(p.num_classes, p.share_location, p.background_label_id, code,
                           p.variance_encoded_in_target, p.keep_top_k, float(threshold),
                           nms_setting)
