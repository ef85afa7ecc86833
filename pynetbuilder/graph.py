"""The net graph that legos attach to: layers, blobs, name scopes, phases.

One ``Net`` describes the train, test and deploy networks at once.  Every layer
records the phases it belongs to; ``to_proto(phase)`` yields the
``NetParameter`` Caffe builds in that phase and ``train_val_proto()`` the single
file Caffe's solver wants (TRAIN and TEST layers together, phase-specific ones
with ``include { phase: ... }``).

Defaults (fillers, learning-rate multipliers ...) come from ``net.defaults(...)``
scopes, inner scopes over outer ones; a value passed to ``net.layer`` always wins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from pynetbuilder.errors import NetError, SettingError
from pynetbuilder.inference import Figures, Inference
from pynetbuilder.kinds import Shape
from pynetbuilder.report import Report
from pynetbuilder.schema import caffe_pb2, instantiate
from pynetbuilder.settings import LayerTemplates, Setting


class Phase(StrEnum):
    TRAIN = "train"
    TEST = "test"
    DEPLOY = "deploy"

    @classmethod
    def parse(cls, value: str | Phase) -> Phase:
        if type(value) is cls:
            return value
        try:
            return cls(value.lower() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError(f"phase must be one of train, test, deploy, not {value!r}") from None


ALL_PHASES = frozenset(Phase)
TRAIN_TEST = frozenset({Phase.TRAIN, Phase.TEST})
_CAFFE_PHASE = {Phase.TRAIN: caffe_pb2.TRAIN, Phase.TEST: caffe_pb2.TEST}

# Inside the graph a set of phases is a bit mask (bit i: _PHASES[i]): the
# intersections and unions done for every layer are then integer operations.
_PHASES = (Phase.TRAIN, Phase.TEST, Phase.DEPLOY)
_INDEX = {p: i for i, p in enumerate(_PHASES)}
_ALL = (1 << len(_PHASES)) - 1
_SETS = tuple(
    frozenset(p for i, p in enumerate(_PHASES) if mask >> i & 1) for mask in range(_ALL + 1)
)


def _index(phase: Phase | str) -> int:
    i = _INDEX.get(phase)  # type: ignore[call-overload]
    return _INDEX[Phase.parse(phase)] if i is None else i


def _mask(phases: Iterable[Phase | str]) -> int:
    mask = 0
    for p in phases:
        mask |= 1 << _index(p)
    return mask


_new_tuple = tuple.__new__  # a NamedTuple from a complete tuple, skipping its __new__
Template = Setting  # a layer's setting in one phase: see LayerTemplates


class LayerEntry(NamedTuple):
    """One layer of the graph with what it needs per phase.

    Its ``LayerParameter`` for a phase is made from the phase's template when asked
    for; shape inference only needs the template and the bottoms' shapes.
    """

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    mask: int  # the phases it belongs to, as bits (see ``phases``)
    template: Template  # in phases without an override
    templates: tuple[Template, ...]  # per phase (train, test, deploy)
    declared: tuple[list[Shape] | None, ...] | None  # top shapes per phase, if given
    block: str = ""

    @property
    def phases(self) -> frozenset[Phase]:
        return _SETS[self.mask]

    def for_phase(self, phase: Phase | None) -> Any:
        """A new ``LayerParameter`` of the layer as it stands in ``phase``."""
        template = self.template if phase is None else self.templates[_index(phase)]
        return instantiate(template.message, self.name, self.bottoms, self.tops)

    @property
    def proto(self) -> Any:
        """The layer as in phases without an override (without include rules)."""
        return self.for_phase(None)


class _Scope:
    """What :meth:`Net.scope` returns: a context manager (a class, not a generator:
    blocks open one per use, and this costs less)."""

    __slots__ = ("net", "name", "block", "outer")

    def __init__(self, net: Net, name: str, block: bool) -> None:
        self.net, self.name, self.block, self.outer = net, name, block, ""

    def __enter__(self) -> str:
        net = self.net
        if self.name:
            self.outer = net._prefix
            net._prefix = f"{net._prefix}{self.name}_"
            if self.block:
                net._blocks.append(net._prefix[:-1])
        return net.scoped("")

    def __exit__(self, *exc: object) -> None:
        if self.name:
            self.net._prefix = self.outer
            if self.block:
                self.net._blocks.pop()


class Net:
    """A network under construction.  Legos call :meth:`layer`; outputs come from
    :meth:`to_proto`, :meth:`train_val_proto` and :meth:`report`."""

    def __init__(self, name: str, defaults: Mapping[str, Mapping[str, Any]] | None = None):
        self.name = name
        self.entries: list[LayerEntry] = []
        self._prefix = ""  # the open scopes' names, each followed by "_"
        self._blocks: list[str] = []
        self._defaults: list[Mapping[str, Mapping[str, Any]]] = [dict(defaults or {})]
        self._merged_defaults: dict[str, dict[str, Any]] = {}  # per type, for the scopes now open
        self._producers: dict[str, int] = {}  # blob -> phases (mask) in which it is written
        self._readers: dict[str, str] = {}  # first layer to read a blob since it was written
        self._names: dict[str, int] = {}  # layer name -> phases (mask) it is used in
        self._templates = LayerTemplates()
        # the inference engine's memo, shared by the phases (keys: setting numbers)
        self._memo: dict[Any, Figures] = {}
        # per phase (train, test, deploy): the inference so far and how many entries it saw
        self._inferred = [Inference(memo=self._memo) for _ in _PHASES]
        self._done = [0] * len(_PHASES)

    # ------------------------------------------------------------ scoping

    def scope(self, name: str, block: bool = False) -> _Scope:
        """``with net.scope(name):`` prefixes layer names with ``name_`` (and gives the
        scope's full name); ``block=True`` marks a lego block."""
        return _Scope(self, name, block)

    @contextlib.contextmanager
    def defaults(self, **per_type: Mapping[str, Any]) -> Iterator[None]:
        """Defaults per layer type (``Convolution={...}``) for layers added inside."""
        self._defaults.append(per_type)
        self._merged_defaults.clear()
        try:
            yield
        finally:
            self._defaults.pop()
            self._merged_defaults.clear()

    def scoped(self, name: str) -> str:
        """``name`` inside the current scope (the scope's own name for ``""``)."""
        return f"{self._prefix}{name}" if name else self._prefix[:-1]

    def default_params(self, layer_type: str) -> Mapping[str, Any]:
        """The defaults in force for ``layer_type`` (read-only; inner scopes win)."""
        merged = self._merged_defaults.get(layer_type)
        if merged is None:
            merged = {}
            for level in self._defaults:
                merged.update(level.get(layer_type, {}))
            self._merged_defaults[layer_type] = merged
        return merged

    # ------------------------------------------------------------ building

    def layer(
        self,
        layer_type: str,
        bottoms: str | Sequence[str] = (),
        *,
        name: str,
        ntop: int = 1,
        tops: Sequence[str] | None = None,
        inplace: bool = False,
        phases: frozenset[Phase] | None = None,
        overrides: Mapping[Phase, Mapping[str, Any]] | None = None,
        shapes: Mapping[Phase, list[Shape]] | None = None,
        use_defaults: bool = True,
        **params: Any,
    ) -> list[str]:
        """Add a layer; return its top blob names.

        ``name`` is relative to the current scope.  ``phases`` defaults to the
        phases in which all bottoms exist (all phases for a layer without bottoms).
        ``inplace`` makes the layer write into its bottom (Caffe allows it for
        BatchNorm, Scale, ReLU, Dropout ...).  ``params`` land in the type's
        parameter message unless they name a ``LayerParameter`` field.
        ``overrides`` sets parameters for one phase only (BatchNorm's
        ``use_global_stats`` in TEST); a key there replaces the same key of
        ``params``.  ``shapes`` gives the top shapes of layers whose shape is not
        in the prototxt (a ``Data`` layer reading a database).
        """
        return self.add(layer_type, bottoms, name, params, ntop=ntop, tops=tops,
                        inplace=inplace, phases=phases, overrides=overrides, shapes=shapes,
                        use_defaults=use_defaults)

    def add(
        self,
        layer_type: str,
        bottoms: str | Sequence[str],
        name: str,
        params: Mapping[str, Any],
        *,
        ntop: int = 1,
        tops: Sequence[str] | None = None,
        inplace: bool = False,
        phases: Iterable[Phase | str] | None = None,
        overrides: Mapping[Phase, Mapping[str, Any]] | None = None,
        shapes: Mapping[Phase, list[Shape]] | None = None,
        use_defaults: bool = True,
    ) -> list[str]:
        """:meth:`layer` with the parameters as one mapping (legos hold theirs in one);
        the mapping is read, never changed or kept."""
        bottoms = (bottoms,) if isinstance(bottoms, str) else tuple(bottoms)
        prefix = self._prefix
        full = prefix + name if name else prefix[:-1]
        if not full:
            raise NetError("a layer needs a name")
        producers = self._producers
        available = _ALL
        for b in bottoms:
            available &= producers.get(b, 0)
        if phases is None:
            mask = available  # a layer exists where all its inputs exist
            if not mask:
                raise NetError(
                    f"layer {full!r} reads {', '.join(map(repr, bottoms))}, which no earlier "
                    "layer produces (in a common phase)"
                )
        else:
            mask = _mask(phases)
            if not mask:
                raise NetError(f"layer {full!r} belongs to no phase")
            missing = mask & ~available
            if missing:
                raise NetError(
                    f"layer {full!r} reads {', '.join(map(repr, bottoms))}, which no earlier "
                    f"layer produces in phase {', '.join(sorted(p.value for p in _SETS[missing]))}"
                )
        names = self._names
        used = names.get(full, 0)
        if used & mask:
            raise NetError(f"two layers named {full!r} in one phase; choose another name")
        readers = self._readers
        if inplace:
            if len(bottoms) != 1:
                raise NetError(f"in-place layer {full!r} needs exactly one bottom")
            if bottoms[0] in readers:
                # Caffe would insert a Split and then see two producers of the blob.
                raise NetError(
                    f"in-place layer {full!r} would overwrite blob {bottoms[0]!r}, which "
                    f"{readers[bottoms[0]]!r} also reads; make it not in place"
                )
            top_names = bottoms
        elif tops is not None:
            top_names = tuple(self.scoped(t) for t in tops)
        elif ntop == 1:
            top_names = (full,)
        else:
            top_names = tuple(f"{full}_{i}" for i in range(ntop))
        if use_defaults:
            defaults = self._merged_defaults.get(layer_type)
            if defaults is None:
                defaults = self.default_params(layer_type)
            if defaults:
                params = {**defaults, **params}  # params: a fresh dict, the caller's wins
        templates = self._templates
        ntops = len(top_names)
        try:
            base = templates.get(layer_type, params, ntops)
            if overrides:
                per_phase = self._phase_templates(base, layer_type, params, overrides, ntops)
            else:
                per_phase = (base, base, base)
        except SettingError as exc:
            raise SettingError(f"layer {full!r}: {exc}") from None
        declared = None
        if shapes:
            given: list[list[Shape] | None] = [None] * len(_PHASES)
            for key, value in shapes.items():
                given[_index(key)] = list(value)
            declared = tuple(given)
        self.entries.append(_new_tuple(LayerEntry, (
            full, layer_type, bottoms, top_names, mask, base, per_phase, declared,
            self._blocks[-1] if self._blocks else "",
        )))
        names[full] = used | mask
        if inplace:  # its blob had no readers (checked above) and is rewritten: still none
            producers[bottoms[0]] |= mask
            return list(bottoms)
        for b in bottoms:
            readers.setdefault(b, full)
        for t in top_names:
            producers[t] = producers.get(t, 0) | mask
            readers.pop(t, None)  # a blob just (re)written has no readers yet
        return list(top_names)

    def _phase_templates(
        self, base: Template, layer_type: str, params: Mapping[str, Any],
        overrides: Mapping[Phase, Mapping[str, Any]], ntops: int,
    ) -> tuple[Template, ...]:
        """The template of each phase for a layer with per-phase ``overrides`` (a key
        there replaces the same key of ``params``)."""
        chosen = [base] * len(_PHASES)
        for key, extra in overrides.items():
            chosen[_index(key)] = self._templates.get(layer_type, {**params, **extra}, ntops)
        return tuple(chosen)

    def phases_of(self, blob: str) -> frozenset[Phase]:
        """The phases in which some layer built so far writes ``blob`` (empty if none)."""
        return _SETS[self._producers.get(blob, 0)]

    def blob_shape(self, blob: str) -> Shape:
        """Shape of a blob built so far (deploy net first, then test, then train)."""
        reasons = []
        for phase in (Phase.DEPLOY, Phase.TEST, Phase.TRAIN):
            run = self._infer(phase)
            if blob in run.shapes:
                return run.shapes[blob]
            if blob in run.unknown:
                reasons.append(run.unknown[blob])
        if reasons:
            raise NetError(f"the shape of blob {blob!r} is unknown: layer {reasons[0]!r} "
                           "could not be analysed")
        raise NetError(f"the shape of blob {blob!r} is not known yet")

    def _infer(self, phase: Phase) -> Inference:
        """Incremental shape inference: only layers added since the last call."""
        index = _INDEX[phase]
        run = self._inferred[index]
        entries = self.entries
        done = self._done[index]
        if done == len(entries):
            return run
        bit = 1 << index
        try:
            for entry in entries[done:]:
                if entry.mask & bit:
                    setting = entry.templates[index]
                    declared = None if entry.declared is None else entry.declared[index]
                    # the rule reads the nameless setting; only messages need the name
                    run.add(entry.name, entry.type, entry.bottoms, entry.tops,
                            setting.message, setting.number, declared, entry.block,
                            lambda entry=entry: entry.for_phase(phase))
                done += 1
        finally:
            self._done[index] = done
        return run

    # ------------------------------------------------------------ outputs

    def layers_in(self, phase: Phase | str) -> list[LayerEntry]:
        bit = 1 << _index(phase)
        return [e for e in self.entries if e.mask & bit]

    def to_proto(self, phase: Phase | str) -> Any:
        """The ``NetParameter`` Caffe builds in ``phase`` (train, test or deploy)."""
        phase = Phase.parse(phase)
        net = caffe_pb2.NetParameter(name=self.name)
        for entry in self.layers_in(phase):
            net.layer.append(entry.for_phase(phase))
        return net

    def train_val_proto(self) -> Any:
        """TRAIN and TEST layers in one ``NetParameter`` (a solver's ``net:``)."""
        net = caffe_pb2.NetParameter(name=self.name)
        for entry in self.entries:
            both = entry.phases & TRAIN_TEST
            if not both:
                continue
            layer = net.layer.add()
            if len(both) == 1:
                (phase,) = both
                layer.CopyFrom(entry.for_phase(phase))
                layer.include.add(phase=_CAFFE_PHASE[phase])
            else:
                layer.CopyFrom(entry.proto)
        return net

    def declared_shapes(self, phase: Phase | str) -> dict[str, list[Shape]]:
        index = _index(phase)
        return {
            e.name: e.declared[index]  # type: ignore[misc]
            for e in self.layers_in(phase)
            if e.declared is not None and e.declared[index] is not None
        }

    def blocks(self, phase: Phase | str) -> dict[str, str]:
        return {e.name: e.block for e in self.layers_in(phase)}

    def report(self, phase: Phase | str = Phase.DEPLOY) -> Report:
        """Shapes, parameters and MACs of every layer in ``phase``, without Caffe.

        The same engine as :func:`pynetbuilder.report.analyze` on ``to_proto(phase)``,
        reusing the inference done while the net was built.  Layers it could not
        analyse (a type without a rule ...) are in ``skipped``: the net is still
        written.
        """
        phase = Phase.parse(phase)
        run = self._infer(phase)
        return Report(name=self.name, phase=phase.value, rows=list(run.rows),
                      blob_shapes=dict(run.shapes), skipped=list(run.skipped))


def prototxt_files(net: Net) -> dict[str, str]:
    """``train.prototxt`` (TRAIN + TEST, for a solver), ``test.prototxt``, ``deploy.prototxt``."""
    from pynetbuilder.schema import to_text

    return {
        "train.prototxt": to_text(net.train_val_proto()),
        "test.prototxt": to_text(net.to_proto(Phase.TEST)),
        "deploy.prototxt": to_text(net.to_proto(Phase.DEPLOY)),
    }
