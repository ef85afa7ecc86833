"""What each dataset family of models reads by default, and its classification head."""

from __future__ import annotations

from pynetbuilder.graph import Net
from pynetbuilder.legos import ClassificationData, InnerProduct, Pool
from pynetbuilder.models.heads import classification_outputs

# Per-channel means in BGR order (Caffe's DataTransformer subtracts them).
CIFAR_MEAN_BGR = (113.9, 123.0, 125.3)
IMAGENET_MEAN_BGR = (104.0, 117.0, 123.0)
INPUT_SIZE = {"cifar": 32, "imagenet": 224}


def default_data(dataset: str) -> ClassificationData:
    """The data lego a family uses when none is given: LMDB folders under ``data/``."""
    if dataset == "cifar":
        return ClassificationData(
            "data/cifar/train_lmdb", "data/cifar/test_lmdb", batch_size=128,
            test_batch_size=100, crop_size=32, mean_values=CIFAR_MEAN_BGR,
        )
    return ClassificationData(
        "data/imagenet/train_lmdb", "data/imagenet/val_lmdb", crop_size=224,
        mean_values=IMAGENET_MEAN_BGR,
    )


def start(name: str, dataset: str, data: ClassificationData | None) -> tuple[Net, str, str]:
    """A new net with its data layers: ``(net, data blob, label blob)``."""
    net = Net(name)
    x, label = (data or default_data(dataset)).attach(net, [])
    return net, x, label


def outputs(net: Net, logits: str, label: str, dataset: str) -> None:
    """Loss (train/test), accuracy (test: top-1, and top-5 on ImageNet), prob (deploy)."""
    classification_outputs(net, logits, label, top_k=(1,) if dataset == "cifar" else (1, 5))


def pool_and_classify(net: Net, x: str, label: str, num_classes: int, dataset: str) -> None:
    """Global average pooling, one fully connected classifier ``fc``, then :func:`outputs`."""
    x = Pool("pool", "AVE", global_pooling=True)(net, x)
    logits = InnerProduct("fc", num_classes)(net, x)
    outputs(net, logits, label, dataset)
