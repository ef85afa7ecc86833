"""Load a net to analyse: a Caffe prototxt file or a registry model with knobs.

``load(NET)`` gives an :class:`Inspected`: the ``NetParameter`` of one phase and its
:class:`~pynetbuilder.report.Report`.  ``NET`` is

- a prototxt path (any valid Caffe net: deploy or train/test, ``input:`` +
  ``input_dim``/``input_shape`` headers, ``Input`` layers, data layers, the old
  ``layers { type: CONVOLUTION }`` format, which is upgraded as Caffe does), or
- a model of the registry: ``NAME`` with knob flags as ``pynetbuilder build`` takes
  them (``knobs=["--depth", "110"]``, data flags included), or in one word
  ``NAME:KNOB=VALUE[:KNOB=VALUE ...]`` with list items separated by commas
  (``resnet_imagenet:blocks=3,4,23,3:num_output_stage1=256``).

Conventions:

- ``phase`` ``train`` / ``test`` keep the layers Caffe keeps in that phase
  (``include``/``exclude`` rules, with the net's ``state`` level and stages);
  ``deploy`` is Caffe's TEST phase for a prototxt (what ``caffe.Net(file, TEST)``
  builds) and the deploy net for a model.
- ``input_shape`` (``--input-shape N,C,H,W``; ``C,H,W`` keeps the batch size):
  replaces the shape of the net's one input (``input:`` header or ``Input``
  layer; a net with several inputs is refused).  Data layers (``Data``,
  ``ImageData``, ``HDF5Data``, ``AnnotatedData``, ``WindowData``) take their batch
  size and crop (or resize) from the prototxt; what the prototxt does not hold
  (channels, the image size when nothing crops or resizes) comes from
  ``input_shape``, else from the data source itself when it can be read (the
  first record of an LMDB, the first image of an ImageData list, the first HDF5
  file), else the net is refused with what to give.
- A layer type without a shape rule (or a Python layer) does not stop the
  analysis: it and every layer that reads its outputs are listed in
  ``report.skipped`` with the reason, and the totals exclude them.
- Blocks (``report.rows[i].block``): a registry model's rows carry the lego block
  they belong to; for a prototxt a layer's block is derived from its name (see
  :func:`block_of_name`), an in-place layer (BatchNorm, Scale, ReLU written into
  its input) joining the block of the layer that produced its blob.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pynetbuilder import prototext
from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.kinds import Shape, kind_of, v1_type
from pynetbuilder.report import Report, analyze
from pynetbuilder.schema import caffe_pb2

PHASES = ("deploy", "train", "test")


class Inspected(NamedTuple):
    """A net ready to report on.

    ``name`` is the argument as given (file path or model spec), ``net`` the
    ``NetParameter`` of the analysed phase (only the layers Caffe keeps in it),
    ``report`` its analysis, ``source`` ``"prototxt"`` or ``"model"``, ``notes``
    how the input shapes were found (one line each).
    """

    name: str
    net: Any
    report: Report
    source: str
    phase: str
    notes: tuple[str, ...] = ()

    def groups(self) -> dict[str, str]:
        """Layer name -> block, for every analysed layer: the row's block, else one
        derived from the layer's name as for a prototxt (so ``conv1`` of a model,
        outside any lego block, is the group ``conv1``)."""
        derived = derive_blocks(self.net)
        return {r.name: r.block or derived.get(r.name, r.name) for r in self.report.rows}


def load(
    net_arg: str,
    knobs: Sequence[str] = (),
    *,
    phase: str = "deploy",
    input_shape: tuple[int, ...] | None = None,
) -> Inspected:
    """Load ``net_arg`` (a prototxt path or a registry model, see the module doc) and
    analyse it in ``phase``.  Bad input raises :class:`UsageError` (bad argument,
    unreadable file, missing input shape) or :class:`NetError` (a net Caffe would
    refuse: unparsable text with file, line and column, a bottom never produced, a
    cycle, shapes that do not fit); the message is one line."""
    if phase not in PHASES:
        raise UsageError(f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if not input_shape or any(not isinstance(d, int) or d < 1 for d in input_shape):
            raise UsageError(f"input shape must be positive integers, got {input_shape}")
    path = Path(net_arg)
    if path.is_file() or net_arg.endswith((".prototxt", ".pt", ".txt")):
        if knobs:
            raise UsageError(
                f"{net_arg} is a prototxt file: knob flags ({' '.join(knobs)}) apply to "
                "registry models only"
            )
        return _load_prototxt(net_arg, phase, input_shape)
    return _load_model(net_arg, knobs, phase, input_shape)


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) as a shape; UsageError naming the format."""
    parts = re.split(r"[,x]", text.strip())
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1 or max(shape) > 2**31 - 1:
        raise UsageError(
            f"--input-shape takes positive integers N,C,H,W (or C,H,W) up to 2147483647 "
            f"(Caffe's int), got {text!r}"
        )
    return shape


# ---------------------------------------------------------------- prototxt


def read_prototxt(path: str | Path) -> Any:
    """Parse a prototxt file into a ``NetParameter`` (V1 ``layers`` upgraded).

    A syntax error is a NetError naming the file, line and column protobuf reports.
    Prototxt of Caffe's forks is read through their dialects (:func:`_parse`).
    """
    return read_prototxt_dialect(path)[0]


def read_prototxt_dialect(path: str | Path) -> tuple[Any, Any]:
    """:func:`read_prototxt` and, for a file only the forks' dialects read, its
    :class:`~pynetbuilder.dialects.DialectRead` (else None)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a UTF-8 text file"
        raise UsageError(f"cannot read {path}: {reason}") from None
    net, dialect = _parse(text, path)
    return _finish(net, path), dialect


def _parse(text: str, path: Path) -> tuple[Any, Any]:
    """Strict parse; when the strict schema refuses the text, the forks' dialects
    (:mod:`pynetbuilder.dialects`) are tried: their fields normalised, a field no
    dialect knows marks its layer not analysed."""
    net = caffe_pb2.NetParameter()
    try:
        prototext.parse(text, net)
        return net, None
    except Exception as exc:
        if not prototext.is_parse_error(exc):
            raise
        from pynetbuilder.dialects import parse_dialect

        dialect = parse_dialect(text, path)
        return dialect.net, dialect


def _finish(net: Any, path: Path) -> Any:
    if net.layers:
        if net.layer:
            raise NetError(
                f"{path}: mixes the old 'layers' and the new 'layer' format; use one"
            )
        _upgrade_v1(net)
    if not net.layer and not net.input:
        raise NetError(f"{path}: the net has no layers and no inputs")
    return net


def _load_prototxt(
    path: str, phase: str, input_shape: tuple[int, ...] | None
) -> Inspected:
    full, dialect = read_prototxt_dialect(path)
    untrusted = dialect.untrusted if dialect is not None else {}
    net = filter_phase(full, phase)
    where = f"{path} ({phase} phase)" if phase != "deploy" else path
    check_topology(net, where)
    inputs, declared, notes = input_shapes(net, input_shape, Path(path).parent)
    report = analyze(
        net, inputs=inputs, declared=declared, blocks=derive_blocks(net),
        phase=phase, skip=untrusted,
    )
    if not report.name:
        report.name = Path(path).stem
    if dialect is not None:
        notes = [*dialect.notes, *notes]
    notes = [*notes, *in_place_notes(report.rows, inputs)]
    return Inspected(path, net, report, "prototxt", phase, tuple(notes))


def in_place_notes(rows: Sequence[Any], inputs: dict[str, Shape]) -> list[str]:
    """A note per layer computed in place that changes its blob's shape (what Caffe
    computes there is not defined; see :func:`~pynetbuilder.inference.in_place_reshapes`)."""
    from pynetbuilder.inference import in_place_reshapes

    return [f"layer {row.name!r} ({row.type}) computes in place but changes the shape of "
            f"{row.tops[0]!r} from {shape_text(before)} to {shape_text(after)}: Caffe "
            "reshapes the blob before reading it, so its output is not defined (give the "
            "layer a top of its own)"
            for row, before, after in in_place_reshapes(rows, inputs)]


# Caffe's NetState for a phase name; deploy nets are built in TEST (caffe.Net(f, TEST)).
_CAFFE_PHASES = {"train": caffe_pb2.TRAIN, "test": caffe_pb2.TEST, "deploy": caffe_pb2.TEST}


def filter_phase(net: Any, phase: str) -> Any:
    """The layers Caffe keeps in ``phase`` (Net::FilterNet's rules), as a new net."""
    state = caffe_pb2.NetState()
    state.CopyFrom(net.state)
    state.phase = _CAFFE_PHASES[phase]
    kept = caffe_pb2.NetParameter()
    kept.CopyFrom(net)
    del kept.layer[:]
    kept.state.CopyFrom(state)
    for layer in net.layer:
        if layer.include:
            keep = any(_meets(state, rule) for rule in layer.include)
        else:
            keep = not any(_meets(state, rule) for rule in layer.exclude)
        if keep:
            kept.layer.append(layer)
    return kept


def _meets(state: Any, rule: Any) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def check_topology(net: Any, where: str) -> None:
    """Refuse what Caffe refuses: a bottom no earlier layer produces (naming a later
    producer, or the cycle it belongs to) and a blob written by two layers unless in place."""
    available = set(net.input)
    for i, layer in enumerate(net.layer):
        for b in layer.bottom:
            if b not in available:
                raise NetError(f"{where}: {_missing_bottom(net, i, b, available)}")
        for j, top in enumerate(layer.top):
            inplace = j < len(layer.bottom) and layer.bottom[j] == top
            if top in available and not inplace:
                raise NetError(
                    f"{where}: layer {layer.name!r} writes blob {top!r}, which an earlier "
                    "layer already produced (Caffe: 'produced by multiple sources'); only a "
                    "layer writing in place (top equal to its bottom) may reuse a blob"
                )
            available.add(top)


def _missing_bottom(net: Any, index: int, blob: str, available: set[str]) -> str:
    layers = list(net.layer)
    layer = layers[index]
    later = [k for k in range(index + 1, len(layers)) if blob in layers[k].top]
    if not later:
        from difflib import get_close_matches

        named = next((la for la in layers[:index] if la.name == blob and la.top), None)
        close = get_close_matches(blob, sorted(available), n=1)
        if named is not None:  # a layer and its top named apart (SqueezeNet 1.1's conv10)
            tops = " and ".join(repr(t) for t in named.top)
            hint = f" (layer {blob!r} writes {tops})"
        else:
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"layer {layer.name!r} reads blob {blob!r}, which no layer produces{hint}")
    cycle = _cycle_through(layers, index)
    if cycle:
        path = " -> ".join(repr(layers[k].name) for k in [*cycle, cycle[0]])
        return (f"layer {layer.name!r} reads blob {blob!r} in a cycle: {path} (each "
                "feeds the next; a Caffe net must be acyclic)")
    return (f"layer {layer.name!r} reads blob {blob!r} before layer "
            f"{layers[later[0]].name!r} produces it; Caffe runs layers in file order, so "
            "move the producer above its reader")


def _cycle_through(layers: list[Any], start: int) -> list[int]:
    """Layer indices of a cycle through ``layers[start]`` when bottoms are resolved to
    any producer (in-place writes ignored), or [] if there is none."""
    producers: dict[str, list[int]] = {}
    for k, layer in enumerate(layers):
        for j, top in enumerate(layer.top):
            if not (j < len(layer.bottom) and layer.bottom[j] == top):
                producers.setdefault(top, []).append(k)

    def feeders(k: int) -> list[int]:
        return [p for b in layers[k].bottom for p in producers.get(b, []) if p != k]

    # depth-first search from start's producers back to start
    stack: list[tuple[int, list[int]]] = [(start, [start])]
    seen: set[int] = set()
    while stack:
        k, path = stack.pop()
        for p in feeders(k):
            if p == start:
                return list(reversed(path))
            if p not in seen:
                seen.add(p)
                stack.append((p, [*path, p]))
    return []


# ---------------------------------------------------------------- input shapes


def input_shapes(
    net: Any, given: tuple[int, ...] | None, folder: Path | None = None
) -> tuple[dict[str, Shape], dict[str, list[Shape]], list[str]]:
    """``(inputs, declared, notes)`` for :func:`~pynetbuilder.report.analyze`: the
    shapes of header inputs, of ``Input`` layers and of data layers' tops, with
    ``given`` (``--input-shape``) applied as the module doc says.  ``folder`` is
    where relative data sources are looked up first (the prototxt's folder; then
    the working directory, where Caffe looks)."""
    from pynetbuilder.report import header_inputs

    if net.input_dim and len(net.input_dim) != 4 * len(net.input):
        raise NetError(
            f"{len(net.input)} input(s) need 4 input_dim values each (N, C, H, W), got "
            f"{len(net.input_dim)}"
        )
    if net.input_shape and len(net.input_shape) != len(net.input):
        raise NetError(
            f"{len(net.input)} input(s) need one input_shape each, got {len(net.input_shape)}"
        )
    header = header_inputs(net)
    for name in net.input:
        if name not in header and given is None:
            raise UsageError(
                f"input {name!r} of the net has no shape (input_dim / input_shape); "
                "give --input-shape N,C,H,W"
            )
    inputs_layers = [la for la in net.layer if la.type == "Input"]
    declared: dict[str, list[Shape]] = {}
    inputs: dict[str, Shape] = {}
    notes: list[str] = []
    n_inputs = len(net.input) + sum(max(len(la.top), 1) for la in inputs_layers)
    if given is not None and n_inputs > 1:
        names = [*net.input, *(t for la in inputs_layers for t in la.top)]
        raise UsageError(
            f"--input-shape applies to a net with one input; this one has {n_inputs} "
            f"({', '.join(names)})"
        )
    for name in net.input:
        if given is not None:
            inputs[name] = _replace(header.get(name), given, f"input {name!r}")
            notes.append(f"input {name!r}: {_fmt(inputs[name])} (from --input-shape)")
            # as for Input layers: the net itself declares the new shape (what is run in
            # Caffe or written from it must not keep the old input_dim / input_shape)
            del net.input_dim[:]
            del net.input_shape[:]
            net.input_shape.add().dim.extend(inputs[name])
    for layer in inputs_layers:
        shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
        if given is not None:
            old = shapes[0] if shapes else None
            declared[layer.name] = [_replace(old, given, f"Input layer {layer.name!r}")]
            notes.append(f"Input layer {layer.name!r}: {_fmt(declared[layer.name][0])} "
                         "(from --input-shape)")
            # the rule reads input_param: give it the new shape
            del layer.input_param.shape[:]
            layer.input_param.shape.add().dim.extend(declared[layer.name][0])
        elif not shapes:
            raise UsageError(
                f"Input layer {layer.name!r} declares no shape; give --input-shape N,C,H,W"
            )
    for layer in net.layer:
        if kind_of(layer.type).source:  # a data layer: its tops' shapes are not in the text
            shapes, note = _data_shapes(layer, given, folder)
            declared[layer.name] = shapes
            notes.append(note)
    return inputs, declared, notes


def _replace(old: Shape | None, given: tuple[int, ...], what: str) -> Shape:
    if old is None:
        return given if len(given) != 3 else (1, *given)
    if len(given) == len(old):
        return given
    if len(given) == len(old) - 1:
        return (old[0], *given)
    raise UsageError(
        f"--input-shape {_fmt(given)} does not fit {what} of shape {_fmt(old)}: give "
        f"{len(old)} numbers (or {len(old) - 1} to keep the batch size {old[0]})"
    )


def _fmt(shape: Sequence[int]) -> str:
    return ",".join(map(str, shape))


def _data_shapes(
    layer: Any, given: tuple[int, ...] | None, folder: Path | None
) -> tuple[list[Shape], str]:
    """Top shapes of one data layer and a note saying where the numbers came from.

    As Caffe's DataTransformer::InferBlobShape: the image's channels and size, the
    size replaced by ``old_resize_param`` height / width (each when > 0) or
    ImageData's ``new_height`` x ``new_width`` (both > 0), then by the crop
    (``crop_size``, else ``crop_h`` / ``crop_w`` each when > 0); batch_size images.
    """
    if layer.type == "HDF5Data":
        return _hdf5_shapes(layer, given, folder)
    t = layer.transform_param
    entry = kind_of(layer.type)
    if layer.type == "DenseImageData":  # SegNet's: its settings come through its dialect
        from pynetbuilder.dialects.schema import dialect_view

        p = dialect_view(layer).dense_image_data_param
    else:
        p = getattr(layer, entry.source)
    batch, source = p.batch_size, p.source
    what = {"IMAGE_LIST": "image list", "WINDOW_FILE": "window file"}.get(entry.reads, "database")
    origin = ["batch from batch_size"]
    channels: int | None = None
    h: int | None = None
    w: int | None = None
    if given is not None:
        channels = given[-3] if len(given) >= 3 else given[0]
        if len(given) >= 3:
            h, w = given[-2:]
        origin.append("image from --input-shape")
    else:
        found = _peek_source(layer, source, folder)
        if found is not None:
            channels, h, w = found
            origin.append(f"image from {source}")
    resized = []
    if t.HasField("old_resize_param"):
        r = t.old_resize_param
        if r.height > 0:
            h = r.height
            resized.append("height")
        if r.width > 0:
            w = r.width
            resized.append("width")
    if layer.type in ("ImageData", "ImageSegData") and p.new_height > 0 and p.new_width > 0:
        h, w = p.new_height, p.new_width
        resized.append("new_height x new_width")
    if resized:
        origin.append("resize " + ", ".join(resized))
    crop_h, crop_w = (t.crop_size, t.crop_size) if t.crop_size else (t.crop_h, t.crop_w)
    if crop_h:
        h = crop_h
    if crop_w:
        w = crop_w
    if crop_h or crop_w:
        origin.append("crop")
    if channels is None or h is None or w is None:
        needs = "C" if h is not None and w is not None else "C,H,W"
        raise UsageError(
            f"{layer.type} layer {layer.name!r}: the shape of its data is not in the "
            f"prototxt and its {what} {source!r} cannot be read; give --input-shape {needs}"
            f" (the batch size {batch} comes from batch_size"
            f"{', the image size from the crop' if needs == 'C' else ''})"
        )
    data: Shape = (batch, channels, h, w)
    shapes = [data, *_label_shapes(layer, batch, (h, w), folder)][: max(len(layer.top), 1)]
    note = f"{layer.type} layer {layer.name!r}: {_fmt(data)} ({', '.join(origin)})"
    return shapes, note


def _label_shapes(layer: Any, batch: int, size: tuple[int, int], folder: Path | None
                  ) -> list[Shape]:
    """The shapes of a data layer's tops after its data: one label per image; SegNet's
    DenseImageData and DeepLab's ImageSegData read a label image the data's size
    (dense_image_data_layer.cpp, image_seg_data_layer.cpp: N x 1 x H x W) and
    ImageSegData's third top holds each image's height and width (N x 1 x 1 x 2)."""
    if layer.type == "AnnotatedData":
        return [_annotation_shape(layer, batch, folder)]
    if layer.type in ("DenseImageData", "ImageSegData"):
        return [(batch, 1, *size), (batch, 1, 1, 2)]
    return [(batch,)]


def _bases(folder: Path | None) -> tuple[Path, ...]:
    """Where relative data sources are looked up: the prototxt's folder, then the
    working folder (where Caffe looks)."""
    return (*([folder] if folder is not None else []), Path.cwd())


def _first_record(layer: Any, folder: Path | None) -> Any:
    """The first record of a data layer's source (:mod:`pynetbuilder.datasource`), or
    None when there is none or it cannot be read (then the user is asked)."""
    from pynetbuilder import datasource

    try:
        kind, source, options = datasource.layer_source(layer)
        if not source:
            return None
        path = datasource.resolve(source, _bases(folder))
        inner = (path.parent, Path.cwd())  # names inside a list file
        return datasource.first_record(path, kind, options, bases=inner)
    except UsageError:
        return None


def _peek_source(layer: Any, source: str, folder: Path | None) -> tuple[int, ...] | None:
    """(C, H, W) of the first record of a data layer's source, or None if unreadable."""
    if kind_of(layer.type).reads not in ("database", "IMAGE_LIST"):  # records are images
        return None
    first = _first_record(layer, folder)
    return first.shape if first is not None else None


def _annotation_shape(layer: Any, batch: int, folder: Path | None) -> Shape:
    """AnnotatedData's label top at set-up: ``1 x 1 x boxes x 8`` for the boxes of the
    first record (at least 1; unreadable: 1), ``batch x 1 x 1 x 1`` without annotations.
    It grows or shrinks with the boxes of each batch."""
    first = _first_record(layer, folder)
    if first is None:
        return (1, 1, 1, 8)
    if first.boxes is None:
        return (batch, 1, 1, 1)
    return (1, 1, max(first.boxes, 1), 8)


def _hdf5_shapes(
    layer: Any, given: tuple[int, ...] | None, folder: Path | None
) -> tuple[list[Shape], str]:
    p = layer.hdf5_data_param
    batch = p.batch_size
    first = _first_record(layer, folder)
    if first is not None:
        shapes = [(batch, *first.datasets[top]) for top in layer.top]
        return shapes, f"HDF5Data layer {layer.name!r}: shapes from {p.source}, batch {batch}"
    if given is not None and len(layer.top) == 1:
        shape = (batch, *(given[1:] if len(given) == 4 else given))
        return [shape], (f"HDF5Data layer {layer.name!r}: {_fmt(shape)} (batch from "
                         "batch_size, the rest from --input-shape)")
    raise UsageError(
        f"HDF5Data layer {layer.name!r}: its top shapes come from its HDF5 files and "
        f"{p.source!r} cannot be read"
        + ("; --input-shape can stand in only for a layer with one top"
           if len(layer.top) > 1 else "; give --input-shape C,H,W")
    )


# ---------------------------------------------------------------- blocks


def block_of_name(name: str) -> str:
    """A prototxt layer's block from its name: the part before the first ``/``
    (``inception_3a/1x1`` -> ``inception_3a``, ``conv2_1/dw`` -> ``conv2_1``), else
    before the first ``_`` (``res2a_branch2a`` -> ``res2a``, ``conv1_2`` -> ``conv1``),
    else the whole name (``pool5``)."""
    if "/" in name:
        return name.split("/", 1)[0] or name
    return name.split("_", 1)[0] or name


def derive_blocks(net: Any) -> dict[str, str]:
    """Layer name -> block for a ``NetParameter``: :func:`block_of_name`, except that a
    layer writing in place joins the block of its blob's producer (``bn2a_branch2a``
    on ``res2a_branch2a`` belongs to ``res2a``)."""
    producer_block: dict[str, str] = {name: block_of_name(name) for name in net.input}
    blocks: dict[str, str] = {}
    for layer in net.layer:
        inplace = bool(layer.top) and list(layer.top) == list(layer.bottom[: len(layer.top)])
        if inplace and layer.bottom[0] in producer_block:
            block = producer_block[layer.bottom[0]]
        else:
            block = block_of_name(layer.name)
        blocks[layer.name] = block
        for top in layer.top:
            producer_block[top] = block
    return blocks


class BlockTotals(NamedTuple):
    """The summed figures of one block's layers."""

    block: str
    layers: int
    params: int
    macs: int
    activations: int


def block_rows(inspected: Inspected) -> list[BlockTotals]:
    """Totals per block (:meth:`Inspected.groups`), blocks in order of first layer."""
    groups = inspected.groups()
    sums: dict[str, list[int]] = {}
    for row in inspected.report.rows:
        s = sums.setdefault(groups[row.name], [0, 0, 0, 0])
        s[0] += 1
        s[1] += row.params
        s[2] += row.macs
        s[3] += row.activations
    return [BlockTotals(name, *s) for name, s in sums.items()]


# ---------------------------------------------------------------- V1 upgrade


_V1_COPIED = ("name", "bottom", "top", "include", "exclude", "loss_weight")


def _upgrade_v1(net: Any) -> None:
    """Rewrite ``layers { type: CONVOLUTION ... }`` as ``layer { type: "Convolution" }``:
    type names, the ``*_param`` messages both formats share, and ``blobs_lr`` /
    ``weight_decay`` / ``param`` names as ``param { lr_mult decay_mult name }``."""
    layer_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    type_names = caffe_pb2.V1LayerParameter.LayerType
    for old in net.layers:
        new = net.layer.add()
        for name in _V1_COPIED:
            value = getattr(old, name)
            if name in ("name",):
                if value:
                    new.name = value
            else:
                getattr(new, name).extend(value)
        enum_name = type_names.Name(old.type)
        new_type = v1_type(enum_name)
        if new_type is None:
            raise NetError(f"old-format layer {old.name!r} has no type (V1 type {enum_name})")
        new.type = new_type
        for field, value in old.ListFields():
            if field.name.endswith("_param") and field.name in layer_fields:
                getattr(new, field.name).CopyFrom(value)
        n = max(len(old.blobs_lr), len(old.weight_decay), len(old.param))
        for i in range(n):
            spec = new.param.add()
            if i < len(old.param):
                spec.name = old.param[i]
            if i < len(old.blobs_lr):
                spec.lr_mult = old.blobs_lr[i]
            if i < len(old.weight_decay):
                spec.decay_mult = old.weight_decay[i]
    del net.layers[:]


# ---------------------------------------------------------------- registry models


def _load_model(
    spec: str, knobs: Sequence[str], phase: str, input_shape: tuple[int, ...] | None
) -> Inspected:
    from pynetbuilder.models import FAMILIES
    from pynetbuilder.models.spec import build_model, model_name, parse_model_spec

    if model_name(spec) not in FAMILIES.names():
        raise UsageError(
            f"{spec!r} is neither a prototxt file nor a model; known models: "
            + ", ".join(FAMILIES.names())
        )
    built = build_model(parse_model_spec([spec, *knobs]))
    proto = built.to_proto(phase)
    if input_shape is None:
        report = built.report(phase)
        notes: list[str] = []
    else:
        inputs, declared, notes = input_shapes(proto, input_shape)
        for layer_name, shapes in built.declared_shapes(phase).items():
            declared.setdefault(layer_name, shapes)
        report = analyze(proto, inputs=inputs, declared=declared,
                         blocks=built.blocks(phase), phase=phase)
    report.phase = phase
    label = spec if not knobs else f"{spec} {' '.join(knobs)}"
    return Inspected(label, proto, report, "model", phase, tuple(notes))


def shape_text(shape: Sequence[int]) -> str:
    """``1x3x224x224`` (``scalar`` for a 0-d blob)."""
    return "x".join(map(str, shape)) or "scalar"

