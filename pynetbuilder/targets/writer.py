"""Write a deploy net in a target's dialect.

:func:`for_target` takes a ``NetParameter`` (a deploy net, or a train/test net whose
deploy form is wanted) and gives the net the target's front end reads:

- inputs declared in the target's first input style (an ``Input`` layer unless the
  profile says otherwise); data layers become ``Input`` layers of the shape the
  analysis gave their first top, their other tops (labels) are dropped;
- no loss or accuracy layers (nor layers reading what was dropped);
- ``use_global_stats: true`` on every BatchNorm;
- pooling that the target's own rounding sizes as Caffe does: for a target that
  floors, a MAX pooling whose size depends on Caffe's ceil rounding reads its input
  extended by one zero row and column at the bottom and right (a depthwise
  ``Deconvolution``, kernel 2, an explicit stride 1, bilinear filler = weights
  [[1, 0], [0, 0]]),
  so that ceil and floor agree.  That is exact when the input is non-negative (a
  ReLU wrote it): every window still holds a real value, and zeros never win.
  Anything else is refused (:class:`~pynetbuilder.errors.NetError`), never
  approximated;
- for a target that always rounds up and keeps a last window starting in the
  padding (``ceil``: MNN), a pooling whose Caffe size differs from that is refused;
- an ``Eltwise`` SUM with ``coeff`` for a target that cannot run it (``broken_fields``
  names ``eltwise_param.coeff``): each input whose coefficient is not 1 is scaled by
  a ``Power`` layer (``scale: coeff``, power 1) and the sum has no coefficients;
- an explicit ``stride: 1`` (what Caffe assumes when it is unset) on every layer of a
  type whose unset stride the target misreads (``explicit_stride``: RKNN-Toolkit2
  reads a Deconvolution's as 0);
- fields the target's parser does not know removed or respelt (``ceil_mode: false``
  is ``round_mode: FLOOR`` for BVLC master; see :func:`target_text`).

The shape rules check the result: every blob the original deploy net has keeps its
shape.  :func:`target_blobs` gives the rewritten net's weights from the original's:
the same blobs by layer name, the zero extensions' weights, and BatchNorm's
statistics with the moving-average factor folded in (factor 1: the values Caffe
computes from the three blobs, bit for bit, for a converter that reads only two).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pynetbuilder.errors import NetError
from pynetbuilder.kinds import Category, kind_of
from pynetbuilder.kinds.base import spatial
from pynetbuilder.schema import caffe_pb2, to_text
from pynetbuilder.targets.checker import (
    CONV_PARAM,
    Violation,
    pooled_sizes,
    stride_written,
    unclipped_ceil,
)
from pynetbuilder.targets.profile import Profile, load_profile

EXTEND_SUFFIX = "/extend"  # name of an inserted bottom/right zero-extension layer
COEFF_SUFFIX = "/coeff"  # name of an inserted Power layer scaling an Eltwise input (+ index)
_NON_NEGATIVE = {"ReLU6", "Sigmoid", "AbsVal"}  # (ReLU when its negative_slope is 0)
# layers that keep values non-negative when all their inputs are
_KEEPS_SIGN = {"Concat", "Split", "Slice", "Dropout", "Flatten", "Reshape", "Crop", "Pooling"}


def for_target(net: Any, target: str | Profile,
               shapes: Mapping[str, tuple[int, ...]] | None = None) -> Any:
    """``net`` rewritten for ``target`` (see the module's docstring).  ``shapes``: every
    blob's shape (the analysis of ``net``); computed when not given."""
    profile = load_profile(target) if isinstance(target, str) else target
    if shapes is None:
        shapes = _shapes(net)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    out.ClearField("state")
    styles = profile.rule("inputs")
    style = styles.value[0] if styles is not None else "layer"
    inputs = list(net.input)
    input_shapes = [shapes[name] for name in inputs]
    out.ClearField("input")
    out.ClearField("input_dim")
    out.ClearField("input_shape")
    dropped: set[str] = set()
    non_negative: set[str] = set()  # blobs known to hold no negative value
    for layer in net.layer:
        entry = kind_of(layer.type)
        if entry.is_a(Category.INPUT) or entry.is_a(Category.DATA):
            tops = list(layer.top)
            inputs.append(tops[0])
            input_shapes.append(shapes[tops[0]])
            dropped.update(tops[1:])
            continue
        if entry.is_a(Category.LOSS) or entry.is_a(Category.ACCURACY) or (
                dropped & set(layer.bottom)):
            dropped.update(t for t in layer.top if t not in layer.bottom)
            continue
        new = caffe_pb2.LayerParameter()
        new.CopyFrom(layer)
        new.ClearField("include")
        new.ClearField("exclude")
        new.ClearField("loss_weight")
        if new.type == "BatchNorm":
            new.batch_norm_param.use_global_stats = True
        if new.type == "Pooling":
            for extra in _pooling_for(new, shapes, profile, non_negative):
                out.layer.append(extra)
        if new.type == "Eltwise":
            out.layer.extend(_eltwise_for(new, profile))
        _write_stride(new, profile)
        out.layer.append(new)
        positive = (new.type in _NON_NEGATIVE
                    or (new.type == "ReLU" and not new.relu_param.negative_slope)
                    or (new.type in _KEEPS_SIGN and all(b in non_negative for b in new.bottom)))
        for top in new.top:
            (non_negative.add if positive else non_negative.discard)(top)
    _declare_inputs(out, inputs, input_shapes, style)
    _check_shapes(net, out, shapes)
    return out


def _shapes(net: Any) -> dict[str, tuple[int, ...]]:
    from pynetbuilder.inspect import input_shapes
    from pynetbuilder.report import analyze

    inputs, declared, _ = input_shapes(net, None)
    return analyze(net, inputs=inputs, declared=declared).blob_shapes


def _declare_inputs(out: Any, names: list[str], shapes: list[tuple[int, ...]],
                    style: str) -> None:
    if style == "layer":
        layers = []
        for name, shape in zip(names, shapes):
            layer = caffe_pb2.LayerParameter(name=name, type="Input", top=[name])
            layer.input_param.shape.add().dim.extend(shape)
            layers.append(layer)
        rest = list(out.layer)
        del out.layer[:]
        out.layer.extend(layers + rest)
        return
    out.input.extend(names)
    for shape in shapes:
        if style == "shape":
            out.input_shape.add().dim.extend(shape)
        else:
            if len(shape) != 4:
                raise NetError(f"input_dim declares 4-axis inputs only, got {shape}")
            out.input_dim.extend(shape)


def _pooling_for(layer: Any, shapes: Mapping[str, tuple[int, ...]], profile: Profile,
                 non_negative: set[str]) -> list[Any]:
    """Layers to insert before ``layer`` (and ``layer`` adjusted in place)."""
    p = layer.pooling_param
    rounding = profile.rule("pooling_rounding")
    unknown = profile.rule("unknown_fields")
    wants_ceil = not (p.HasField("ceil_mode") and not p.ceil_mode)
    if (unknown is not None and "pooling_param.ceil_mode" in unknown.value
            and (rounding is None or rounding.value != "caffe" or p.ceil_mode)):
        # BVLC master keeps ceil_mode: false as round_mode: FLOOR (target_text)
        p.ClearField("ceil_mode")
    if rounding is None or rounding.value == "caffe" or p.global_pooling:
        return []
    bottom = shapes[layer.bottom[0]]
    kernel, stride, pad = spatial(p, "kernel", 0), spatial(p, "stride", 1), spatial(p, "pad", 0)
    axes = list(zip(bottom[2:], kernel, stride, pad))
    sizes = [pooled_sizes(*axis) for axis in axes]
    if rounding.value == "ceil":
        caffe = [c if wants_ceil else f for c, f in sizes]
        target = [unclipped_ceil(*axis) for axis in axes]
        if caffe != target:
            raise NetError(
                f"Pooling layer {layer.name!r}: Caffe sizes it "
                f"{'x'.join(map(str, caffe))} and {profile.name} (which always rounds up and "
                f"keeps a last window starting in the padding) "
                f"{'x'.join(map(str, target))}; it cannot be written exactly for "
                f"{profile.name}: change its padding, kernel or stride")
        return []
    if all(c == f for c, f in sizes):
        return []
    why = None
    if p.pool != caffe_pb2.PoolingParameter.MAX:
        why = "only MAX pooling can be extended exactly"
    elif layer.bottom[0] not in non_negative:
        why = "its input is not known to be non-negative (written by a ReLU)"
    elif any(c == f for c, f in sizes) or any(
            (s + 1 + 2 * pd - k) % st for s, k, st, pd in zip(bottom[2:], kernel, stride, pad)):
        why = "one extra row and column do not make ceil and floor agree"
    if why:
        raise NetError(
            f"Pooling layer {layer.name!r}: Caffe's ceil rounding gives "
            f"{'x'.join(str(c) for c, _ in sizes)} and {profile.name} floors to "
            f"{'x'.join(str(f) for _, f in sizes)}; it cannot be written exactly for "
            f"{profile.name}: {why}")
    channels = bottom[1]
    extend = caffe_pb2.LayerParameter(name=layer.name + EXTEND_SUFFIX, type="Deconvolution",
                                      bottom=[layer.bottom[0]], top=[layer.name + EXTEND_SUFFIX])
    extend.param.add(lr_mult=0, decay_mult=0)
    c = extend.convolution_param
    c.num_output = channels
    c.group = channels
    c.bias_term = False
    c.kernel_size.append(2)
    c.stride.append(1)  # explicit: RKNN-Toolkit2 2.5.0 reads a missing one as 0 (and fails)
    c.weight_filler.type = "bilinear"
    layer.bottom[0] = extend.top[0]
    return [extend]


def _write_stride(layer: Any, profile: Profile) -> None:
    """``stride: 1`` on ``layer`` when the target reads its unset stride otherwise than
    Caffe, which takes 1 (base_conv_layer.cpp's kDefaultStride, PoolingParameter's
    default): the same net, in the target's reading too."""
    rule = profile.rule("explicit_stride")
    if rule is None or layer.type not in rule.value or stride_written(layer):
        return
    param = getattr(layer, CONV_PARAM[layer.type])
    if hasattr(param.stride, "append"):  # ConvolutionParameter's is repeated
        param.stride.append(1)
    else:
        param.stride = 1


def _eltwise_for(layer: Any, profile: Profile) -> list[Any]:
    """Power layers to insert before an Eltwise SUM with coefficients (``layer``'s
    bottoms redirected to them and its ``coeff`` cleared) when the target mishandles
    ``eltwise_param.coeff``."""
    broken = profile.rule("broken_fields")
    p = layer.eltwise_param
    if (broken is None or "eltwise_param.coeff" not in broken.value or not p.coeff
            or p.operation != caffe_pb2.EltwiseParameter.SUM):
        return []
    if len(p.coeff) != len(layer.bottom):
        raise NetError(f"Eltwise layer {layer.name!r}: {len(p.coeff)} coefficients for "
                       f"{len(layer.bottom)} inputs")
    scales = []
    for i, (bottom, coeff) in enumerate(zip(list(layer.bottom), p.coeff)):
        if coeff == 1:
            continue
        name = f"{layer.name}{COEFF_SUFFIX}{i}"
        scale = caffe_pb2.LayerParameter(name=name, type="Power", bottom=[bottom], top=[name])
        scale.power_param.scale = coeff
        layer.bottom[i] = name
        scales.append(scale)
    p.ClearField("coeff")
    return scales


def extension_weights(layer: Any) -> Any:
    """The weights of an inserted extension layer (``channels x 1 x 2 x 2``, one at
    [.., 0, 0]): what Caffe's bilinear filler makes, for a caffemodel."""
    import numpy as np

    channels = layer.convolution_param.num_output
    weights = np.zeros((channels, 1, 2, 2), np.float32)
    weights[:, 0, 0, 0] = 1.0
    return weights


def _check_shapes(original: Any, written: Any, shapes: Mapping[str, tuple[int, ...]]) -> None:
    after = _shapes(written)
    for blob, shape in after.items():
        if blob in shapes and shapes[blob] != shape:
            raise NetError(f"writing for the target changed the shape of blob {blob!r} from "
                           f"{shapes[blob]} to {shape}")  # pragma: no cover - a writer bug


def target_text(net: Any, target: str | Profile) -> str:
    """``net`` as prototxt text in the target's spelling (BVLC master: ``round_mode``)."""
    profile = load_profile(target) if isinstance(target, str) else target
    text = to_text(net)
    unknown = profile.rule("unknown_fields")
    rounding = profile.rule("pooling_rounding")
    if (unknown is not None and "pooling_param.ceil_mode" in unknown.value
            and rounding is not None and rounding.value == "caffe"):
        text = re.sub(r"\bceil_mode: false\b", "round_mode: FLOOR", text)
    return text


class TargetNet(NamedTuple):
    """A deploy net written for a target (:func:`deploy_for_target`)."""

    net: Any  # the rewritten NetParameter (for_target)
    text: str  # its prototxt in the target's spelling (target_text)
    remaining: list[Violation]  # what the target still rejects (no rewrite can fix it)


def deploy_for_target(net: Any, target: str | Profile,
                      shapes: Mapping[str, tuple[int, ...]] | None = None) -> TargetNet:
    """``net``'s deploy net for ``target``, its text and the violations the written net
    still has (types the target lacks, limits it exceeds)."""
    from pynetbuilder.targets.checker import check

    profile = load_profile(target) if isinstance(target, str) else target
    written = for_target(net, profile, shapes)
    return TargetNet(written, target_text(written, profile),
                     check(written, _shapes(written), profile))


def target_blobs(written: Any, blobs: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """The parameter blobs of ``written`` (:func:`for_target`'s net) from ``blobs``, the
    original net's (layer name -> its blobs as float32 arrays): every layer's own, the
    inserted zero extensions' (:func:`extension_weights`), BatchNorm's statistics
    divided by their moving-average factor and the factor 1 (see the module's doc)."""
    import numpy as np

    out: dict[str, list[Any]] = {}
    for layer in written.layer:
        if layer.name in blobs:
            arrays = [np.asarray(b, dtype=np.float32) for b in blobs[layer.name]]
            if layer.type == "BatchNorm" and len(arrays) == 3:
                arrays = _unit_factor(*arrays)
            out[layer.name] = arrays
        elif layer.type == "Deconvolution" and layer.name.endswith(EXTEND_SUFFIX):
            out[layer.name] = [extension_weights(layer)]
    return out


def _unit_factor(mean: Any, variance: Any, factor: Any) -> list[Any]:
    """BatchNorm's blobs with factor 1, as Caffe computes them: scale = 1 / factor in
    float32 (0 for a factor of 0), times each statistic in float32."""
    import numpy as np

    f = np.float32(factor.reshape(-1)[0])
    scale = np.float32(0) if f == 0 else np.float32(1) / f
    return [mean * scale, variance * scale, np.ones_like(factor)]
