"""ResNet + FPN backbone: our ResNet body (with named outputs) under torchvision's FPN.

State-dict keys are torchvision's ``maskrcnn_resnet50_fpn`` ones: ``body.<resnet keys>`` and
``fpn.inner_blocks.<i>.0/.1``, ``fpn.layer_blocks.<i>.0/.1`` (conv, norm), exactly as the
``BackboneWithFPN`` this replaces gave. ``body`` is the :class:`~gn_det.modeling.backbone.resnet.ResNet`
itself (not a copy into an ``IntermediateLayerGetter``), so its methods (``freeze``,
``out_channels``, ``out_strides``, ...) work on the detector's backbone.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from gn_det.layers.conv_norm import standardize_conv_norm_pairs
from gn_det.layers.norm import NormSpec, get_norm_layer
from gn_det.modeling.backbone.resnet import ResNet, build_resnet_from_cfg
from gn_det.modeling.cfg_norm import norm_from_cfg

__all__ = ["ResNetFPN", "build_resnet_fpn_backbone", "FPN_IN_FEATURES"]

# The ResNet outputs an FPN level can read (the stem is not one, as in detectron2).
FPN_IN_FEATURES = ("res2", "res3", "res4", "res5")


class ResNetFPN(nn.Module):
    """A feature pyramid over a ResNet's named outputs, with torchvision's FPN and key names.

    The forward returns an OrderedDict of ``out_channels``-channel maps named "0", "1", ... (one
    per ``body.out_features``, finest first) and "pool" (a max-pooled extra level for the RPN),
    as torchvision's ``BackboneWithFPN``.

    Args:
        body: a 2D :class:`ResNet` built with ``out_features`` (an increasing subset of
            "res2".."res5"), already frozen as MODEL.BACKBONE.FREEZE_AT says. Used as-is.
        out_channels: FPN channels.
        fpn_norm: the FPN's norm; "+WS" makes the FPN convs that feed a norm WS convs.
            "" (default): no norm, convs with bias.

    Attributes:
        body: the ResNet.
        fpn: torchvision's ``FeaturePyramidNetwork`` with ``LastLevelMaxPool``.
        out_channels (int): channels of every output level (read by torchvision's detectors).
        in_features: the body outputs feeding the FPN, in order ("res2", ...).
    """

    def __init__(self, body: ResNet, out_channels: int, fpn_norm: str | NormSpec = "") -> None:
        super().__init__()
        if getattr(body, "out_features", None) is None:
            raise ValueError("ResNetFPN needs a ResNet built with out_features, e.g. "
                             "build_resnet(50, 'GN', out_features=['res2', 'res3', 'res4', 'res5'])")
        if body.dim != 2:
            raise ValueError(f"ResNetFPN is for images (dim=2); the body has dim={body.dim}")
        bad = [f for f in body.out_features if f not in FPN_IN_FEATURES]
        if bad:
            raise ValueError(f"the body's out_features {body.out_features} include {bad}; an FPN reads only "
                             f"{list(FPN_IN_FEATURES)}")
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels_list=[body.out_channels[f] for f in body.out_features],
                                         out_channels=out_channels, extra_blocks=LastLevelMaxPool(),
                                         norm_layer=get_norm_layer(fpn_norm))
        standardize_conv_norm_pairs(self.fpn, fpn_norm)
        self.out_channels = out_channels
        self.in_features: list[str] = list(body.out_features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body(x)
        # The FPN names its levels after its inputs: "0", "1", ..., as the RoI poolers expect.
        return self.fpn(OrderedDict((str(i), feats[name]) for i, name in enumerate(self.in_features)))


def build_resnet_fpn_backbone(cfg) -> ResNetFPN:
    """Constructs a ResNet-FPN backbone from the config.

    Reads MODEL.RESNETS.* (depth, norm, groups, stride placement), MODEL.BACKBONE.FREEZE_AT,
    MODEL.RESNETS.OUT_FEATURES (any increasing subset of res2..res5), MODEL.FPN.NORM and
    MODEL.FPN.OUT_CHANNELS. A max-pooled extra level ("pool") follows the last one, as in
    detectron2 and torchvision. With "+WS" in MODEL.FPN.NORM the FPN convs that feed a norm
    are Weight-Standardized.

    Returns:
        a :class:`ResNetFPN` (``body``, ``fpn``, ``out_channels``) whose forward gives an
        OrderedDict of feature maps "0", "1", ..., "pool".
    """
    out_features = list(cfg.MODEL.RESNETS.OUT_FEATURES)
    unknown = [f for f in out_features if f not in FPN_IN_FEATURES]
    if unknown or not out_features:
        raise ValueError(f"MODEL.RESNETS.OUT_FEATURES = {out_features}: each entry must be one of "
                         f"{list(FPN_IN_FEATURES)} for an FPN backbone")
    if out_features != sorted(set(out_features)):
        raise ValueError(f"MODEL.RESNETS.OUT_FEATURES = {out_features} must be increasing and without repeats")

    body = build_resnet_from_cfg(cfg, out_features=out_features)
    fpn_norm = norm_from_cfg(cfg, cfg.MODEL.FPN.NORM, "MODEL.FPN.NORM")
    return ResNetFPN(body, int(cfg.MODEL.FPN.OUT_CHANNELS), fpn_norm)
