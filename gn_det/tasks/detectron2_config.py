"""detectron2's own config files in the detection task: its keys, its defaults, what is refused.

A detectron2 user brings a YAML file (a model-zoo config with its ``_BASE_``, or the full
``config.yaml`` detectron2 writes into its output folder). Every key detectron2's
``config/defaults.py`` defines is accepted by the detection task, and each value is

- honoured: the key means the same in gn_det (most MODEL.*, SOLVER.*, INPUT.* keys; see
  :func:`gn_det.modeling.mask_rcnn.build_mask_rcnn`);
- refused by name when it asks for something gn_det does not build (C4 or cascade heads,
  deformable convs, keypoints, test-time augmentation, ...): :func:`check_detectron2_values` here
  and :func:`gn_det.modeling.mask_rcnn.check_mask_rcnn_config`;
- or unused, exactly as detectron2 leaves it unused for an FPN Mask R-CNN: the sections of other
  models (RETINANET, SEM_SEG_HEAD, PANOPTIC_FPN, ROI_KEYPOINT_HEAD, ROI_BOX_CASCADE_HEAD) and the
  settings of switched-off features (INPUT.CROP.TYPE/SIZE with CROP.ENABLED False, TEST.AUG.*,
  proposal files without LOAD_PROPOSALS, ...). The switch itself is checked.

A file that names no TASK is read as detectron2 reads it: the keys it leaves out take detectron2's
defaults (:func:`add_detectron2_defaults`), which differ from gn_det's (BGR input with pixel std 1,
stride on the 1x1 conv, C4 heads, ROIAlignV2, plain L1 box losses, ...).
"""

from __future__ import annotations

from gn_det.config import CfgNode as CN
from gn_det.config import config_value, refuse_unsupported

__all__ = ["add_detectron2_defaults", "add_detectron2_only_keys", "check_detectron2_values"]


def add_detectron2_only_keys(cfg: CN) -> None:
    """Add the keys detectron2 defines that gn_det accepts only at the value it implements, or that an
    FPN Mask R-CNN does not use (detectron2's defaults, in place)."""
    m = cfg.MODEL
    m.LOAD_PROPOSALS = False
    m.KEYPOINT_ON = False
    m.PROPOSAL_GENERATOR = CN({"NAME": "RPN", "MIN_SIZE": 0})
    m.ANCHOR_GENERATOR.ANGLES = [[-90, 0, 90]]  # rotated anchors only
    m.ANCHOR_GENERATOR.OFFSET = 0.0
    m.FPN.FUSE_TYPE = "sum"
    m.RESNETS.RES5_DILATION = 1
    m.RESNETS.RES2_OUT_CHANNELS = 0  # 0: the depth's own (64 for ResNet-18/34, else 256)
    m.RESNETS.STEM_OUT_CHANNELS = 64
    m.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]
    m.RESNETS.DEFORM_MODULATED = False  # unused without deformable convs
    m.RESNETS.DEFORM_NUM_GROUPS = 1
    m.RPN.HEAD_NAME = "StandardRPNHead"
    m.RPN.BOUNDARY_THRESH = -1
    m.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"
    m.ROI_HEADS.PROPOSAL_APPEND_GT = True
    m.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
    m.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
    m.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False
    m.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    m.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False
    # Sections of other detectron2 models: unused here, as in detectron2's FPN Mask R-CNN.
    m.ROI_BOX_CASCADE_HEAD = CN({"BBOX_REG_WEIGHTS": ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                                                      (30.0, 30.0, 15.0, 15.0)),
                                 "IOUS": (0.5, 0.6, 0.7)})
    m.ROI_KEYPOINT_HEAD = CN({
        "NAME": "KRCNNConvDeconvUpsampleHead", "POOLER_RESOLUTION": 14, "POOLER_SAMPLING_RATIO": 0,
        "CONV_DIMS": (512,) * 8, "NUM_KEYPOINTS": 17, "MIN_KEYPOINTS_PER_IMAGE": 1,
        "NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS": True, "LOSS_WEIGHT": 1.0, "POOLER_TYPE": "ROIAlignV2"})
    m.SEM_SEG_HEAD = CN({
        "NAME": "SemSegFPNHead", "IN_FEATURES": ["p2", "p3", "p4", "p5"], "IGNORE_VALUE": 255, "NUM_CLASSES": 54,
        "CONVS_DIM": 128, "COMMON_STRIDE": 4, "NORM": "GN", "LOSS_WEIGHT": 1.0})
    m.PANOPTIC_FPN = CN({"INSTANCE_LOSS_WEIGHT": 1.0, "COMBINE": CN({
        "ENABLED": True, "OVERLAP_THRESH": 0.5, "STUFF_AREA_LIMIT": 4096, "INSTANCES_CONFIDENCE_THRESH": 0.5})})
    m.RETINANET = CN({
        "NUM_CLASSES": 80, "IN_FEATURES": ["p3", "p4", "p5", "p6", "p7"], "NUM_CONVS": 4,
        "IOU_THRESHOLDS": [0.4, 0.5], "IOU_LABELS": [0, -1, 1], "PRIOR_PROB": 0.01, "SCORE_THRESH_TEST": 0.05,
        "TOPK_CANDIDATES_TEST": 1000, "NMS_THRESH_TEST": 0.5, "BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0),
        "FOCAL_LOSS_GAMMA": 2.0, "FOCAL_LOSS_ALPHA": 0.25, "SMOOTH_L1_LOSS_BETA": 0.1,
        "BBOX_REG_LOSS_TYPE": "smooth_l1", "NORM": ""})

    cfg.INPUT.CROP = CN({"ENABLED": False, "TYPE": "relative_range", "SIZE": [0.9, 0.9]})
    cfg.DATASETS.PROPOSAL_FILES_TRAIN = ()  # read only with MODEL.LOAD_PROPOSALS
    cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN = 2000
    cfg.DATASETS.PROPOSAL_FILES_TEST = ()
    cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = 1000
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.0  # RepeatFactorTrainingSampler only
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 0
    cfg.TEST.EXPECTED_RESULTS = []
    cfg.TEST.KEYPOINT_OKS_SIGMAS = []
    cfg.TEST.AUG = CN({"ENABLED": False, "MIN_SIZES": (400, 500, 600, 700, 800, 900, 1000, 1100, 1200),
                       "MAX_SIZE": 4000, "FLIP": True})
    cfg.TEST.PRECISE_BN = CN({"ENABLED": False, "NUM_ITER": 200})
    cfg.VIS_PERIOD = 0
    cfg.GLOBAL = CN({"HACK": 1.0})  # detectron2's global_cfg, read only by the user's own code


# detectron2's defaults (its config/defaults.py) where they differ from gn_det's detection defaults.
# MODEL.DEVICE stays "auto" (the GPU when there is one): where to run, not what to build.
_DETECTRON2_DEFAULTS = {
    "MODEL.MASK_ON": False,
    "MODEL.PIXEL_MEAN": [103.53, 116.28, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.RESNETS.OUT_FEATURES": ["res4"],
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.ZERO_INIT_RESIDUAL": False,  # detectron2 starts every norm's gamma at 1
    "MODEL.ANCHOR_GENERATOR.NAME": "DefaultAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32, 64, 128, 256, 512]],
    "MODEL.RPN.IN_FEATURES": ["res4"],
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 12000,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000,
    "MODEL.RPN.SMOOTH_L1_BETA": 0.0,
    "MODEL.ROI_HEADS.NAME": "Res5ROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": ["res4"],
    "MODEL.ROI_BOX_HEAD.NAME": "",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 0,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 0,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2",
    "INPUT.FORMAT": "BGR",
    "INPUT.MASK_FORMAT": "polygon",
    "DATASETS.TRAIN": (),
    "DATASETS.TEST": (),
    "DATALOADER.NUM_WORKERS": 4,
    "SOLVER.MAX_ITER": 40000,
    "SOLVER.BASE_LR": 0.001,
    "SOLVER.STEPS": (30000,),
    "SOLVER.WEIGHT_DECAY_BIAS": 0.0001,  # detectron2: WEIGHT_DECAY's default, fixed when defined
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "value",
}


def add_detectron2_defaults(cfg: CN) -> None:
    """Set detectron2's defaults where they differ from gn_det's (in place): what a detectron2 YAML
    file means for the keys it leaves out."""
    for key, value in _DETECTRON2_DEFAULTS.items():
        parent, _, leaf = key.rpartition(".")
        config_value(cfg, parent)[leaf] = value


# (key, the values gn_det implements, what gn_det supports): data and engine keys.
_ONE_OF = (
    ("INPUT.CROP.ENABLED", (False,), "gn_det's training transform has no random crop"),
    ("INPUT.RANDOM_FLIP", ("horizontal", "none"), "images are flipped 'horizontal'ly or not at all ('none')"),
    ("INPUT.MIN_SIZE_TRAIN_SAMPLING", ("choice", "range"), "the training size is sampled by 'choice' or 'range'"),
    ("INPUT.MASK_FORMAT", ("polygon", "bitmask"), "'polygon' or 'bitmask' (mask targets are cut from the "
                                                   "rasterized masks either way)"),
    ("DATALOADER.SAMPLER_TRAIN", ("TrainingSampler",), "the training sampler is TrainingSampler (no repeat factors)"),
    ("SOLVER.REFERENCE_WORLD_SIZE", (0,), "SOLVER.IMS_PER_BATCH is always the global batch, split over the GPUs "
                                          "(and SOLVER.ACCUM_STEPS); nothing is rescaled"),
    ("TEST.EXPECTED_RESULTS", ([],), "results are not checked against expected values"),
    ("TEST.AUG.ENABLED", (False,), "there is no test-time augmentation"),
    ("TEST.PRECISE_BN.ENABLED", (False,), "BN statistics are not recomputed after training"),
    ("VIS_PERIOD", (0,), "no training visualizations are written (tools/visualize.py draws predictions)"),
)


def check_detectron2_values(cfg: CN, *, detectron2_file: bool = False) -> None:
    """Refuse the data and engine values detectron2 accepts but gn_det does not implement.

    Args:
        cfg: the merged config.
        detectron2_file: the config came from a file naming no TASK (a detectron2 file): keys
            whose gn_det meaning differs from detectron2's are refused too
            (SOLVER.CLIP_GRADIENTS.CLIP_TYPE "norm": per parameter in detectron2, all gradients
            together in gn_det).

    Raises:
        gn_det.config.ConfigError: one line naming the refused key(s), value and what is supported.
    """
    problems = [f"{key} = {config_value(cfg, key)!r}: {supported}" for key, allowed, supported in _ONE_OF
                if config_value(cfg, key) not in allowed]
    sizes = list(cfg.INPUT.MIN_SIZE_TRAIN)
    if not sizes or min(sizes) <= 0:
        problems.append(f"INPUT.MIN_SIZE_TRAIN = {tuple(sizes)}: the training images' shortest sides, each > 0")
    elif cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range" and (len(sizes) != 2 or sizes[0] > sizes[1]):
        problems.append(f"INPUT.MIN_SIZE_TRAIN = {tuple(sizes)}: with INPUT.MIN_SIZE_TRAIN_SAMPLING 'range', give "
                        f"(min, max); or use 'choice' to pick one of the sizes")
    for key in ("INPUT.MAX_SIZE_TRAIN", "INPUT.MAX_SIZE_TEST"):
        if int(config_value(cfg, key)) <= 0:
            problems.append(f"{key} = {config_value(cfg, key)}: the longest side images are resized to at most, > 0")
    if int(cfg.INPUT.MIN_SIZE_TEST) <= 0:
        problems.append(f"INPUT.MIN_SIZE_TEST = {cfg.INPUT.MIN_SIZE_TEST}: test images are always resized; give "
                        f"their shortest side (> 0)")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if detectron2_file and clip.ENABLED and clip.CLIP_TYPE == "norm":
        problems.append("SOLVER.CLIP_GRADIENTS.CLIP_TYPE = 'norm': detectron2 clips each parameter's gradient norm, "
                        "gn_det the norm of all gradients together; use 'value', or add TASK: detection to accept "
                        "gn_det's global norm")
    refuse_unsupported(problems)
