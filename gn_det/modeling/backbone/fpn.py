"""ResNet + FPN backbone: our ResNet body inside torchvision's BackboneWithFPN.

State-dict keys are torchvision's ``maskrcnn_resnet50_fpn`` ones: ``body.<resnet keys>`` and
``fpn.inner_blocks.<i>.0/.1``, ``fpn.layer_blocks.<i>.0/.1`` (conv, norm).
"""

from __future__ import annotations

from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from gn_det.layers.conv_norm import standardize_conv_norm_pairs
from gn_det.layers.norm import NormSpec, get_norm_layer
from gn_det.modeling.backbone.resnet import ResNet, build_resnet_from_cfg
from gn_det.modeling.cfg_norm import norm_from_cfg

__all__ = ["ResNetFPN", "build_resnet_fpn_backbone", "fpn_feature_names"]

_RES_TO_LAYER = {"res2": "layer1", "res3": "layer2", "res4": "layer3", "res5": "layer4"}


def fpn_feature_names(cfg) -> list[str]:
    """Names of the FPN levels the RoI poolers read ("0", "1", ...; the extra "pool" is RPN-only)."""
    return [str(i) for i in range(len(cfg.MODEL.RESNETS.OUT_FEATURES))]


class ResNetFPN(BackboneWithFPN):
    """torchvision's BackboneWithFPN over our ResNet, remembering what the body is.

    ``BackboneWithFPN`` copies the body's layers into an ``IntermediateLayerGetter``, so the
    facts weight loading needs are kept here: ``body_norm`` (a NormSpec) and ``stride_in_1x1``.

    Args:
        body: the ResNet (already frozen as MODEL.BACKBONE.FREEZE_AT says).
        layers: the ResNet stages to read, in order ("layer1".."layer4"); named "0", "1", ...
        out_channels: FPN channels.
        fpn_norm: the FPN's norm; "+WS" makes the FPN convs that feed a norm WS convs.
    """

    def __init__(self, body: ResNet, layers: list[str], out_channels: int, fpn_norm: NormSpec) -> None:
        super().__init__(body, return_layers={layer: str(i) for i, layer in enumerate(layers)},
                         in_channels_list=[body.stage_channels[layer] for layer in layers],
                         out_channels=out_channels, extra_blocks=LastLevelMaxPool(),
                         norm_layer=get_norm_layer(fpn_norm))
        standardize_conv_norm_pairs(self.fpn, fpn_norm)
        self.body_norm = body.norm
        self.stride_in_1x1 = body.stride_in_1x1


def build_resnet_fpn_backbone(cfg) -> ResNetFPN:
    """Constructs a ResNet-FPN backbone from the config.

    Reads MODEL.RESNETS.* (depth, norm, groups, stride placement), MODEL.BACKBONE.FREEZE_AT,
    MODEL.RESNETS.OUT_FEATURES (any increasing subset of res2..res5), MODEL.FPN.NORM and
    MODEL.FPN.OUT_CHANNELS. A max-pooled extra level ("pool") follows the last one, as in
    detectron2 and torchvision. With "+WS" in MODEL.FPN.NORM the FPN convs that feed a norm
    are Weight-Standardized.

    Returns:
        a :class:`ResNetFPN`: torchvision's ``BackboneWithFPN`` (``body``, ``fpn``,
        ``out_channels``) whose forward gives an OrderedDict of feature maps "0", "1", ..., "pool".
    """
    out_features = list(cfg.MODEL.RESNETS.OUT_FEATURES)
    unknown = [f for f in out_features if f not in _RES_TO_LAYER]
    if unknown or not out_features:
        raise ValueError(f"MODEL.RESNETS.OUT_FEATURES = {out_features}: each entry must be one of "
                         f"{list(_RES_TO_LAYER)} for an FPN backbone")
    layers = [_RES_TO_LAYER[f] for f in out_features]
    if layers != sorted(set(layers)):
        raise ValueError(f"MODEL.RESNETS.OUT_FEATURES = {out_features} must be increasing and without repeats")

    body = build_resnet_from_cfg(cfg)
    fpn_norm = norm_from_cfg(cfg, cfg.MODEL.FPN.NORM, "MODEL.FPN.NORM")
    return ResNetFPN(body, layers, int(cfg.MODEL.FPN.OUT_CHANNELS), fpn_norm)

