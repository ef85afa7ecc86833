"""Layer kinds that combine, split or rearrange blobs."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    ParamBlob,
    Shape,
    axis_index,
    count,
    kind,
    refuse,
)

YELLOW = "#fff2cc"
_PROD = 0  # EltwiseParameter.EltwiseOp


def _eltwise(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    p = layer.eltwise_param
    if len(bottoms) < 2:
        raise refuse(layer, f"needs at least 2 inputs, got {len(bottoms)}")
    for other in bottoms[1:]:
        if other != bottoms[0]:
            raise refuse(layer, "needs inputs of one shape, got "
                                + ", ".join(str(b) for b in bottoms))
    if p.coeff and len(p.coeff) != len(bottoms):
        raise refuse(layer, f"has {len(p.coeff)} coefficients for {len(bottoms)} inputs")
    if p.coeff and p.operation == _PROD:
        raise refuse(layer, "coefficients apply to SUM only, not PROD")
    return LayerCost([bottoms[0]])


def _concat(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
            ) -> LayerCost:
    p = layer.concat_param
    if p.HasField("concat_dim") and p.HasField("axis"):
        raise refuse(layer, "give either axis or concat_dim, not both")
    first = bottoms[0]
    axis = axis_index(p.concat_dim if p.HasField("concat_dim") else p.axis, len(first))
    total = 0
    for b in bottoms:
        if len(b) != len(first) or any(b[i] != first[i] for i in range(len(first)) if i != axis):
            raise refuse(layer, f"inputs must agree except on axis {axis}, got "
                                + ", ".join(str(x) for x in bottoms))
        total += b[axis]
    return LayerCost([(*first[:axis], total, *first[axis + 1 :])])


def _slice(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    p = layer.slice_param
    bottom = bottoms[0]
    axis = axis_index(p.slice_dim if p.HasField("slice_dim") else p.axis, len(bottom))
    size, n = bottom[axis], len(layer.top)
    if p.slice_point:
        points = [0, *p.slice_point, size]
        if len(points) != n + 1 or points != sorted(points):
            raise refuse(layer, f"slice_point does not fit {n} tops")
        sizes = [b - a for a, b in zip(points, points[1:])]
    else:
        if not n or size % n:
            raise refuse(layer, f"axis size {size} not divisible by {n} tops")
        sizes = [size // n] * n
    return LayerCost([(*bottom[:axis], s, *bottom[axis + 1 :]) for s in sizes])


def _split(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    return LayerCost([bottoms[0]] * len(layer.top))


def _flatten(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    p = layer.flatten_param
    b = bottoms[0]
    start, end = axis_index(p.axis, len(b)), axis_index(p.end_axis, len(b))
    return LayerCost([(*b[:start], count(b[start : end + 1]), *b[end + 1 :])])


def _reshape(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    p = layer.reshape_param
    b = bottoms[0]
    start = axis_index(p.axis, len(b) + 1) if p.axis < 0 else p.axis
    if start > len(b):
        raise refuse(layer, f"axis {p.axis} is out of range for {b}")
    end = len(b) if p.num_axes == -1 else start + p.num_axes
    if p.num_axes < -1 or end > len(b):
        raise refuse(layer, f"num_axes {p.num_axes} does not fit {b} from axis {start}")
    dims = list(p.shape.dim)
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(b):
                raise refuse(layer, f"dimension {i} copies axis {start + i}, which {b} lacks")
            dims[i] = b[start + i]
        elif d < -1:
            raise refuse(layer, f"dimension {i} is {d}; only -1 (inferred) may be negative")
    new = [*b[:start], *dims, *b[end:]]
    if new.count(-1) > 1:
        raise refuse(layer, "at most one -1 dimension")
    if -1 in new:
        known = count(tuple(d for d in new if d != -1))
        if not known or count(b) % known:
            raise refuse(layer, f"{b} cannot become {tuple(new)}")
        new[new.index(-1)] = count(b) // known
    if count(tuple(new)) != count(b):
        raise refuse(layer, f"{b} cannot become {tuple(new)}")
    return LayerCost([tuple(new)])


def _crop(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
          ) -> LayerCost:
    if len(bottoms) != 2:
        raise refuse(layer, f"needs 2 inputs (the blob and the reference), got {len(bottoms)}")
    a, ref = bottoms
    axis = axis_index(layer.crop_param.axis, len(a))
    offsets = list(layer.crop_param.offset)
    if len(ref) != len(a):
        raise refuse(layer, f"inputs must have the same number of axes, got {a} and {ref}")
    if len(offsets) not in (0, 1, len(a) - axis):
        raise refuse(layer, f"{len(offsets)} offsets for {len(a) - axis} cropped axes")
    for i in range(axis, len(a)):
        offset = offsets[0] if len(offsets) == 1 else offsets[i - axis] if offsets else 0
        if ref[i] + offset > a[i]:
            raise refuse(layer, f"crop of axis {i} ({ref[i]} from offset {offset}) exceeds "
                                f"the input's {a[i]}")
    return LayerCost([(*a[:axis], *ref[axis:])])


def _permute(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    """Axes in ``order``, then the axes it does not name in their order."""
    bottom = bottoms[0]
    order = list(layer.permute_param.order)
    if any(o >= len(bottom) for o in order) or len(set(order)) != len(order):
        raise refuse(layer, f"order {order} must name distinct axes of {bottom}")
    order += [i for i in range(len(bottom)) if i not in order]
    return LayerCost([tuple(bottom[o] for o in order)])


def _tile(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
          ) -> LayerCost:
    p = layer.tile_param
    if p.tiles < 1:
        raise refuse(layer, "needs a positive number of tiles")
    shape = list(bottoms[0])
    axis = axis_index(p.axis, len(shape))
    shape[axis] *= p.tiles
    return LayerCost([tuple(shape)])


def _reduction(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """Keeps the axes before ``axis`` (a scalar for axis 0)."""
    bottom = bottoms[0]
    return LayerCost([bottom[: axis_index(layer.reduction_param.axis, len(bottom))]])


def _argmax(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
            ) -> LayerCost:
    p = layer.argmax_param
    bottom = bottoms[0]
    if p.top_k < 1:
        raise refuse(layer, "top_k must be at least 1")
    if p.HasField("axis"):
        axis = axis_index(p.axis, len(bottom))
        if p.top_k > bottom[axis]:
            raise refuse(layer, f"top_k {p.top_k} exceeds axis {axis}'s {bottom[axis]}")
        shape = list(bottom)
        shape[axis] = p.top_k
    else:
        if p.top_k > count(bottom[1:]):
            raise refuse(layer, f"top_k {p.top_k} exceeds the {count(bottom[1:])} values "
                                "per item")
        shape = [1] * max(len(bottom), 3)
        shape[0], shape[2] = bottom[0], p.top_k
        if p.out_max_val:
            shape[1] = 2
    return LayerCost([tuple(shape)])


def _silence(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    return LayerCost([])


def _unsqueeze(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """A 1 inserted before axis ``dim`` (negative: ``dim + axes + 1``, so -1 appends it
    after the last axis), as ``UnsqueezeLayer::LayerSetUp`` (unsqueeze.cpp) builds it."""
    bottom = bottoms[0]
    index = layer.unsqueeze_param.dim
    if index < 0:
        index += len(bottom) + 1
    if not 0 <= index <= len(bottom):
        raise refuse(layer, f"dim out of range for {bottom}")
    return LayerCost([(*bottom[:index], 1, *bottom[index:])])


def _parameter(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """A learnt blob as a top."""
    shape = tuple(int(d) for d in layer.parameter_param.shape.dim)
    return LayerCost([shape], [ParamBlob(shape)])


def _batch_reindex(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                   ) -> LayerCost:
    if len(bottoms[1]) != 1:
        raise refuse(layer, "the index input must be 1-D")
    return LayerCost([(bottoms[1][0], *bottoms[0][1:])])


# ---------------------------------------------------------------- drawing summaries


def _eltwise_summary(layer: LayerLike) -> str:
    p = layer.eltwise_param
    text = p.EltwiseOp.Name(p.operation)
    if len(p.coeff):
        text += " " + ",".join(f"{c:g}" for c in p.coeff)
    return text


def _concat_summary(layer: LayerLike) -> str:
    axis = layer.concat_param.axis
    return "" if axis == 1 else f"axis {axis}"


def _slice_summary(layer: LayerLike) -> str:
    p = layer.slice_param
    text = "" if p.axis == 1 else f"axis {p.axis} "
    return (text + "at " + ",".join(map(str, p.slice_point))) if len(p.slice_point) else text


def _crop_summary(layer: LayerLike) -> str:
    p = layer.crop_param
    return f"axis {p.axis} offset " + ",".join(map(str, p.offset))


KINDS = (
    kind("Eltwise", _eltwise, v1="ELTWISE", summary=_eltwise_summary, fill=YELLOW,
         torch="emit_shape:eltwise"),
    kind("Concat", _concat, v1="CONCAT", summary=_concat_summary, fill=YELLOW,
         torch="emit_shape:concat"),
    kind("Slice", _slice, v1="SLICE", summary=_slice_summary, fill=YELLOW,
         torch="emit_shape:slice_"),
    kind("Split", _split, v1="SPLIT", torch="emit_shape:split"),
    # flatten_layer.cpp, reshape_layer.cpp: CHECK_NE(top[0], bottom[0]) (no in-place)
    kind("Flatten", _flatten, category=Category.NOT_INPLACE, v1="FLATTEN",
         torch="emit_shape:reshape"),
    kind("Reshape", _reshape, category=Category.NOT_INPLACE,
         summary=lambda layer: "shape " + ",".join(map(str, layer.reshape_param.shape.dim)),
              torch="emit_shape:reshape"),
    kind("Crop", _crop, summary=_crop_summary, torch="emit_shape:crop"),
    kind("Permute", _permute, origin="ssd", torch="emit_shape:permute"),
    kind("Tile", _tile, torch="emit_shape:tile"),
    kind("Reduction", _reduction, torch="emit_shape:reduction"),
    kind("ArgMax", _argmax, category=Category.NO_BACKWARD, v1="ARGMAX",
         torch="emit_shape:argmax"),
    kind("Silence", _silence, v1="SILENCE", torch="emit_shape:silence"),
    kind("Unsqueeze", _unsqueeze, category=Category.NO_BACKWARD, origin="brocolli",
         torch="emit_shape:reshape"),
    kind("Parameter", _parameter, torch="emit_shape:parameter"),
    # batch_reindex_layer.cpp: CHECK(!propagate_down[1]) "Cannot backprop to index."
    kind("BatchReindex", _batch_reindex, category=Category.NO_FORCED_BACKWARD,
         torch="emit_shape:batch_reindex", constant_bottoms=(1,)),
)
