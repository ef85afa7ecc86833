"""The lego protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynetbuilder.graph import Net, Phase


class Lego:
    """Something that attaches layers to a net: ``attach(net, bottoms) -> tops``."""

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def __call__(self, net: Net, *bottoms: str) -> Any:
        tops = self.attach(net, list(bottoms))
        return tops[0] if len(tops) == 1 else tops


class LayerLego(Lego):
    """One Caffe layer of any type; ``params`` go where Caffe's net_spec puts them."""

    def __init__(
        self,
        layer_type: str,
        name: str,
        *,
        inplace: bool = False,
        ntop: int = 1,
        phases: frozenset[Phase] | None = None,
        **params: Any,
    ):
        self.layer_type = layer_type
        self.name = name
        self.inplace = inplace
        self.ntop = ntop
        self.phases = phases
        self.params = params

    def _configure(self, layer_type: str, name: str, params: dict[str, Any],
                   extra: dict[str, Any]) -> None:
        """``__init__`` for subclasses that build ``params`` themselves: ``extra`` (their
        ``**extra``) adds parameters, except ``inplace``/``ntop``/``phases``, which are
        the lego's own options, as in ``__init__``."""
        inplace, ntop, phases = False, 1, None
        if extra:
            inplace = extra.pop("inplace", False)
            ntop = extra.pop("ntop", 1)
            phases = extra.pop("phases", None)
            params.update(extra)
        self.layer_type, self.name, self.params = layer_type, name, params
        self.inplace, self.ntop, self.phases = inplace, ntop, phases

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        return net.add(self.layer_type, bottoms, self.name, self.params, inplace=self.inplace,
                       ntop=self.ntop, phases=self.phases)
