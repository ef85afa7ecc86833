"""Per-layer and total figures of a network, computed without Caffe.

Conventions (also in README.md):

``params``
    learnable parameters: every parameter blob Caffe allocates except BatchNorm's
    statistics (mean, variance, moving-average factor) and blobs fixed with
    ``lr_mult: 0``.  Convolution and InnerProduct weights and biases, Scale's
    scale and shift (the BN affine part), PReLU slopes ...
``macs``
    multiply-accumulates of Convolution, Deconvolution and InnerProduct layers,
    for the batch size of the analysed net (the deploy net has batch 1).
``activations``
    elements of the blobs each layer writes (its tops; an in-place layer counts
    the blob it overwrites).
``legacy_params`` / ``legacy_flops``
    the figures the original pynetbuilder printed as "Number of params" and
    "Number of flops": per layer with parameters, the size of its *first*
    parameter blob (weights; the mean for BatchNorm, the scale for Scale, so a
    BatchNorm+Scale pair adds 2C), and for flops the same size multiplied by the
    output height x width for Convolution layers.  Biases are not counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

from pynetbuilder.errors import NetError, ShapeError
from pynetbuilder.layers import (
    LayerCost,
    ParamBlob,
    Shape,
    UnknownShapeError,
    apply_rule,
)

_new_tuple = tuple.__new__  # a NamedTuple from a complete tuple, skipping its __new__


class Figures(NamedTuple):
    """What a layer's rule says and the counts that follow from it (see the conventions)."""

    shapes: tuple[Shape, ...]  # of the tops
    blobs: tuple[ParamBlob, ...]
    macs: int
    params: int
    activations: int
    legacy_params: int
    legacy_flops: int

    @classmethod
    def of(cls, layer_type: str, cost: LayerCost) -> Figures:
        blobs = tuple(cost.blobs)
        shapes = tuple(cost.tops)
        params = first = 0
        for i, blob in enumerate(blobs):
            size = blob.size
            if blob.learnable:
                params += size
            if not i:
                first = size
        flops = first * math.prod(shapes[0][2:]) if layer_type == "Convolution" else first
        return _new_tuple(cls, (shapes, blobs, cost.macs, params, sum(map(math.prod, shapes)),
                                first, flops))


class LayerRow(NamedTuple):
    """One analysed layer: where it sits in the net and its :class:`Figures`."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    shapes: tuple[Shape, ...]
    blobs: tuple[ParamBlob, ...]
    macs: int
    params: int
    activations: int
    legacy_params: int
    legacy_flops: int
    block: str = ""

    @classmethod
    def from_figures(cls, name: str, layer_type: str, bottoms: tuple[str, ...],
                     tops: tuple[str, ...], figures: Figures, block: str = "") -> LayerRow:
        return _new_tuple(cls, (name, layer_type, bottoms, tops, *figures, block))

    @classmethod
    def of(cls, layer: Any, cost: LayerCost, block: str = "") -> LayerRow:
        """The row of a ``LayerParameter`` whose rule gave ``cost``."""
        return cls.from_figures(layer.name, layer.type, tuple(layer.bottom), tuple(layer.top),
                                Figures.of(layer.type, cost), block)

    @property
    def inplace(self) -> bool:
        return bool(self.tops) and self.tops == self.bottoms[: len(self.tops)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "block": self.block,
            "bottoms": list(self.bottoms),
            "tops": list(self.tops),
            "output_shapes": [list(s) for s in self.shapes],
            "param_blobs": [
                {"shape": list(b.shape), "learnable": b.learnable} for b in self.blobs
            ],
            "params": self.params,
            "macs": self.macs,
            "activations": self.activations,
            "legacy_params": self.legacy_params,
            "legacy_flops": self.legacy_flops,
        }


@dataclass(frozen=True, slots=True)
class SkippedLayer:
    """A layer the analysis could not size, and why (its tops' shapes are unknown)."""

    name: str
    type: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "reason": self.reason}


@dataclass
class Totals:
    params: int
    macs: int
    activations: int
    layers: int
    legacy_params: int
    legacy_flops: int


@dataclass
class Report:
    name: str
    phase: str
    rows: list[LayerRow]
    blob_shapes: dict[str, Shape] = field(default_factory=dict)
    # layers not analysed (no shape rule, or an input of unknown shape): not in rows,
    # so the totals exclude them
    skipped: list[SkippedLayer] = field(default_factory=list)

    @property
    def totals(self) -> Totals:
        rows = self.rows

        def total(column: str) -> int:
            return sum(map(attrgetter(column), rows))

        return Totals(total("params"), total("macs"), total("activations"), len(rows),
                      total("legacy_params"), total("legacy_flops"))

    def legacy_lines(self) -> str:
        """The two lines the original tool printed (values in millions)."""
        t = self.totals
        return (
            f"Number of params: {t.legacy_params / 1e6} Million\n"
            f"Number of flops: {t.legacy_flops / 1e6} Million"
        )

    def to_json(self) -> dict[str, Any]:
        skipped = {"skipped_layers": [s.as_dict() for s in self.skipped]} if self.skipped else {}
        return {
            "net": self.name,
            "phase": self.phase,
            **asdict(self.totals),
            **skipped,
            "conventions": {
                "params": "learnable parameter blobs (all but BatchNorm statistics)",
                "macs": "multiply-accumulates of Convolution, Deconvolution, InnerProduct",
                "activations": "elements of each layer's top blobs",
                "legacy_params": "original pynetbuilder: first parameter blob of each layer",
                "legacy_flops": "original pynetbuilder: first blob x output HxW for "
                "Convolution, first blob size otherwise",
            },
            "layers": [r.as_dict() for r in self.rows],
        }

    def json_text(self) -> str:
        return json.dumps(self.to_json(), indent=1) + "\n"

    def table(self) -> str:
        headers = ("layer", "type", "output", "params", "MACs", "activations")
        lines = []
        for r in self.rows:
            shape = " ".join("x".join(map(str, s)) or "scalar" for s in r.shapes)
            lines.append((r.name, r.type, shape, f"{r.params:,}", f"{r.macs:,}",
                          f"{r.activations:,}"))
        t = self.totals
        total = ("total", f"{t.layers} layers", "", f"{t.params:,}", f"{t.macs:,}",
                 f"{t.activations:,}")
        widths = [max(len(str(x[i])) for x in [headers, total, *lines]) for i in range(6)]

        def fmt(cells: Sequence[str]) -> str:
            left = [str(c).ljust(w) for c, w in zip(cells[:3], widths[:3])]
            right = [str(c).rjust(w) for c, w in zip(cells[3:], widths[3:])]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(fmt(headers))
        return "\n".join([fmt(headers), rule, *map(fmt, lines), rule, fmt(total),
                          *self.skipped_lines()]) + "\n"

    def skipped_lines(self) -> list[str]:
        """One line per layer that could not be analysed (none when all were)."""
        if not self.skipped:
            return []
        return [f"not analysed ({len(self.skipped)} layers, excluded from the totals):"] + [
            f"  {s.name} ({s.type}): {s.reason}" for s in self.skipped
        ]

    def summary(self) -> str:
        t = self.totals
        excluded = (f" (excluding {len(self.skipped)} layers not analysed)"
                    if self.skipped else "")
        return (
            f"{self.name} ({self.phase}): {t.params:,} learnable params "
            f"({t.params / 1e6:.3f} M), {t.macs:,} MACs ({t.macs / 1e9:.3f} G), "
            f"{t.activations:,} activations, {t.layers} layers{excluded}"
        )


def header_inputs(net: Any) -> dict[str, Shape]:
    """Inputs declared with the old ``input:`` + ``input_dim``/``input_shape`` fields."""
    shapes: dict[str, Shape] = {}
    if net.input_shape:
        for name, s in zip(net.input, net.input_shape):
            shapes[name] = tuple(int(d) for d in s.dim)
    elif net.input_dim:
        dims = list(net.input_dim)
        for i, name in enumerate(net.input):
            shapes[name] = tuple(dims[4 * i : 4 * i + 4])
    return shapes


def analyze(
    net: Any,
    *,
    inputs: Mapping[str, Shape] | None = None,
    declared: Mapping[str, Sequence[Shape]] | None = None,
    blocks: Mapping[str, str] | None = None,
    phase: str = "",
    skip_unknown: bool = False,
) -> Report:
    """Infer every blob shape and count every layer of a ``NetParameter``.

    ``inputs`` gives shapes of blobs no layer produces (besides the prototxt's
    own ``input:`` header), ``declared`` the top shapes of layers whose shape the
    prototxt does not hold (data layers), keyed by layer name.

    With ``skip_unknown``, a layer whose shapes cannot be inferred (a type without a
    rule, a Python layer, a rule that cannot read its input) does not stop the
    analysis: it goes to ``report.skipped`` with the reason, its tops' shapes stay
    unknown and so does every layer reading them.  A ``ShapeError`` (a net Caffe
    would refuse: inputs that do not fit) is raised either way.
    """
    blob_shapes: dict[str, Shape] = {**header_inputs(net), **dict(inputs or {})}
    rows = []
    skipped: list[SkippedLayer] = []
    unknown: dict[str, str] = {}  # blob of unknown shape -> layer that wrote it
    for layer in net.layer:
        lost = [b for b in layer.bottom if b in unknown]
        if lost:
            reason = (f"input blob {lost[0]!r} has an unknown shape (from layer "
                      f"{unknown[lost[0]]!r})")
            skipped.append(SkippedLayer(layer.name, layer.type, reason))
            unknown.update((t, unknown[lost[0]]) for t in layer.top)
            continue
        for b in layer.bottom:
            if b not in blob_shapes:
                raise NetError(
                    f"layer {layer.name!r} reads blob {b!r}, which no earlier layer produces"
                )
        bottoms = [blob_shapes[b] for b in layer.bottom]
        try:
            cost = apply_rule(layer, bottoms, (declared or {}).get(layer.name))
        except UnknownShapeError as exc:
            if not skip_unknown:
                raise
            reason = str(exc)
            if layer.type == "Python":
                p = layer.python_param
                reason = (f"Python layer {p.module}.{p.layer}: its output shapes are set by "
                          "its own code, which analysis does not run")
        except ShapeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a rule that cannot read this input
            if not skip_unknown:
                raise
            reason = f"cannot infer its output shape from inputs {bottoms}: {exc}"
        else:
            for top, shape in zip(layer.top, cost.tops):
                blob_shapes[top] = shape
            rows.append(LayerRow.of(layer, cost, (blocks or {}).get(layer.name, "")))
            continue
        for prefix in (f"{layer.type} layer {layer.name!r}: ", f"layer {layer.name!r}: "):
            reason = reason.removeprefix(prefix)
        if layer.top:
            reason += f" (so the shape of {', '.join(map(repr, layer.top))} is unknown)"
        skipped.append(SkippedLayer(layer.name, layer.type, reason))
        for top in layer.top:
            blob_shapes.pop(top, None)  # an in-place layer leaves its blob unknown too
            unknown[top] = layer.name
    return Report(name=net.name, phase=phase, rows=rows, blob_shapes=blob_shapes,
                  skipped=skipped)
