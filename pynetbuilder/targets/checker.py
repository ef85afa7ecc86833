"""Check an analysed net against a deploy-target profile.

:func:`check` walks the layers of one phase of a net (a ``NetParameter`` with the
:class:`~pynetbuilder.report.Report` the inference engine made of it) and returns
one :class:`Violation` per broken rule: the layer, the value found, the limit, the
vendor document the rule comes from and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from pynetbuilder.kinds import Category, kind_of
from pynetbuilder.kinds.base import spatial
from pynetbuilder.targets.profile import QUANTITIES, Limit, Profile, Source

CONV_PARAM = {"Convolution": "convolution_param", "Deconvolution": "convolution_param",
              "ConvolutionDepthwise": "convolution_param",
              "DepthwiseConvolution": "convolution_param", "Pooling": "pooling_param"}
_AXIS_PARAM = {"Softmax": "softmax_param", "Concat": "concat_param", "Slice": "slice_param",
               "Flatten": "flatten_param", "InnerProduct": "inner_product_param"}
_STYLE_NAMES = {"layer": "an Input layer", "shape": "input: + input_shape",
                "dim": "input: + input_dim"}


class ReadFacts(NamedTuple):
    """What the prototxt looked like before reading normalised it: the old ``layers {}``
    format, and per layer the dialect fields it set (``pooling_param.round_mode``)."""

    v1: bool = False
    fields: Mapping[str, frozenset[str]] = {}


class Violation(NamedTuple):
    layer: str  # "" for the net as a whole
    type: str
    rule: str
    value: str
    limit: str
    source: Source
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"layer": self.layer, "type": self.type, "rule": self.rule, "value": self.value,
                "limit": self.limit, "source": self.source.cite(), "fix": self.fix}

    def line(self) -> str:
        where = f"{self.layer} ({self.type})" if self.layer else "net"
        return (f"{where}: {self.rule}: {self.value}; allowed: {self.limit}\n"
                f"    source: {self.source.cite()}\n    fix: {self.fix}")


def check(net: Any, shapes: Mapping[str, tuple[int, ...]], profile: Profile,
          facts: ReadFacts | None = None) -> list[Violation]:
    """Every violation of ``profile`` in ``net`` (one phase; ``shapes``: every blob's
    inferred shape, blobs of unknown shape absent)."""
    facts = facts or ReadFacts()
    found: list[Violation] = []
    found += _net_rules(net, shapes, profile, facts)
    for layer in net.layer:
        found += _layer_rules(layer, shapes, profile, facts)
    return found


# ---------------------------------------------------------------- the net as a whole


def _net_rules(net: Any, shapes: Mapping[str, tuple[int, ...]], profile: Profile,
               facts: ReadFacts) -> Iterator[Violation]:
    name = profile.name
    rule = profile.rule("v1_layers")
    if rule is not None and not rule.value and facts.v1:
        yield Violation("", "", "old 'layers {}' (V1) format", "layers { type: ... }",
                        "the 'layer {}' format", rule.source,
                        "upgrade it: pynetbuilder build/convert --target " + name
                        + " writes the 'layer' format (Caffe's upgrade_net_proto_text too)")
    styles = []
    if net.input:
        styles.append("shape" if net.input_shape else "dim")
    if any(la.type == "Input" for la in net.layer):
        styles.append("layer")
    rule = profile.rule("inputs")
    if rule is not None:
        for style in styles:
            if style not in rule.value:
                allowed = " or ".join(_STYLE_NAMES[s] for s in rule.value)
                yield Violation("", "", "input declaration", _STYLE_NAMES[style], allowed,
                                rule.source, f"declare the inputs with {allowed} "
                                f"(--target {name} writes {_STYLE_NAMES[rule.value[0]]})")
    rule = profile.rule("input_channels")
    if rule is not None:
        inputs = list(net.input) + [t for la in net.layer if la.type == "Input" for t in la.top]
        for blob in inputs:
            shape = shapes.get(blob)
            if shape is not None and len(shape) >= 2 and shape[1] not in rule.value:
                yield Violation("", "", f"channels of input {blob!r}", str(shape[1]),
                                "one of " + ", ".join(map(str, rule.value)), rule.source,
                                rule.note or "feed the net 1- or 3-channel images")


# ---------------------------------------------------------------- per layer


def _layer_rules(layer: Any, shapes: Mapping[str, tuple[int, ...]], profile: Profile,
                 facts: ReadFacts) -> Iterator[Violation]:
    name = profile.name
    entry = kind_of(layer.type)
    where = (layer.name, layer.type)
    rule = profile.rule("deploy_only")
    training = entry.category & (Category.DATA | Category.LOSS | Category.ACCURACY)
    if rule is not None and rule.value and training:
        what = ("a data layer" if entry.is_a(Category.DATA)
                else "a loss layer" if entry.is_a(Category.LOSS) else "an accuracy layer")
        yield Violation(*where, "deploy net only", what, "Input layers and inference layers",
                        rule.source, f"write the deploy net (--target {name} replaces data "
                        "layers with an Input layer and drops loss and accuracy layers)")
    elif profile.layers_source is not None and not profile.supports(layer.type, entry.origin):
        fix = profile.fixes.get(layer.type) or (
            "replace it with layers the target supports, or cut the net there and run "
            "this part outside the target")
        yield Violation(*where, "layer type not supported", layer.type,
                        "the types the document lists", profile.layers_source, fix)
    rule = profile.rule("bn_global_stats")
    if rule is not None and rule.value and layer.type == "BatchNorm":
        p = layer.batch_norm_param
        if not (p.HasField("use_global_stats") and p.use_global_stats):
            value = "false" if p.HasField("use_global_stats") else "unset"
            yield Violation(*where, "BatchNorm use_global_stats", value, "true", rule.source,
                            "set batch_norm_param { use_global_stats: true } (--target "
                            f"{name} writes it)")
    rule = profile.rule("unknown_fields")
    if rule is not None:
        read = facts.fields.get(layer.name, frozenset())
        used = _fields_set(layer)
        if "pooling_param.round_mode" in read:  # ceil_mode was set from it when reading
            used -= {"pooling_param.ceil_mode"}
        used |= read
        for field in rule.value:
            if field in used:
                yield Violation(*where, "field the target's parser does not know", field,
                                "fields of the target's caffe.proto", rule.source,
                                _field_fix(field, name))
    rule = profile.rule("broken_types")
    if rule is not None and layer.type in rule.value:
        yield Violation(*where, "layer type the target computes differently", layer.type,
                        "another type", rule.source,
                        rule.note or f"rewrite {layer.type} with layers the target runs")
    rule = profile.rule("broken_fields")
    if rule is not None:
        used = _fields_set(layer) | facts.fields.get(layer.name, frozenset())
        for field in rule.value:
            if field in used:
                yield Violation(*where, "field the target converts or runs wrongly", field,
                                "leave it unset", rule.source,
                                rule.note or f"rewrite the layer without {field}")
    rule = profile.rule("explicit_stride")
    if rule is not None and layer.type in rule.value and not stride_written(layer):
        yield Violation(*where, "stride not written", "unset (Caffe's default: 1)",
                        "an explicit stride" + (f" ({rule.note})" if rule.note else ""),
                        rule.source, f"write stride: 1, what Caffe assumes (--target {name} "
                        "writes it)")
    rule = profile.rule("pooling_rounding")
    if rule is not None and layer.type == "Pooling" and layer.bottom:
        yield from _rounding(layer, shapes.get(layer.bottom[0]), rule.value, rule.source, name)
    for limit in profile.limits:
        if layer.type in limit.types:
            yield from _limit(layer, shapes, limit)


def stride_written(layer: Any) -> bool:
    """Whether ``layer`` (a convolution or pooling type) sets its stride: ``stride``, or
    ``stride_h`` / ``stride_w`` (unset, Caffe uses 1: base_conv_layer.cpp's
    kDefaultStride, PoolingParameter's default)."""
    param = CONV_PARAM.get(layer.type)
    if param is None:
        return True
    written = {field.name for field, _ in getattr(layer, param).ListFields()}
    return bool(written & {"stride", "stride_h", "stride_w"})


def _fields_set(layer: Any) -> frozenset[str]:
    found = set()
    for field, value in layer.ListFields():
        if field.name.endswith("_param"):
            found.update(f"{field.name}.{sub.name}" for sub, _ in value.ListFields())
    return frozenset(found)


def _field_fix(field: str, target: str) -> str:
    if field == "pooling_param.ceil_mode":
        return ("remove ceil_mode (this build's field 13; BVLC master spells it round_mode: "
                f"FLOOR): --target {target} writes the target's spelling")
    if field == "pooling_param.round_mode":
        return ("remove round_mode (BVLC master's field; the forks spell it ceil_mode): "
                f"--target {target} writes the target's spelling")
    return f"remove {field}; --target {target} writes only fields the target knows"


def pooled_sizes(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
    """(Caffe's ceil-rounded size, the floor-rounded size) of one pooled axis."""
    ceil = unclipped_ceil(size, kernel, stride, pad)
    if pad and (ceil - 1) * stride >= size + pad:
        ceil -= 1
    return ceil, (size + 2 * pad - kernel) // stride + 1


def unclipped_ceil(size: int, kernel: int, stride: int, pad: int) -> int:
    """The ceil-rounded size of one pooled axis without Caffe's rule that drops a last
    window starting in the padding (what a ``ceil`` target computes)."""
    return -(-(size + 2 * pad - kernel) // stride) + 1


def _rounding(layer: Any, bottom: tuple[int, ...] | None, rounding: str, source: Source,
              target: str) -> Iterator[Violation]:
    p = layer.pooling_param
    if rounding == "caffe" or p.global_pooling or bottom is None or len(bottom) != 4:
        return
    kernel, stride, pad = (spatial(p, "kernel", 0), spatial(p, "stride", 1),
                           spatial(p, "pad", 0))
    if 0 in kernel or 0 in stride:
        return
    axes = list(zip(bottom[2:], kernel, stride, pad))
    sizes = [pooled_sizes(*axis) for axis in axes]
    ceil = "x".join(str(c) for c, _ in sizes)
    floor = "x".join(str(f) for _, f in sizes)
    wants_ceil = not (p.HasField("ceil_mode") and not p.ceil_mode)
    unclipped = "x".join(str(unclipped_ceil(*axis)) for axis in axes)
    if rounding == "floor" and wants_ceil and ceil != floor:
        yield Violation(layer.name, layer.type, "pooling rounding",
                        f"Caffe rounds up to {ceil}; the target floors to {floor}",
                        "a size where ceil and floor agree", source,
                        f"write it with --target {target}: the input is padded explicitly at "
                        "the bottom and right so that flooring gives Caffe's shape (exact for "
                        "MAX pooling of non-negative inputs)")
    elif rounding == "ceil" and not wants_ceil and unclipped != floor:
        yield Violation(layer.name, layer.type, "pooling rounding",
                        f"ceil_mode: false floors to {floor}; the target rounds up to "
                        f"{unclipped}", "ceil rounding", source,
                        "crop the input so that ceil and floor agree, or use the target's "
                        "rounding")
    elif rounding == "ceil" and wants_ceil and unclipped != ceil:
        yield Violation(layer.name, layer.type, "pooling rounding",
                        f"Caffe drops the last window, which would start in the padding, "
                        f"giving {ceil}; the target keeps it: {unclipped}",
                        "a last window that starts inside the input", source,
                        "change pad, kernel or stride (or the input size) so that the last "
                        "window starts inside the input")


def _values(layer: Any, shapes: Mapping[str, tuple[int, ...]], quantity: str
            ) -> list[tuple[str, int]]:
    """(label, value) pairs of ``quantity`` for one layer ([] where it does not apply)."""
    bottom = shapes.get(layer.bottom[0]) if layer.bottom else None
    top = shapes.get(layer.top[0]) if layer.top else None
    param_name = CONV_PARAM.get(layer.type)
    if quantity in ("kernel", "stride", "pad", "dilation"):
        if param_name is None:
            return []
        p = getattr(layer, param_name)
        if layer.type == "Pooling":
            if quantity == "dilation":
                return []
            if p.global_pooling:
                if quantity != "kernel" or bottom is None or len(bottom) != 4:
                    return []
                return [("kernel_h (global)", bottom[2]), ("kernel_w (global)", bottom[3])]
        default = {"kernel": 0, "stride": 1, "pad": 0, "dilation": 1}[quantity]
        values = spatial(p, quantity, default)
        labels = ([f"{quantity}_h", f"{quantity}_w"] if len(values) == 2
                  else [quantity] * len(values))
        return list(zip(labels, values))
    if quantity == "group":
        return [("group", layer.convolution_param.group)] if param_name == "convolution_param" \
            else []
    if quantity == "output_channels" and param_name == "convolution_param":
        return [("num_output", layer.convolution_param.num_output)]
    if quantity == "axis":
        field = _AXIS_PARAM.get(layer.type)
        return [("axis", getattr(layer, field).axis)] if field else []
    if quantity == "bottoms":
        return [("bottoms", len(layer.bottom))]
    blob = {"input": bottom, "output": top}[quantity.split("_")[0]]
    if blob is None:
        return []
    index = {"channels": 1, "height": 2, "width": 3}[quantity.split("_")[1]]
    return [(quantity, blob[index])] if len(blob) > index else []


def _limit(layer: Any, shapes: Mapping[str, tuple[int, ...]], limit: Limit
           ) -> Iterator[Violation]:
    for label, value in _values(layer, shapes, limit.quantity):
        if not limit.admits(value):
            what = QUANTITIES[limit.quantity]
            yield Violation(layer.name, layer.type, f"{what} ({label})", str(value),
                            limit.text() + (f" ({limit.note})" if limit.note else ""),
                            limit.source, f"change the layer so its {what} is {limit.text()}")
            return
