"""Backbones: one ResNet/ResNeXt for images and video, and the ResNet-FPN for detection."""

from .fpn import ResNetFPN, build_resnet_fpn_backbone
from .resnet import ResNet, build_resnet, build_resnet_from_cfg

__all__ = ["ResNet", "ResNetFPN", "build_resnet", "build_resnet_from_cfg", "build_resnet_fpn_backbone"]
