"""The one place the PyTorch backend asks the analyser about a net.

:func:`analysed` turns whatever names a net (a prototxt path, a model spec with
knob flags, a :class:`~pynetbuilder.graph.Net` built from legos, or a
``NetParameter``) into the ``NetParameter`` Caffe builds in one phase (``include``/
``exclude`` applied) and every blob's shape there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pynetbuilder.kinds import KINDS, kind_of
from pynetbuilder.kinds.base import Category, Shape

# data layers whose tops become the module's named inputs: the registry's data and input
# types (SegNet's DenseImageData included), and this build's VideoData
DATA_TYPES = frozenset(
    {t for t, k in KINDS.items() if k.is_a(Category.DATA | Category.INPUT)} | {"VideoData"})


class Analysed(NamedTuple):
    name: str
    net: Any  # NetParameter of the phase
    shapes: dict[str, Shape]  # every blob's final shape
    phase: str  # train, test or deploy


def analysed(
    net: Any,
    knobs: Sequence[str] = (),
    *,
    phase: str = "deploy",
    input_shape: tuple[int, ...] | None = None,
    outputs: Sequence[str] | None = None,
) -> Analysed:
    """``net`` in ``phase``: its phase-filtered ``NetParameter`` and blob shapes.

    ``net`` is a prototxt path or model spec (as ``pynetbuilder analyze`` takes it),
    a :class:`~pynetbuilder.graph.Net`, or a ``NetParameter`` (analysed as a prototxt
    read from disk).  With ``outputs`` (blob names) the ``NetParameter`` keeps only
    the layers those blobs need: a layer the rest of the net has that cannot be sized
    or run (a sink such as DeepLab's MatWrite, a host-side layer) no longer stops it.
    Bad input raises ``UsageError`` / ``NetError`` with one line.
    """
    from pynetbuilder.errors import NetError
    from pynetbuilder.graph import Net
    from pynetbuilder.inspect import filter_phase, input_shapes, load
    from pynetbuilder.report import analyze

    if isinstance(net, str):
        inspected = load(net, knobs, phase=phase, input_shape=input_shape)
        report, proto, name = inspected.report, inspected.net, inspected.name
    elif isinstance(net, Net):
        proto = net.to_proto(phase)
        report, name = net.report(phase), net.name
    else:  # a NetParameter
        proto = filter_phase(net, phase)
        inputs, declared, _ = input_shapes(proto, input_shape)
        report = analyze(proto, inputs=inputs, declared=declared, phase=phase)
        name = proto.name
    rows, skipped = report.rows, report.skipped
    if outputs:
        proto = needed_for(proto, outputs)
        kept = {layer.name for layer in proto.layer}
        rows = [r for r in rows if r.name in kept]
        skipped = [s for s in skipped if s.name in kept]
    if skipped:
        s = skipped[0]
        raise NetError(f"layer {s.name!r} ({s.type}) cannot be analysed: {s.reason}")
    _refuse_in_place_reshapes(rows)
    shapes = _final_shapes(proto, report.blob_shapes)
    return Analysed(name, _automatic_tops(proto, shapes), shapes, phase)


def _automatic_tops(proto: Any, shapes: dict[str, Shape]) -> Any:
    """``proto`` with a top for each loss written without one: Caffe's ``Net::Init``
    gives such a layer (``AutoTopBlobs``: every LossLayer) its scalar top, named
    ``(automatic)``; here ``(automatic LAYER)``, one name per layer, added to ``shapes``."""
    topless = [i for i, la in enumerate(proto.layer)
               if not la.top and kind_of(la.type).is_a(Category.LOSS)]
    if not topless:
        return proto
    from pynetbuilder.schema import caffe_pb2

    out = caffe_pb2.NetParameter()
    out.CopyFrom(proto)
    for i in topless:
        layer = out.layer[i]
        top = f"(automatic {layer.name})"
        layer.top.append(top)
        shapes[top] = ()
    return out


def needed_for(net: Any, outputs: Sequence[str]) -> Any:
    """A copy of ``net`` (a ``NetParameter``) with only the layers that ``outputs``
    need: walking back from them, a layer that writes a needed blob is kept and its
    bottoms become needed (an in-place layer keeps its blob's earlier writers)."""
    from pynetbuilder.schema import caffe_pb2

    needed = set(outputs)
    keep = []
    for layer in reversed(net.layer):
        if needed.intersection(layer.top):
            keep.append(layer)
            needed.update(layer.bottom)
    pruned = caffe_pb2.NetParameter()
    pruned.CopyFrom(net)
    del pruned.layer[:]
    pruned.layer.extend(reversed(keep))
    return pruned


def _refuse_in_place_reshapes(rows: Sequence[Any]) -> None:
    """A layer computed in place that changes its blob's shape has no defined output in
    Caffe (:func:`~pynetbuilder.inspect.in_place_notes`, which analyze prints): the
    module refuses it rather than compute something Caffe does not."""
    from pynetbuilder.errors import NetError
    from pynetbuilder.inspect import in_place_notes

    for note in in_place_notes(rows, {}):
        raise NetError(note)


def _final_shapes(proto: Any, shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    return {k: tuple(int(d) for d in v) for k, v in shapes.items()}
