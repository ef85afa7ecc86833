"""Drawings of a net with Graphviz: one node per layer, or one node per block.

Input is a ``NetParameter`` and its :class:`~pynetbuilder.report.Report` (a row per
analysed layer; a layer the report skipped is drawn dashed, "not analysed"), so a
registry model and a prototxt read from disk are drawn the same way.

Conventions:

- **Folding.**  A layer that writes in place (its tops are its first bottoms:
  BatchNorm, Scale, ReLU, Dropout ...) is drawn inside the node of the layer that
  produced the blob, as a ``+ BN + Scale + ReLU`` line, as Netron does.  Other
  layers are one node each; a blob no layer writes (the prototxt's ``input:``
  header) is an ``Input`` node.  An edge goes from the node that last wrote a blob
  to each node that reads it.
- **Node label**: layer name, type and key settings (kernel ``3x3``, stride ``s2``,
  pad ``p1``, group ``g32``, dilation ``d2``, ``-> 64`` outputs; pooling method and
  window; Eltwise operation ...), the folded layers, and the output shape(s) of the
  node (``NxCxHxW``; after the folded layers, which keep the shape).
- **Groups** (clusters in the layer view, nodes in the block view) are the report
  rows' ``block``: for a net built from legos, the innermost lego block each layer
  was made in; for a prototxt, :func:`pynetbuilder.inspect.load` derives them from
  layer names (``res2a_branch2a`` -> ``res2a``, ``inception_3a/1x1`` ->
  ``inception_3a``; :func:`pynetbuilder.inspect.block_of_name`), and a report with
  no blocks at all gets the same derivation here.  A node's group is that of its
  drawn layer.  A group with fewer than two drawn nodes (``conv1`` with its BN and
  ReLU folded in), or one holding every layer, is not drawn as a group: its nodes
  stand alone.  Inside a cluster a node's name drops the cluster's name and the
  ``_`` or ``/`` after it (``stage1_block1_branch2a`` shows ``branch2a``).
- **Block view**: one node per group with its layer count, learnable params and
  MACs (summed over the group's layers, folded ones included) and the output
  shape of its last node; layers outside groups keep their own node.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.kinds import Shape, kind_of
from pynetbuilder.kinds.convolution import dims
from pynetbuilder.report import Report

LEVELS = ("layer", "block")
RANKDIRS = ("TB", "LR", "BT", "RL")
FORMATS = ("svg", "png", "pdf", "dot")  # dot: the Graphviz source itself

# ---------------------------------------------------------------- per type (the registry)

FILL_BLOCK = "#ddd9f0"
FILL_OTHER = "#ffffff"


def settings_of(layer: Any) -> str:
    """The key settings of a ``LayerParameter`` as a short text ("" if none): its
    kind's summary (:mod:`pynetbuilder.kinds`)."""
    describe = kind_of(layer.type).summary
    return describe(layer) if describe else ""


def fill_of(layer_type: str) -> str:
    """A node's fill colour: its kind's, ``block`` nodes' own, else white."""
    if layer_type == "block":
        return FILL_BLOCK
    return kind_of(layer_type).fill or FILL_OTHER


def short_name(layer_type: str) -> str:
    """A type's name in the ``+ ...`` line of folded layers (``BN``)."""
    return kind_of(layer_type).short or layer_type


# ---------------------------------------------------------------- the diagram


@dataclass(slots=True)
class Node:
    """One drawn node: a layer with the in-place layers folded into it, or a block."""

    id: str
    name: str
    type: str  # the layer type; "block" for a block of the block view
    settings: str
    shapes: tuple[Shape, ...]
    group: str = ""  # the block (cluster) it is drawn in; "" for none
    folded: list[tuple[str, str]] = field(default_factory=list)  # (type, settings)
    layers: list[str] = field(default_factory=list)  # every layer drawn here, in order
    params: int = 0
    macs: int = 0
    skipped: bool = False  # holds a layer the report could not analyse


@dataclass(slots=True)
class Diagram:
    """Nodes, edges between node ids (no duplicates, in first-seen order), and which
    group (block) each layer belongs to (the same grouping at both levels)."""

    name: str
    level: str
    nodes: list[Node]
    edges: list[tuple[str, str]]
    layer_groups: dict[str, str]
    note: str = ""  # why this view was drawn instead of the one asked for

    def groups(self) -> dict[str, list[Node]]:
        """Group name -> its nodes, in the order groups first appear."""
        found: dict[str, list[Node]] = {}
        for node in self.nodes:
            if node.group:
                found.setdefault(node.group, []).append(node)
        return found


def _set_groups(nodes: list[Node], blocks: dict[str, str]) -> None:
    """Give each node the block of its first layer, where that block has >= 2 nodes."""
    for node in nodes:
        node.group = blocks.get(node.layers[0], "") if node.layers else ""
    sizes = Counter(node.group for node in nodes if node.group)
    if len(sizes) == 1 and sum(sizes.values()) == sum(1 for n in nodes if n.layers):
        sizes.clear()  # one block holding every layer says nothing
    for node in nodes:
        if sizes.get(node.group, 0) < 2:
            node.group = ""


def layer_diagram(net: Any, report: Report) -> Diagram:
    """The layer view of ``net`` (a ``NetParameter``) whose figures are ``report``.

    A layer of ``net`` without a row (``report.skipped``: not analysed) is drawn
    with its type and settings, no shape and a dashed outline.
    """
    rows = {row.name: row for row in report.rows}
    names = {layer.name for layer in net.layer}
    stray = [name for name in rows if name not in names]
    if stray:
        raise NetError(f"the report of {report.name!r} has layers the net lacks: {stray[:3]}")
    nodes: list[Node] = []
    by_layer: dict[str, Node] = {}
    writer: dict[str, Node] = {}  # blob -> node that last wrote it
    edges: dict[tuple[str, str], None] = {}

    def source(blob: str) -> Node:
        node = writer.get(blob)
        if node is None:  # a net input from the prototxt header
            shape = report.blob_shapes.get(blob)
            node = Node(f"n{len(nodes)}", blob, "Input", "", (shape,) if shape else ())
            nodes.append(node)
            writer[blob] = node
        return node

    for layer in net.layer:
        row = rows.get(layer.name)
        bottoms, tops = list(layer.bottom), list(layer.top)
        shapes = row.shapes if row is not None else ()
        if tops and tops == bottoms[: len(tops)] and bottoms[0] in writer:  # in place: fold
            node = writer[bottoms[0]]
            node.folded.append((layer.type, settings_of(layer)))
            node.shapes = shapes
            sources = [source(b) for b in bottoms[len(tops):]]  # Scale's 2nd bottom
        else:
            sources = [source(b) for b in bottoms]
            node = Node(f"n{len(nodes)}", layer.name, layer.type, settings_of(layer), shapes)
            nodes.append(node)
        if row is None:
            node.skipped = True
        for src in sources:
            if src is not node:
                edges[(src.id, node.id)] = None
        node.layers.append(layer.name)
        if row is not None:
            node.params += row.params
            node.macs += row.macs
        by_layer[layer.name] = node
        for top in tops:
            writer[top] = node

    blocks = {row.name: row.block for row in report.rows if row.block}
    if not blocks:
        from pynetbuilder.inspect import derive_blocks

        blocks = derive_blocks(net)
    _set_groups(nodes, blocks)
    kept = {node.group for node in nodes}
    layer_groups = {}
    for name, node in by_layer.items():
        group = blocks.get(name, "")
        layer_groups[name] = group if group in kept else node.group
    return Diagram(report.name, "layer", nodes, list(edges), layer_groups)


def block_diagram(layers: Diagram, report: Report) -> Diagram:
    """The block view: one node per group of ``layers``; ungrouped nodes stay as they are.

    A layer counts towards its own group (``layers.layer_groups``) when that group has
    a node, else towards the node it is drawn in.
    """
    rows = {row.name: row for row in report.rows}
    key_of: dict[str, Node] = {}  # layer-view node id -> block-view node
    nodes: list[Node] = []
    blocks: dict[str, Node] = {}
    kinds: dict[str, Counter[str]] = {}
    for node in layers.nodes:
        if not node.group:
            key_of[node.id] = Node(f"b{len(nodes)}", node.name, node.type, node.settings,
                                   node.shapes, "", list(node.folded), skipped=node.skipped)
            nodes.append(key_of[node.id])
            continue
        block = blocks.get(node.group)
        if block is None:
            block = blocks[node.group] = Node(f"b{len(nodes)}", node.group, "block", "", ())
            kinds[node.group] = Counter()
            nodes.append(block)
        block.shapes = node.shapes  # the last node's output
        kinds[node.group][node.type] += 1
        key_of[node.id] = block
    for node in layers.nodes:
        for name in node.layers:
            target = blocks.get(layers.layer_groups.get(name, ""), key_of[node.id])
            target.layers.append(name)
            row = rows.get(name)
            if row is None:
                target.skipped = True
            else:
                target.params += row.params
                target.macs += row.macs
    for group, block in blocks.items():
        block.settings = f"{len(block.layers)} layers: " + ", ".join(
            f"{n} {kind}" for kind, n in kinds[group].most_common()
        )
    edges: dict[tuple[str, str], None] = {}
    for a, b in layers.edges:
        pair = (key_of[a].id, key_of[b].id)
        if pair[0] != pair[1]:
            edges[pair] = None
    return Diagram(layers.name, "block", nodes, list(edges), dict(layers.layer_groups))


# Graphviz's layout time grows faster than the nodes: about 2 s for 1,300 nodes and 10 s
# for 2,850 on this project's machine; a 100,000-layer net did not finish in 400 s.
MAX_NODES = 2000


def diagram(net: Any, report: Report, level: str = "layer", *,
            max_nodes: int = MAX_NODES) -> Diagram:
    """The diagram of ``net`` at ``level`` (``layer`` or ``block``).

    A layer view of more than ``max_nodes`` nodes becomes the block view (its
    ``note`` says so) when that one is small enough; otherwise, or when the block
    view itself is too large, :class:`UsageError` says why and what to do, before
    Graphviz is started.
    """
    if level not in LEVELS:
        raise UsageError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    layers = layer_diagram(net, report)
    if level == "layer" and len(layers.nodes) <= max_nodes:
        return layers
    blocks = block_diagram(layers, report)
    if len(blocks.nodes) > max_nodes:
        raise UsageError(
            f"the drawing would have {len(layers.nodes):,} nodes ({len(blocks.nodes):,} in "
            f"the block view); Graphviz lays out at most {max_nodes:,} in seconds "
            "(analyze gives the figures of any size)"
        )
    if level == "layer":
        blocks.note = (f"block view: the layer view would have {len(layers.nodes):,} nodes, "
                       f"more than the {max_nodes:,} Graphviz lays out in seconds")
    return blocks


# ---------------------------------------------------------------- Graphviz


def human(n: int) -> str:
    """A count in K/M/G with three significant digits (``3.86 G``)."""
    if n < 1000:
        return str(n)
    exp = min(int(math.log10(n)) // 3, 4)
    value = n / 1000**exp
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {' KMGT'[exp]}"


def shape_text(shapes: Sequence[Shape]) -> str:
    return ", ".join(dims(s) or "scalar" for s in shapes)


def _label(node: Node, level: str) -> str:
    """A Graphviz HTML-like label (text escaped)."""
    name = node.name
    cut = len(node.group)
    if level == "layer" and cut and name.startswith(node.group) and name[cut:cut + 1] in ("_", "/"):
        name = name[cut + 1:] or name  # the cluster's label says the rest
    lines = [f"<B>{html.escape(name)}</B>"]
    cost = f"{human(node.params)} params \u00b7 {human(node.macs)} MACs"
    if node.type == "block":  # three lines: the composition is in the tooltip
        lines.append(html.escape(f"{len(node.layers)} layers \u00b7 {cost}"))
    else:
        head = " ".join(x for x in (node.type, node.settings) if x)
        lines.append(html.escape(head))
        if node.folded:
            lines.append(html.escape(" ".join(
                f"+ {short_name(t)}{' ' + s if s else ''}" for t, s in node.folded
            )))
        if level == "block" and (node.params or node.macs):
            lines.append(html.escape(cost))
    if node.shapes:
        lines.append(f'<FONT COLOR="#444444">{html.escape(shape_text(node.shapes))}</FONT>')
    if node.skipped:
        lines.append('<FONT COLOR="#a61c00">not analysed</FONT>')
    return "<" + "<BR/>".join(lines) + ">"


def _tooltip(node: Node) -> str:
    text = f"{node.name}: {node.params:,} params, {node.macs:,} MACs"
    if node.type == "block":
        text += f"; {node.settings}"
    elif len(node.layers) > 1:
        text += f"; {len(node.layers)} layers: " + ", ".join(node.layers[:12])
        if len(node.layers) > 12:
            text += ", ..."
    return text


def to_graphviz(d: Diagram, rankdir: str = "TB") -> Any:
    """A ``graphviz.Digraph`` of the diagram (lego blocks as labelled clusters)."""
    import graphviz

    if rankdir not in RANKDIRS:
        raise UsageError(f"rankdir must be one of {', '.join(RANKDIRS)}, not {rankdir!r}")
    g = graphviz.Digraph(
        d.name or "net",
        graph_attr={"rankdir": rankdir, "fontname": "DejaVu Sans", "fontsize": "11",
                    "nodesep": "0.25", "ranksep": "0.3" if d.level == "layer" else "0.2",
                    "label": d.name, "labelloc": "t"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "DejaVu Sans",
                   "fontsize": "10", "margin": "0.08,0.04", "penwidth": "0.8"},
        edge_attr={"arrowsize": "0.6", "penwidth": "0.8", "color": "#555555"},
    )

    def add(target: Any, node: Node) -> None:
        kind = "block" if node.type == "block" else "input" if not node.layers else "layer"
        extra = {"style": "rounded,filled,dashed"} if node.skipped else {}
        target.node(node.id, _label(node, d.level), tooltip=_tooltip(node),
                    fillcolor=fill_of(node.type), id=f"{kind}:{node.name}",
                    **extra)

    groups = d.groups() if d.level == "layer" else {}
    for node in d.nodes:
        if not node.group or d.level == "block":
            add(g, node)
    for i, (group, members) in enumerate(groups.items()):
        with g.subgraph(name=f"cluster_{i}") as c:
            c.attr(label=group, style="rounded,dashed", color="#7a6fb0", fontcolor="#3d3670",
                   fontsize="10")
            for node in members:
                add(c, node)
    for a, b in d.edges:
        g.edge(a, b)
    return g


def render_diagram(d: Diagram, fmt: str = "svg", rankdir: str = "TB") -> bytes:
    """A diagram drawn as ``fmt`` bytes (svg, png, pdf, or dot = Graphviz source).

    Raises :class:`UsageError` for an unknown format or rankdir, or when Graphviz's
    ``dot`` program is not installed.
    """
    if fmt not in FORMATS:
        raise UsageError(f"drawing format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    g = to_graphviz(d, rankdir)
    if fmt == "dot":
        return g.source.encode()
    import graphviz

    try:
        return g.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise UsageError(
            "Graphviz's dot program is not installed; install it with "
            "`apt-get install graphviz` (or run tools/browser_setup.py as root)"
        ) from None
    except graphviz.CalledProcessError as exc:
        last = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise NetError(f"Graphviz failed to draw the net: {last[-1] if last else exc}") from None


def render(net: Any, report: Report, fmt: str = "svg", *, level: str = "layer",
           rankdir: str = "TB") -> bytes:
    """``net`` (a ``NetParameter``) and its ``report`` drawn at ``level`` as ``fmt`` bytes."""
    if fmt not in FORMATS:
        raise UsageError(f"drawing format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return render_diagram(diagram(net, report, level), fmt, rankdir)


def block_costs(d: Diagram) -> list[Node]:
    """The block view's nodes that have params or MACs (for a cost chart)."""
    return [n for n in d.nodes if n.params or n.macs]


__all__ = [
    "LEVELS", "RANKDIRS", "FORMATS", "Node", "Diagram", "settings_of",
    "layer_diagram", "block_diagram", "diagram", "to_graphviz", "render_diagram", "render",
    "human", "shape_text", "block_costs",
]
