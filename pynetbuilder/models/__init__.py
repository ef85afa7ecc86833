"""Known architecture families, as plain functions of explicit knobs, and their registry.

``build(name, **knobs)`` returns the lego-built :class:`~pynetbuilder.Net`;
``list()`` names every family.  Each module of this package that defines a
``FAMILIES`` list of :class:`Family` (function, dataset, named reference
configurations) contributes those families, and :data:`MODULES` names the module of
each family, so a command imports only the family it builds (a test checks the table
against every module); ``registry.py`` has the rules a family function follows.
"""

from __future__ import annotations

import builtins
from types import MappingProxyType
from typing import Any

from pynetbuilder.graph import Net
from pynetbuilder.models.registry import Family, KnobError, Registry
from pynetbuilder.models.resnet_imagenet import resnet_imagenet

# family name -> the module of this package whose FAMILIES list defines it
MODULES = MappingProxyType({
    "alexnet": "alexnet", "densenet": "densenet", "mobilenet": "mobilenet",
    "pyramidnet": "pyramidnet", "resnet": "resnet_cifar", "resnet_imagenet": "resnet_imagenet",
    "resnet_preact": "resnet_preact", "se_resnet_preact": "resnet_preact",
    "resnext": "resnext", "shake_shake": "shake_shake", "squeezenet": "squeezenet",
    "tresnet": "tresnet", "vgg": "vgg_cifar", "vgg16": "vgg_imagenet", "vgg19": "vgg_imagenet",
    "wrn": "wrn",
})

FAMILIES = Registry(__name__, MODULES)


def build(name: str, data: Any = None, **knobs: Any) -> Net:
    """Build family ``name`` with ``knobs`` (each checked; unknown ones refused)."""
    return FAMILIES[name].build(data=data, **knobs)


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public name
    """The names of every family."""
    return FAMILIES.names()


__all__ = ["FAMILIES", "Family", "KnobError", "build", "list", "resnet_imagenet"]
