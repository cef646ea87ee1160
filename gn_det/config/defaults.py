"""Default config: detectron2's key names, so its users' YAML files and overrides carry over.

Every key a config file or a ``KEY VALUE`` override may set must exist here; an unknown
key is an error (see :func:`gn_det.config.get_cfg`).

Norm keys (MODEL.RESNETS.NORM, MODEL.FPN.NORM, MODEL.ROI_BOX_HEAD.NORM,
MODEL.ROI_MASK_HEAD.NORM) take "FrozenBN", "BN", "SyncBN", "GN", "LN", "IN" or "" and
an optional "+WS" suffix for Weight-Standardized convs in that part ("GN+WS").
"""

from fvcore.common.config import CfgNode as CN

_C = CN()
_C.VERSION = 2
# Which task (model builder, data loaders, evaluator) the engine runs: "detection" or "video".
_C.TASK = "detection"

_C.MODEL = CN()
_C.MODEL.DEVICE = "auto"  # "auto": cuda when available, else cpu
_C.MODEL.META_ARCHITECTURE = "MaskRCNN"
_C.MODEL.MASK_ON = True
_C.MODEL.WEIGHTS = ""
# Pixel mean/std in RGB order, 0-255 range (torchvision's ImageNet values).
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

# Shared GroupNorm / WS settings (detectron2 always uses 32 groups and eps 1e-5).
_C.MODEL.GROUP_NORM = CN()
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32
_C.MODEL.GROUP_NORM.CHANNELS_PER_GROUP = 0  # > 0 overrides NUM_GROUPS
_C.MODEL.GROUP_NORM.EPS = 1e-5
_C.MODEL.WS_MODE = "authors"  # "authors" | "paper" | "timm", see gn_det.layers.ws_conv

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
_C.MODEL.BACKBONE.FREEZE_AT = 2  # 0: train all; 1: freeze stem; 2: stem + res2; ...

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False  # False: stride on the 3x3 conv (torchvision, detectron2 GN)
_C.MODEL.RESNETS.NUM_GROUPS = 1
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.RESNETS.ZERO_INIT_RESIDUAL = True  # last norm gamma of each block starts at 0

_C.MODEL.FPN = CN()
_C.MODEL.FPN.NORM = ""
_C.MODEL.FPN.OUT_CHANNELS = 256

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]

_C.MODEL.RPN = CN()
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
_C.MODEL.RPN.CONV_DIMS = [-1]

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
_C.MODEL.ROI_HEADS.IOU_THRESHOLD = 0.5
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NORM = ""
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NORM = ""
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0

_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" | "none"
_C.INPUT.FORMAT = "RGB"

_C.DATASETS = CN()
_C.DATASETS.TRAIN = ("coco_2017_train",)
_C.DATASETS.TEST = ("coco_2017_val",)
# Extra COCO-format sets: a list of [name, json_file, image_root].
_C.DATASETS.REGISTER = []
# Synthetic sets made on first use, by seed: a list of [name, num_images, image_size, seed].
_C.DATASETS.SYNTHETIC = []

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
# A missing/corrupt image or bad annotation: False -> clear error; True -> skip, count, report.
_C.DATALOADER.SKIP_BAD_SAMPLES = False

_C.SOLVER = CN()
_C.SOLVER.IMS_PER_BATCH = 16  # global: images per GPU = IMS_PER_BATCH / (world size * ACCUM_STEPS)
_C.SOLVER.ACCUM_STEPS = 1  # gradient accumulation: micro-batches per optimizer step
_C.SOLVER.BASE_LR = 0.02
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.WEIGHT_DECAY_BIAS = None  # None: same as WEIGHT_DECAY
_C.SOLVER.MAX_ITER = 90000
_C.SOLVER.STEPS = (60000, 80000)
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 5000
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"  # "norm" | "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0

_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0
_C.TEST.DETECTIONS_PER_IMAGE = 100

_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # < 0: a fresh seed per run, recorded in the log
_C.LOG_PERIOD = 20
_C.CUDNN_BENCHMARK = False
