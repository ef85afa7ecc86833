"""Data legos: the real data layers of train/test nets and the deploy input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net, Phase
from pynetbuilder.legos.base import Lego

BACKENDS = ("LMDB", "LEVELDB")


class ClassificationData(Lego):
    """Images and labels from a Caffe database (``Data`` layer, LMDB by default).

    TRAIN: random ``crop_size`` crops and (unless ``mirror=False``: digits and text
    are not symmetric) mirroring; TEST: the centre crop (Caffe's
    DataTransformer crops the centre in TEST); deploy: an ``Input`` layer of shape
    ``deploy_batch x channels x crop_size x crop_size``.  The mean is subtracted
    per channel (``mean_values``, BGR order as Caffe's ImageNet models) or from a
    ``mean_file`` (a mean.binaryproto).  Tops: ``data`` and ``label`` (deploy: ``data``).
    """

    def __init__(
        self,
        train_source: str,
        test_source: str,
        *,
        batch_size: int = 32,
        test_batch_size: int = 25,
        crop_size: int = 224,
        channels: int = 3,
        mean_values: Sequence[float] | None = (104.0, 117.0, 123.0),
        mean_file: str | None = None,
        scale: float | None = None,
        backend: str = "LMDB",
        deploy_batch: int = 1,
        mirror: bool = True,
    ):
        for flag, value in (
            ("batch_size", batch_size),
            ("test_batch_size", test_batch_size),
            ("crop_size", crop_size),
            ("channels", channels),
            ("deploy_batch", deploy_batch),
        ):
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{flag} must be a positive integer, got {value!r}")
        if backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if mean_file and mean_values:
            raise UsageError("give either a mean file or mean values, not both")
        if mean_values and len(mean_values) not in (1, channels):
            raise UsageError(
                f"mean values need 1 or {channels} numbers (one per channel), "
                f"got {len(mean_values)}"
            )
        for flag, source in (("train source", train_source), ("test source", test_source)):
            if not source:
                raise UsageError(f"the {flag} (a {backend} folder) must not be empty")
        self.train_source, self.test_source = train_source, test_source
        self.batch_size, self.test_batch_size = batch_size, test_batch_size
        self.crop_size, self.channels, self.deploy_batch = crop_size, channels, deploy_batch
        self.mean_values, self.mean_file, self.scale = mean_values, mean_file, scale
        self.backend = backend
        self.mirror = mirror

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
