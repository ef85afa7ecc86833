"""A self-contained HTML page about one net: summary, drawings, layer table, cost per block.

The page is rendered from the Jinja2 templates in ``pynetbuilder/templates``
(``report.html.j2`` with ``report.css`` and ``report.js`` inlined): no file, font,
script or style is fetched from anywhere, so it opens offline and can be mailed.

Conventions:

- figures are those of :class:`~pynetbuilder.report.Report` (README "Conventions");
- the drawings are :mod:`pynetbuilder.draw`'s SVG, inlined: the block view when the
  net has blocks (lego blocks, or name-derived ones for a prototxt) and the layer
  view, each in a collapsible section (the layer view starts folded when there is a
  block view);
- "cost per block" has one bar pair (MACs, params) per node of the block view that
  has any (a block, or a layer outside blocks with its folded layers), scaled to
  the largest;
- the table sorts when a column header is clicked (numbers largest first, text
  A-Z; a second click reverses); its script marks the page's root element with
  ``data-script="ok"`` once it has run without error.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pynetbuilder import draw
from pynetbuilder.kinds import Category, types_with
from pynetbuilder.report import Report

_SVG_START = re.compile(r"<svg\b")
_SVG_ID = re.compile(r'\b(id|xlink:href|href)="(#?)')


def inline_svg(svg: bytes | str, prefix: str) -> str:
    """Graphviz SVG ready to sit inside HTML: no XML prolog, ids made unique by ``prefix``."""
    text = svg.decode() if isinstance(svg, bytes) else svg
    match = _SVG_START.search(text)
    if match is None:
        raise ValueError("not an SVG document")
    text = text[match.start():]
    return _SVG_ID.sub(lambda m: f'{m.group(1)}="{m.group(2)}{prefix}-', text)


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pynetbuilder", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["thousands"] = lambda n: f"{n:,}"
    env.filters["human"] = draw.human
    return env


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def render_html(
    net: Any,
    report: Report,
    *,
    title: str = "",
    notes: Sequence[str] = (),
    rankdir: str = "TB",
) -> str:
    """The page for ``net`` (a ``NetParameter``) and its ``report``, as text.

    Raises what :func:`pynetbuilder.draw.render` raises (Graphviz missing, bad rankdir).
    """
    layers = draw.layer_diagram(net, report)
    blocks = draw.block_diagram(layers, report)
    has_blocks = len(blocks.nodes) < len(layers.nodes)
    drawings = []
    for d, label in ((blocks, "blocks"), (layers, "layers")):
        if d is blocks and not has_blocks:
            continue
        if len(d.nodes) > draw.MAX_NODES:  # Graphviz would take minutes: see draw.diagram
            continue
        svg = draw.render_diagram(d, "svg", rankdir)
        drawings.append({
            "id": f"drawing-{label}",
            "title": f"{'Block' if d is blocks else 'Layer'} view: {len(d.nodes)} nodes",
            "open": d is blocks or not has_blocks,
            "svg": inline_svg(svg, label),
        })
    totals = report.totals
    costs = draw.block_costs(blocks)
    top_macs = max((n.macs for n in costs), default=0)
    top_params = max((n.params for n in costs), default=0)
    bars = [
        {
            "name": n.name,
            "kind": "block" if n.type == "block" else n.type,
            "layers": len(n.layers),
            "macs": n.macs,
            "params": n.params,
            "macs_width": _pct(n.macs, top_macs),
            "params_width": _pct(n.params, top_params),
            "macs_share": _pct(n.macs, totals.macs),
            "params_share": _pct(n.params, totals.params),
        }
        for n in costs
    ]
    rows = [
        {
            "index": i,
            "name": r.name,
            "type": r.type,
            "block": layers.layer_groups.get(r.name, "") or r.block,
            "shape": draw.shape_text(r.shapes),
            "params": r.params,
            "macs": r.macs,
            "activations": r.activations,
            "macs_share": _pct(r.macs, totals.macs),
        }
        for i, r in enumerate(report.rows, 1)
    ]
    inputs = [(n.name, draw.shape_text(n.shapes)) for n in layers.nodes
              if n.type in types_with(Category.INPUT | Category.DATA)]
    skipped = list(getattr(report, "skipped", ()))
    return _environment().get_template("report.html.j2").render(
        title=title or report.name,
        net_name=report.name,
        phase=report.phase or "deploy",
        totals=totals,
        inputs=inputs,
        types=Counter(r.type for r in report.rows).most_common(),
        notes=list(notes),
        skipped=skipped,
        drawings=drawings,
        bars=bars,
        rows=rows,
        legacy=report.legacy_lines().splitlines(),
    )

