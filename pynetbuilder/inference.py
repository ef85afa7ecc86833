"""The one inference engine: shapes and figures of layers, in order, with one memo.

Building a :class:`~pynetbuilder.graph.Net` and analysing a ``NetParameter`` read
from disk both feed their layers, in order, to an :class:`Inference`.  For each
layer it looks up its kind's shape rule (:mod:`pynetbuilder.kinds`), runs it on the
bottoms' shapes, and keeps the top shapes and a :class:`LayerRow`.

- A layer the rules cannot size (a type without a rule, a Python layer, a data
  layer whose shape nobody gave, a rule that cannot read its input) does not stop
  the run: it goes to ``skipped`` with the reason, its tops' shapes become unknown
  and so does every layer reading them.
- A layer Caffe would refuse (:class:`~pynetbuilder.errors.ShapeError`: inputs that
  do not fit, a setting out of range) or a bottom no earlier layer wrote
  (:class:`~pynetbuilder.errors.NetError`) stops it with a one-line message.
- The memo: a rule is a pure function of the layer's setting (everything but its
  name and blob names), the declared shapes and the bottoms' shapes, and nets
  repeat these (every BatchNorm of a stage), so each distinct combination runs
  once.  The caller names the setting with a hashable key (the graph numbers its
  distinct settings; :func:`setting_key` makes one from a ``LayerParameter``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from pynetbuilder.errors import NetError, ShapeError
from pynetbuilder.kinds import (
    Category,
    LayerCost,
    LayerLike,
    ParamBlob,
    Shape,
    UnknownShapeError,
    apply_rule,
    check_blob_size,
    kind_of,
)
from pynetbuilder.schema import caffe_pb2

__all__ = ["Figures", "LayerRow", "SkippedLayer", "Inference", "in_place_reshapes", "setting_key"]

_new_tuple = tuple.__new__  # a NamedTuple from a complete tuple, skipping its __new__


class Figures(NamedTuple):
    """What a layer's rule says and the counts that follow from it (see report's
    conventions)."""

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


class SkippedLayer(NamedTuple):
    """A layer the analysis could not size, and why (its tops' shapes are unknown)."""

    name: str
    type: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "reason": self.reason}


_BLOB_FIELDS = ("name", "bottom", "top")


def setting_key(layer: Any) -> tuple[int, bytes]:
    """A memo key for a ``LayerParameter``: its number of tops and its serialised
    fields other than its name and blob names (equal keys, equal rule results)."""
    setting = caffe_pb2.LayerParameter()
    setting.CopyFrom(layer)
    for name in _BLOB_FIELDS:
        setting.ClearField(name)
    return len(layer.top), setting.SerializeToString(deterministic=True)


def _check_in_place(name: str, layer_type: str, blob: str) -> None:
    """Caffe's own refusal of in-place computation (``CHECK_NE(top[0], bottom[0])`` in
    the ``LayerSetUp`` of the types marked ``NOT_INPLACE``)."""
    if kind_of(layer_type).category & Category.NOT_INPLACE:
        raise ShapeError(f"{layer_type} layer {name!r}: Caffe does not allow {layer_type} "
                         f"to compute in place (its top {blob!r} is its bottom); give it a "
                         "top of its own")


def in_place_reshapes(rows: Sequence[LayerRow], inputs: Mapping[str, Shape]
                      ) -> list[tuple[LayerRow, Shape, Shape]]:
    """The layers computed in place that change their blob's shape, with the shape
    before and after: Caffe reshapes the blob they share with their input before its
    forward pass reads it, so what they compute is not defined (``Layer::Forward``
    calls ``Reshape`` first; the data keeps its old layout)."""
    current = dict(inputs)
    found = []
    for row in rows:
        if row.inplace:
            for top, shape in zip(row.tops, row.shapes):
                before = current.get(top)
                if before is not None and tuple(before) != tuple(shape):
                    found.append((row, tuple(before), tuple(shape)))
        current.update(zip(row.tops, row.shapes))
    return found


class Inference:
    """One run of shape inference (see the module's docstring).

    ``shapes`` starts with the net's inputs and gains every top; ``rows`` and
    ``skipped`` are filled in layer order.  ``memo`` may be shared by runs over the
    same kind of keys (a net's phases share one).
    """

    __slots__ = ("shapes", "rows", "skipped", "unknown", "memo")

    def __init__(self, shapes: Mapping[str, Shape] | None = None,
                 memo: dict[Any, Figures] | None = None) -> None:
        self.shapes: dict[str, Shape] = dict(shapes or {})
        for blob, shape in self.shapes.items():
            check_blob_size(shape, f"input {blob!r}")
        self.rows: list[LayerRow] = []
        self.skipped: list[SkippedLayer] = []
        self.unknown: dict[str, str] = {}  # blob of unknown shape -> layer that left it so
        self.memo: dict[Any, Figures] = {} if memo is None else memo

    def add(
        self,
        name: str,
        layer_type: str,
        bottoms: tuple[str, ...],
        tops: tuple[str, ...],
        layer: LayerLike,
        key: Any,
        declared: Sequence[Shape] | None = None,
        block: str = "",
        named: Callable[[], LayerLike] | None = None,
    ) -> None:
        """Infer one layer.  ``layer`` is what its rule reads (the layer itself, or a
        nameless copy of its setting with ``named`` making the named one, for messages),
        ``key`` its setting's memo key, ``declared`` its top shapes where they come
        from outside the prototxt (data layers)."""
        unknown = self.unknown
        if unknown:
            for b in bottoms:
                if b in unknown:
                    self._skip(name, layer_type, tops, f"input blob {b!r} has an unknown shape "
                               f"(from layer {unknown[b]!r})", unknown[b], prefixed=False)
                    return
        shapes = self.shapes
        if len(bottoms) == 1 and declared is None:  # most layers
            bottom = shapes.get(bottoms[0])
            if bottom is None:
                self._missing(name, bottoms)
            memo_key: tuple[Any, ...] = (key, None, bottom)
        else:
            try:
                memo_key = (key, None if declared is None else tuple(map(tuple, declared)),
                            *[shapes[b] for b in bottoms])
            except KeyError:
                self._missing(name, bottoms)
        figures = self.memo.get(memo_key)
        if figures is None:
            in_shapes = list(memo_key[2:])
            try:
                cost = apply_rule(layer, in_shapes, declared)
            except UnknownShapeError:
                self._explain(name, layer_type, tops, named or (lambda: layer), in_shapes,
                              declared)
                return
            except ShapeError:
                if named is not None:
                    apply_rule(named(), in_shapes, declared)  # the same error, with the name
                raise
            except Exception as exc:  # noqa: BLE001 - a rule that cannot read this input
                self._skip(name, layer_type, tops, f"cannot infer its output shape from "
                           f"inputs {in_shapes}: {exc}", name)
                return
            figures = self.memo[memo_key] = Figures.of(layer_type, cost)
        out = figures[0]
        if tops and bottoms and tops[0] == bottoms[0]:  # in place (Caffe: top i is bottom i)
            _check_in_place(name, layer_type, tops[0])
        if len(tops) == 1 and out:
            shapes[tops[0]] = out[0]
        else:
            shapes.update(zip(tops, out))
        self.rows.append(_new_tuple(LayerRow, (name, layer_type, bottoms, tops, *figures, block)))

    def skip(self, name: str, layer_type: str, tops: tuple[str, ...], reason: str) -> None:
        """Leave one layer out (its tops' shapes unknown) for ``reason``."""
        self._skip(name, layer_type, tops, reason, name)

    def _missing(self, name: str, bottoms: tuple[str, ...]) -> None:
        for b in bottoms:
            if b not in self.shapes:
                raise NetError(
                    f"layer {name!r} reads blob {b!r}, which no earlier layer produces"
                )

    def _explain(self, name: str, layer_type: str, tops: tuple[str, ...],
                 named: Callable[[], LayerLike], in_shapes: list[Shape],
                 declared: Sequence[Shape] | None) -> None:
        try:
            apply_rule(named(), in_shapes, declared)
            reason = "its output shape is unknown"  # pragma: no cover - rules are pure
        except UnknownShapeError as exc:
            reason = str(exc)
        self._skip(name, layer_type, tops, reason, name)

    def _skip(self, name: str, layer_type: str, tops: tuple[str, ...], reason: str,
              origin: str, prefixed: bool = True) -> None:
        if prefixed:
            for prefix in (f"{layer_type} layer {name!r}: ", f"layer {name!r}: "):
                reason = reason.removeprefix(prefix)
            if tops:
                reason += f" (so the shape of {', '.join(map(repr, tops))} is unknown)"
        self.skipped.append(SkippedLayer(name, layer_type, reason))
        for top in tops:
            self.shapes.pop(top, None)  # an in-place layer leaves its blob unknown too
            self.unknown[top] = origin
