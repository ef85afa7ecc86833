#!/usr/bin/env python3
"""Compose a small CIFAR-sized residual net from legos, write it, print its report.

    .venv/bin/python examples/cifar_resnet.py [OUTPUT_FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from pynetbuilder import Net  # noqa: E402
from pynetbuilder.graph import prototxt_files  # noqa: E402
from pynetbuilder.io import write_files  # noqa: E402
from pynetbuilder.legos import (  # noqa: E402
    ClassificationData,
    ConvBNReLU,
    InnerProduct,
    Pool,
    ShortcutLego,
)
from pynetbuilder.models.heads import classification_outputs  # noqa: E402


def cifar_resnet(train_lmdb: str = "data/cifar10/train_lmdb",
                 test_lmdb: str = "data/cifar10/test_lmdb") -> Net:
    net = Net("cifar_resnet")
    data = ClassificationData(train_lmdb, test_lmdb, batch_size=64, test_batch_size=100,
                              crop_size=32, mean_values=(125.3, 123.0, 113.9))
    x, label = data.attach(net, [])
    x = ConvBNReLU("conv1", 16, 3)(net, x)
    for stage, width in enumerate((16, 32, 64), start=1):
        for block in (1, 2):
            stride = 2 if stage > 1 and block == 1 else 1
            x = ShortcutLego(f"stage{stage}_block{block}", "normal", width, stride=stride)(net, x)
    x = Pool("pool", "AVE", global_pooling=True)(net, x)
    logits = InnerProduct("fc", 10)(net, x)
    classification_outputs(net, logits, label, top_k=(1,))
    return net


if __name__ == "__main__":
    net = cifar_resnet()
    if len(sys.argv) > 1:
        folder = Path(sys.argv[1])
        for path in write_files({folder / n: t for n, t in prototxt_files(net).items()}):
            print(f"wrote {path}")
    print(net.report().table())
