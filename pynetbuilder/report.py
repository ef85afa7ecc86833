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

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any, NamedTuple

from pynetbuilder.inference import Figures, Inference, LayerRow, SkippedLayer, setting_key
from pynetbuilder.kinds import Shape

__all__ = ["Figures", "LayerRow", "SkippedLayer", "Totals", "Report", "header_inputs", "analyze"]


class Totals(NamedTuple):
    params: int
    macs: int
    activations: int
    layers: int
    legacy_params: int
    legacy_flops: int


class Report:
    """The analysis of one net in one phase: a row per analysed layer, every blob's
    shape, and the layers not analysed (no shape rule, or an input of unknown shape:
    not in ``rows``, so the totals exclude them)."""

    __slots__ = ("name", "phase", "rows", "blob_shapes", "skipped")

    def __init__(self, name: str, phase: str, rows: list[LayerRow],
                 blob_shapes: dict[str, Shape] | None = None,
                 skipped: list[SkippedLayer] | None = None) -> None:
        self.name = name
        self.phase = phase
        self.rows = rows
        self.blob_shapes = {} if blob_shapes is None else blob_shapes
        self.skipped = [] if skipped is None else skipped

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Report) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return f"Report({self.name!r}, {self.phase!r}, {len(self.rows)} rows)"

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
            **self.totals._asdict(),
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
        import json

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
    skip: Mapping[str, str] | None = None,
) -> Report:
    """Infer every blob shape and count every layer of a ``NetParameter``.

    ``inputs`` gives shapes of blobs no layer produces (besides the prototxt's
    own ``input:`` header), ``declared`` the top shapes of layers whose shape the
    prototxt does not hold (data layers), keyed by layer name; ``skip`` layers not to
    analyse (name -> reason), with every layer reading their outputs.  A layer whose shapes
    cannot be inferred goes to ``report.skipped`` with the reason (see
    :mod:`pynetbuilder.inference`); a net Caffe would refuse raises ``ShapeError``.
    """
    run = Inference({**header_inputs(net), **dict(inputs or {})})
    declared = declared or {}
    blocks = blocks or {}
    for layer in net.layer:
        name = layer.name
        if skip and name in skip:  # settings that could not be read (a dialect's unknown field)
            run.skip(name, layer.type, tuple(layer.top), skip[name])
            continue
        run.add(name, layer.type, tuple(layer.bottom), tuple(layer.top), layer,
                setting_key(layer), declared.get(name), blocks.get(name, ""))
    return Report(name=net.name, phase=phase, rows=run.rows, blob_shapes=run.shapes,
                  skipped=run.skipped)
