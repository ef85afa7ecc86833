"""Known architecture families, as plain functions of explicit knobs."""

from pynetbuilder.models.resnet_imagenet import resnet_imagenet

__all__ = ["resnet_imagenet"]
