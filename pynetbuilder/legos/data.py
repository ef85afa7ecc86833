"""Data legos: the real data layers of train/test nets and the deploy input."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net, Phase
from pynetbuilder.legos.base import Lego

BACKENDS = ("LMDB", "LEVELDB")


@dataclass(frozen=True)
class ClassificationData(Lego):
    """Images and labels from a Caffe database (``Data`` layer, LMDB by default).

    TRAIN: random ``crop_size`` crops and (unless ``mirror=False``: digits and text
    are not symmetric) mirroring; TEST: the centre crop (Caffe's
    DataTransformer crops the centre in TEST); deploy: an ``Input`` layer of shape
    ``deploy_batch x channels x crop_size x crop_size``.  The mean is subtracted
    per channel (``mean_values``, BGR order as Caffe's ImageNet models) or from a
    ``mean_file`` (a mean.binaryproto).  Tops: ``data`` and ``label`` (deploy: ``data``).

    An immutable value: change a field with ``dataclasses.replace(data, crop_size=28)``
    (the checks run again).
    """

    train_source: str
    test_source: str
    _: KW_ONLY
    batch_size: int = 32
    test_batch_size: int = 25
    crop_size: int = 224
    channels: int = 3
    mean_values: tuple[float, ...] | None = (104.0, 117.0, 123.0)
    mean_file: str | None = None
    scale: float | None = None
    backend: str = "LMDB"
    deploy_batch: int = 1
    mirror: bool = True

    def __post_init__(self) -> None:
        for flag in ("batch_size", "test_batch_size", "crop_size", "channels", "deploy_batch"):
            value = getattr(self, flag)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{flag} must be a positive integer, got {value!r}")
        if self.backend not in BACKENDS:
            raise UsageError(
                f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.mean_values is not None:  # any sequence of numbers, kept as a tuple
            object.__setattr__(self, "mean_values", tuple(float(v) for v in self.mean_values))
            if not all(math.isfinite(v) for v in self.mean_values):
                raise UsageError("mean values must be finite numbers, got "
                                 + ",".join(f"{v:g}" for v in self.mean_values))
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale != 0):
            raise UsageError(f"scale must be a finite non-zero number, got {self.scale:g}")
        if self.mean_file and self.mean_values:
            raise UsageError("give either a mean file or mean values, not both")
        if self.mean_values and len(self.mean_values) not in (1, self.channels):
            need = "1 number" if self.channels == 1 else \
                f"1 or {self.channels} numbers (one per channel)"
            raise UsageError(f"mean values: {self.channels}-channel data needs {need}, "
                             f"got {len(self.mean_values)}")
        for flag, source in (("train source", self.train_source),
                             ("test source", self.test_source)):
            if not source:
                raise UsageError(f"the {flag} (a {self.backend} folder) must not be empty")

    def _transform(self, mirror: bool) -> dict[str, Any]:
        t: dict[str, Any] = {"crop_size": self.crop_size}
        if mirror:
            t["mirror"] = True
        if self.mean_file:
            t["mean_file"] = self.mean_file
        elif self.mean_values:
            t["mean_value"] = list(self.mean_values)
        if self.scale is not None:
            t["scale"] = self.scale
        return t

    def attach(self, net: Net, bottoms: Sequence[str]) -> list[str]:
        c, s = self.channels, self.crop_size
        for phase, source, batch, mirror in (
            (Phase.TRAIN, self.train_source, self.batch_size, self.mirror),
            (Phase.TEST, self.test_source, self.test_batch_size, False),
        ):
            net.layer(
                "Data",
                [],
                name="data",
                tops=["data", "label"],
                phases=frozenset({phase}),
                shapes={phase: [(batch, c, s, s), (batch,)]},
                transform_param=self._transform(mirror),
                source=source,
                batch_size=batch,
                backend=self.backend,
            )
        net.layer(
            "Input",
            [],
            name="data",
            tops=["data"],
            phases=frozenset({Phase.DEPLOY}),
            shape=[{"dim": [self.deploy_batch, c, s, s]}],
        )
        return ["data", "label"]
