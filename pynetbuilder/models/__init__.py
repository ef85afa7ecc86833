"""Known architecture families, as plain functions of explicit knobs, and their registry.

``build(name, **knobs)`` returns the lego-built :class:`~pynetbuilder.Net`;
``list()`` names every family.  Each module of this package that defines a
``FAMILIES`` list of :class:`Family` (function, dataset, named reference
configurations) contributes those families; ``registry.py`` has the rules a
family function follows.
"""

from __future__ import annotations

import builtins
import importlib
import pkgutil
from typing import Any

from pynetbuilder.graph import Net
from pynetbuilder.models.registry import Family, KnobError, Registry
from pynetbuilder.models.resnet_imagenet import resnet_imagenet


def _discover() -> builtins.list[Family]:
    """Every ``FAMILIES`` list of a module in this package, in module-name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "FAMILIES", []))
    return found


FAMILIES = Registry(_discover())


def build(name: str, data: Any = None, **knobs: Any) -> Net:
    """Build family ``name`` with ``knobs`` (each checked; unknown ones refused)."""
    return FAMILIES[name].build(data=data, **knobs)


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public name
    """The names of every family."""
    return FAMILIES.names()


__all__ = ["FAMILIES", "Family", "KnobError", "build", "list", "resnet_imagenet"]
