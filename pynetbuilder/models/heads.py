"""Pieces shared by classification models: the loss, accuracy and probability outputs."""

from __future__ import annotations

from pynetbuilder.graph import Net
from pynetbuilder.legos import Accuracy, Softmax, SoftmaxWithLoss


def classification_outputs(
    net: Net, logits: str, label: str, top_k: tuple[int, ...] = (1, 5)
) -> None:
    """SoftmaxWithLoss (train, test), Accuracy per ``top_k`` (test), Softmax ``prob`` (deploy)."""
    SoftmaxWithLoss("loss").attach(net, [logits, label])
    for k in top_k:
        Accuracy(f"accuracy_top{k}", top_k=k).attach(net, [logits, label])
    Softmax("prob").attach(net, [logits])
