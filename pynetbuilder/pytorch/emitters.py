"""PyTorch emitters, found through the registry of layer kinds.

Each layer type's emitter is named in its entry (``LayerKind.torch``, a
``"module:function"`` of this package: :mod:`pynetbuilder.kinds`); this module turns
the name into the function.  Every emitter is a plain function ``(layer,
bottom_shapes, top_shapes, phase) -> CaffeLayer`` (``phase``: ``train``, ``test`` or
``deploy``).  Data layers have no emitter: their tops are the module's inputs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

from pynetbuilder.kinds import KINDS, kind_of
from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape

Emitter = Callable[[Any, list[Shape], list[Shape], str], CaffeLayer]


@cache
def _resolve(reference: str) -> Emitter:
    module, function = reference.split(":")
    return getattr(importlib.import_module(f"pynetbuilder.pytorch.{module}"), function)


def emitter_types() -> list[str]:
    """The layer types that have an emitter."""
    return sorted(t for t, k in KINDS.items() if k.torch)


def emitter_for(layer: Any) -> Emitter:
    """The emitter of ``layer``'s type; EmitError naming the layer and type if none."""
    reference = kind_of(layer.type).torch
    if not reference:
        raise EmitError(f"layer {layer.name!r} of type {layer.type!r} has no PyTorch emitter; "
                        f"types with one: {', '.join(emitter_types())}")
    return _resolve(reference)
