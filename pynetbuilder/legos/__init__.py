"""Legos: blocks that attach layers to a :class:`pynetbuilder.Net`.

Every lego follows one protocol: ``lego.attach(net, bottoms) -> tops`` (blob
names).  Calling a lego, ``lego(net, *bottoms)``, does the same and returns the
single top directly when there is one.
"""

from pynetbuilder.legos.base import LayerLego, Lego
from pynetbuilder.legos.blocks import (
    MAIN_BRANCHES,
    BNReLU,
    ConvBN,
    ConvBNReLU,
    ConvReLU,
    EltwiseReLU,
    ShortcutLego,
)
from pynetbuilder.legos.data import ClassificationData
from pynetbuilder.legos.primitives import (
    Accuracy,
    BatchNorm,
    Concat,
    Conv,
    Dropout,
    Eltwise,
    InnerProduct,
    Input,
    Pool,
    ReLU,
    Scale,
    Softmax,
    SoftmaxWithLoss,
)

__all__ = [
    "MAIN_BRANCHES",
    "Accuracy",
    "BNReLU",
    "BatchNorm",
    "ClassificationData",
    "Concat",
    "Conv",
    "ConvBN",
    "ConvBNReLU",
    "ConvReLU",
    "Dropout",
    "Eltwise",
    "EltwiseReLU",
    "InnerProduct",
    "Input",
    "LayerLego",
    "Lego",
    "Pool",
    "ReLU",
    "Scale",
    "ShortcutLego",
    "Softmax",
    "SoftmaxWithLoss",
]
