"""pynetbuilder: compose Caffe networks from legos and size them exactly.

    from pynetbuilder import Net, legos
    net = Net("tiny")
    ...
    net.to_proto("deploy")     # a caffe_pb2.NetParameter
    net.report()               # per-layer shapes, params, MACs

See README.md for the conventions used in reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pynetbuilder.errors import NetError, ShapeError, UsageError

if TYPE_CHECKING:
    from pynetbuilder.graph import Net, Phase

__all__ = ["Net", "NetError", "Phase", "ShapeError", "UsageError"]
__version__ = "0.1.0"

_LAZY = {"Net": "pynetbuilder.graph", "Phase": "pynetbuilder.graph"}


def __getattr__(name: str) -> object:
    """``Net`` and ``Phase`` load the builder on first use: importing any part of the
    package (``pynetbuilder.errors``, a command that only reads prototxt) does not."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pynetbuilder' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
