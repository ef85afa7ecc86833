"""Deploy-target profiles: what a toolchain accepts, read from a TOML data file.

A profile (``pynetbuilder/targets/profiles/NAME.toml``) describes one deployment
toolchain's Caffe front end.  Every rule names the vendor document it comes from
(a key of the file's ``[sources]`` table: title and URL or repository path), so a
violation can be traced to its origin and a profile corrected in one place.

Keys (all but ``name``, ``title`` and ``sources`` optional)::

    name = "rknn2"                       # what --target takes
    title = "Rockchip RKNN-Toolkit2"
    [sources.ops]                        # every rule's `source` names one of these
    title = "RKNN-Toolkit2 OPs support (1.4.0)"
    url = "https://github.com/..."
    [format]                             # each value a table {value, source, note}
    deploy_only       = {value = true, source = "ops"}    # no data, loss, accuracy layers
    inputs            = {value = ["layer", "shape", "dim"], source = "ops"}  # allowed styles
    v1_layers         = {value = false, source = "ops"}   # the old `layers {}` format
    bn_global_stats   = {value = true, source = "ops"}    # BatchNorm needs use_global_stats
    pooling_rounding  = {value = "floor", source = "ops"} # ceil | floor | caffe (below)
    unknown_fields    = {value = ["pooling_param.ceil_mode"], source = "ops"}
    broken_fields     = {value = ["eltwise_param.coeff"], source = "ops"}  # read, done wrong
    broken_types      = {value = ["Axpy"], source = "ops"}  # created, computed otherwise
    input_channels    = {value = [1, 3], source = "ops"}  # channels of the net's inputs
    explicit_stride   = {value = ["Deconvolution"], source = "ops"}  # types whose unset
                                         # stride the target misreads (Caffe's default: 1)
    [layers]
    supported = ["Convolution", ...]     # or origins = ["bvlc"] (the registry's origin)
    source = "ops"
    [layers.fixes]                       # type -> how to rewrite it for this target
    ConvolutionDepthwise = "type Convolution with group = num_output"
    [[limits]]
    types = ["Convolution"]
    quantity = "kernel"                  # see QUANTITIES
    min = 1
    max = 31                             # or allowed = [2, 4, 8]
    source = "ops"
    note = "NPU limit"
    [[unverified]]                       # what the documents do not say (listed, not checked)
    what = "Pooling kernel limits"
    source = "ops"

``pooling_rounding``: ``caffe``, the target sizes pooling as Caffe does (ceil unless
``ceil_mode: false`` / ``round_mode: FLOOR``, the last window dropped when it would
start in the padding); ``floor``, it always floors; ``ceil``, it always rounds up and
keeps a last window that starts in the padding (MNN's ``PoolPadType_CAFFE``).
``broken_fields``: fields the target's parser reads but whose layers it converts or
runs differently from Caffe (whatever value they are set to).  ``broken_types``: layer
types the target creates (so they stay in ``supported``, which lists what it accepts)
but computes differently from the layer's own Caffe; the note says how, and the fix.
``explicit_stride``: layer types whose stride the target reads only when it is written
(``stride``, or ``stride_h`` and ``stride_w``); Caffe's default for an unset one is 1
(``base_conv_layer.cpp``, ``pooling_layer.cpp``), which ``--target`` writes.

A file that does not parse, or uses a key or value outside the above, is a
:class:`ProfileError` naming the file and line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pynetbuilder.errors import UsageError

PROFILES = Path(__file__).with_name("profiles")

# what a limit can be about (per layer; kernel/stride/pad/dilation per spatial axis)
QUANTITIES = {
    "kernel": "kernel size",
    "stride": "stride",
    "pad": "padding",
    "dilation": "dilation",
    "group": "group",
    "input_channels": "input channels",
    "output_channels": "output channels",
    "input_height": "input height",
    "input_width": "input width",
    "output_height": "output height",
    "output_width": "output width",
    "axis": "axis",
    "bottoms": "number of inputs",
}
INPUT_STYLES = ("layer", "shape", "dim")  # Input layer, input: + input_shape, input: + input_dim
ROUNDINGS = ("ceil", "floor", "caffe")
_FORMAT_KEYS = {
    "deploy_only": bool, "v1_layers": bool, "bn_global_stats": bool,
    "inputs": list, "pooling_rounding": str, "unknown_fields": list, "input_channels": list,
    "broken_fields": list, "broken_types": list, "explicit_stride": list,
}


class ProfileError(UsageError):
    """A profile file that does not parse or holds something outside the format."""


class Source(NamedTuple):
    key: str
    title: str
    url: str

    def cite(self) -> str:
        return f"{self.title} ({self.url})" if self.url else self.title


class FormatRule(NamedTuple):
    value: Any
    source: Source
    note: str = ""


class Limit(NamedTuple):
    types: tuple[str, ...]
    quantity: str
    source: Source
    min: int | None = None
    max: int | None = None
    allowed: tuple[int, ...] = ()
    note: str = ""

    def text(self) -> str:
        if self.allowed:
            return "one of " + ", ".join(map(str, self.allowed))
        if self.min is not None and self.max is not None:
            return f"[{self.min}, {self.max}]"
        return f">= {self.min}" if self.min is not None else f"<= {self.max}"

    def admits(self, value: int) -> bool:
        if self.allowed:
            return value in self.allowed
        return ((self.min is None or value >= self.min)
                and (self.max is None or value <= self.max))


class Profile(NamedTuple):
    """One target (see the module's docstring)."""

    name: str
    title: str
    path: Path
    sources: Mapping[str, Source]
    format: Mapping[str, FormatRule]
    supported: frozenset[str]
    origins: frozenset[str]
    layers_source: Source | None
    fixes: Mapping[str, str]
    limits: tuple[Limit, ...]
    unverified: tuple[tuple[str, Source], ...]

    def supports(self, layer_type: str, origin: str) -> bool:
        return layer_type in self.supported or origin in self.origins

    def rule(self, key: str) -> FormatRule | None:
        return self.format.get(key)


def known_targets() -> list[str]:
    """Names of the profiles shipped in the package."""
    return sorted(p.stem for p in PROFILES.glob("*.toml"))


def load_profile(target: str) -> Profile:
    """The profile named ``target`` (a shipped name) or read from a ``.toml`` path.

    An unknown name is a UsageError listing the known ones; a file that does not
    parse, a ProfileError with file and line."""
    path = Path(target)
    if not target.endswith(".toml"):
        path = PROFILES / f"{target}.toml"
        if not path.is_file():
            raise UsageError(f"unknown target {target!r}; known targets: "
                             + ", ".join(known_targets()))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read target profile {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{found.group(1)}:{found.group(2)}" if found else "?"
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ProfileError(f"{path}:{where}: target profile does not parse ({reason})"
                           ) from None
    return _build(path, text, data)


def _line_of(text: str, key: str) -> str:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*\[*\s*{re.escape(key)}\b", line) or f"{key} =" in line:
            return str(i)
    return "?"


def _build(path: Path, text: str, data: dict[str, Any]) -> Profile:
    def fail(key: str, message: str) -> ProfileError:
        return ProfileError(f"{path}:{_line_of(text, key)}: {message}")

    for key in ("name", "title", "sources"):
        if key not in data:
            raise fail(key, f"target profile has no {key!r}")
    unknown = set(data) - {"name", "title", "sources", "format", "layers", "limits",
                           "unverified"}
    if unknown:
        key = sorted(unknown)[0]
        raise fail(key, f"unknown key {key!r} in a target profile")
    sources = {}
    for key, entry in data["sources"].items():
        if not isinstance(entry, dict) or "title" not in entry:
            raise fail(key, f"source {key!r} needs a title (and a url)")
        sources[key] = Source(key, entry["title"], entry.get("url", ""))

    def source(key: str, where: str) -> Source:
        if key not in sources:
            raise fail(where, f"{where}: source {key!r} is not in [sources] "
                              f"({', '.join(sources)})")
        return sources[key]

    rules = {}
    for key, entry in data.get("format", {}).items():
        kind = _FORMAT_KEYS.get(key)
        if kind is None:
            raise fail(key, f"unknown format rule {key!r}; known: {', '.join(_FORMAT_KEYS)}")
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), kind):
            raise fail(key, f"format rule {key!r} needs value = <{kind.__name__}> and a source")
        if key == "inputs" and not set(entry["value"]) <= set(INPUT_STYLES):
            raise fail(key, f"inputs takes {', '.join(INPUT_STYLES)}")
        if key == "pooling_rounding" and entry["value"] not in ROUNDINGS:
            raise fail(key, f"pooling_rounding takes {', '.join(ROUNDINGS)}")
        rules[key] = FormatRule(entry["value"], source(entry.get("source", ""), key),
                                entry.get("note", ""))
    layers = data.get("layers", {})
    layers_source = source(layers["source"], "layers") if layers else None
    limits = []
    for i, entry in enumerate(data.get("limits", [])):
        quantity = entry.get("quantity")
        if quantity not in QUANTITIES:
            raise fail("quantity", f"limit {i + 1}: quantity {quantity!r} is not one of "
                                   f"{', '.join(QUANTITIES)}")
        if not ({"min", "max", "allowed"} & set(entry)):
            raise fail("quantity", f"limit {i + 1}: needs min, max or allowed")
        limits.append(Limit(tuple(entry["types"]), quantity,
                            source(entry.get("source", ""), "limits"), entry.get("min"),
                            entry.get("max"), tuple(entry.get("allowed", ())),
                            entry.get("note", "")))
    unverified = tuple((e["what"], source(e.get("source", ""), "unverified"))
                       for e in data.get("unverified", []))
    return Profile(data["name"], data["title"], path, sources, rules,
                   frozenset(layers.get("supported", ())), frozenset(layers.get("origins", ())),
                   layers_source, dict(layers.get("fixes", {})), tuple(limits), unverified)
