"""Box and mask heads from MODEL.ROI_BOX_HEAD / MODEL.ROI_MASK_HEAD, built from torchvision's.

Box head (NAME "FastRCNNConvFCHead", detectron2's name):
- NUM_CONV 0, NUM_FC 2 ("2fc", detectron2's default): torchvision's ``TwoMLPHead``
  (keys ``fc6``/``fc7``, as in torchvision's ``maskrcnn_resnet50_fpn`` checkpoints).
- anything else, e.g. the GN paper's "4conv1fc" (NUM_CONV 4, NUM_FC 1): torchvision's
  ``FastRCNNConvFCHead`` (keys ``<i>.0`` conv, ``<i>.1`` norm, then the Linear layers;
  ``maskrcnn_resnet50_fpn_v2`` uses this head).
Mask head: torchvision's ``MaskRCNNHeads`` with NUM_CONV convs of CONV_DIM channels.
Norms come from the norm factory; "+WS" makes the convs that feed a norm WS convs.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.ops import MultiScaleRoIAlign

from gn_det.layers.conv_norm import standardize_conv_norm_pairs
from gn_det.layers.norm import get_norm_layer
from gn_det.modeling.cfg_norm import norm_from_cfg

__all__ = ["build_box_head", "build_mask_head", "build_roi_pooler", "BOX_HEAD_NAMES"]

BOX_HEAD_NAMES = ("FastRCNNConvFCHead",)


def build_roi_pooler(featmap_names: list[str], resolution: int, sampling_ratio: int) -> MultiScaleRoIAlign:
    """torchvision's multi-level RoIAlign. ``sampling_ratio`` 0 means adaptive, as in detectron2."""
    return MultiScaleRoIAlign(featmap_names=featmap_names, output_size=int(resolution),
                              sampling_ratio=int(sampling_ratio))


def build_box_head(cfg, in_channels: int) -> tuple[nn.Module, int]:
    """Constructs the box head named by MODEL.ROI_BOX_HEAD.

    Args:
        cfg: the config (NAME, NUM_CONV, CONV_DIM, NUM_FC, FC_DIM, NORM, POOLER_RESOLUTION).
        in_channels: channels of the pooled features (the FPN's out_channels).

    Returns:
        (head, representation size fed to the box predictor).
    """
    h = cfg.MODEL.ROI_BOX_HEAD
    if h.NAME not in BOX_HEAD_NAMES:
        raise ValueError(f"MODEL.ROI_BOX_HEAD.NAME = {h.NAME!r} is not supported; choose one of {BOX_HEAD_NAMES}")
    num_conv, num_fc = int(h.NUM_CONV), int(h.NUM_FC)
    if num_conv < 0 or num_fc < 0 or num_conv + num_fc == 0:
        raise ValueError(f"MODEL.ROI_BOX_HEAD needs NUM_CONV >= 0 and NUM_FC >= 0, not both 0; "
                         f"got NUM_CONV={num_conv}, NUM_FC={num_fc}")
    res, fc_dim = int(h.POOLER_RESOLUTION), int(h.FC_DIM)
    norm = norm_from_cfg(cfg, h.NORM, "MODEL.ROI_BOX_HEAD.NORM")
    if num_conv == 0 and num_fc == 2:
        return TwoMLPHead(in_channels * res * res, fc_dim), fc_dim
    head = FastRCNNConvFCHead((in_channels, res, res), [int(h.CONV_DIM)] * num_conv, [fc_dim] * num_fc,
                              norm_layer=get_norm_layer(norm))
    standardize_conv_norm_pairs(head, norm)
    return head, fc_dim if num_fc else int(h.CONV_DIM) * res * res


def build_mask_head(cfg, in_channels: int) -> tuple[nn.Module, int]:
    """Constructs the mask head (MODEL.ROI_MASK_HEAD NUM_CONV x CONV_DIM 3x3 convs, NORM).

    Returns:
        (head, channels fed to the mask predictor).
    """
    h = cfg.MODEL.ROI_MASK_HEAD
    num_conv, conv_dim = int(h.NUM_CONV), int(h.CONV_DIM)
    if num_conv < 1:
        raise ValueError(f"MODEL.ROI_MASK_HEAD.NUM_CONV must be >= 1, got {num_conv}")
    norm = norm_from_cfg(cfg, h.NORM, "MODEL.ROI_MASK_HEAD.NORM")
    head = MaskRCNNHeads(in_channels, [conv_dim] * num_conv, 1, norm_layer=get_norm_layer(norm))
    standardize_conv_norm_pairs(head, norm)
    return head, conv_dim
