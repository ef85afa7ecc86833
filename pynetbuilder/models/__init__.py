"""Known architecture families, as plain functions of explicit knobs, and their registry.

``build(name, **knobs)`` returns the lego-built :class:`~pynetbuilder.Net`;
``list()`` names every family.  The families and their named reference
configurations are listed in :data:`FAMILIES` (see ``registry.py`` for the rules
a family function follows).
"""

from __future__ import annotations

import builtins
from typing import Any

from pynetbuilder.graph import Net
from pynetbuilder.models.registry import Family, KnobError, Registry
from pynetbuilder.models.resnet_imagenet import resnet_imagenet

FAMILIES = Registry(
    [
        Family(
            "resnet_imagenet",
            resnet_imagenet,
            "imagenet",
            {
                "ResNet-50": {"main_branch": "bottleneck", "num_output_stage1": 256},
                "ResNet-101": {
                    "main_branch": "bottleneck", "num_output_stage1": 256,
                    "blocks": (3, 4, 23, 3),
                },
                "ResNet-152": {
                    "main_branch": "bottleneck", "num_output_stage1": 256,
                    "blocks": (3, 8, 36, 3),
                },
                "ResNet-18": {
                    "main_branch": "normal", "num_output_stage1": 64, "blocks": (2, 2, 2, 2),
                },
                "ResNet-34": {
                    "main_branch": "normal", "num_output_stage1": 64, "blocks": (3, 4, 6, 3),
                },
            },
        ),
    ]
)


def build(name: str, data: Any = None, **knobs: Any) -> Net:
    """Build family ``name`` with ``knobs`` (each checked; unknown ones refused)."""
    return FAMILIES[name].build(data=data, **knobs)


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public name
    """The names of every family."""
    return FAMILIES.names()


__all__ = ["FAMILIES", "Family", "KnobError", "build", "list", "resnet_imagenet"]
