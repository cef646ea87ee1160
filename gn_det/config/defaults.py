"""Default config shared by every task: detectron2's key names, so its users' YAML files and
overrides carry over.

Each task adds its own keys (detection: FPN, RPN, RoI heads, COCO input sizes; classification:
crop sizes; ...) through its ``add_config`` before a file is merged, so one task's keys do not
crowd another's tree. Every key a config file or a ``KEY VALUE`` override may set must exist in
the shared tree or the task's; an unknown key is an error (see :func:`gn_det.config.load_config`).

Norm keys (MODEL.RESNETS.NORM, MODEL.FPN.NORM, MODEL.ROI_BOX_HEAD.NORM,
MODEL.ROI_MASK_HEAD.NORM) take "FrozenBN", "BN", "SyncBN", "GN", "LN", "IN" or "" and
an optional "+WS" suffix for Weight-Standardized convs in that part ("GN+WS").
"""

from fvcore.common.config import CfgNode as CN

_C = CN()
# detectron2's config version; only 2 (its current key names) is understood.
_C.VERSION = 2
# Which task (model builder, data loaders, evaluator) the engine runs: "detection",
# "classification", a plugin's name, or "package.module:TaskClass". The task adds its own keys.
_C.TASK = "detection"

_C.MODEL = CN()
_C.MODEL.DEVICE = "auto"  # "auto": cuda when available, else cpu
# The model family; each task sets its default and refuses names it cannot build.
_C.MODEL.META_ARCHITECTURE = ""
_C.MODEL.WEIGHTS = ""
# MODEL.WEIGHTS must give at least one tensor to each part the task requires (the backbone,
# say); list parts here to allow leaving them at their random init (the report still says so).
_C.MODEL.WEIGHTS_ALLOW_EMPTY_PARTS = []
# Pixel mean/std in INPUT.FORMAT order, 0-255 range (torchvision's ImageNet values, RGB).
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
# Speed options, measured in benchmarks/bench_options.py (README "Speed options"). Off by default:
# channels_last and compile made the CPU demo's step slower or no faster; SOLVER.AMP (bf16) made it
# faster on a CPU with AVX512-BF16 but changes the numerics, so it stays opt-in.
# Weights (4-D: channels_last, 5-D: channels_last_3d) and so the conv outputs in NHWC order.
_C.MODEL.CHANNELS_LAST = False
_C.MODEL.COMPILE = CN()
# torch.compile mode: "" (off), "default", "reduce-overhead", "max-autotune",
# "max-autotune-no-cudagraphs". Compilation happens on the first steps; weights keep their names.
_C.MODEL.COMPILE.MODE = ""
# What to compile: "backbone" (model.backbone: fixed-shape convs, where compile pays) or "model"
# (everything; detection heads have data-dependent shapes and break the graph often).
_C.MODEL.COMPILE.SCOPE = "backbone"

# Shared GroupNorm / WS settings (detectron2 always uses 32 groups and eps 1e-5).
_C.MODEL.GROUP_NORM = CN()
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32
_C.MODEL.GROUP_NORM.CHANNELS_PER_GROUP = 0  # > 0 overrides NUM_GROUPS
_C.MODEL.GROUP_NORM.EPS = 1e-5
_C.MODEL.WS_MODE = "authors"  # "authors" | "paper" | "timm", see gn_det.layers.ws_conv

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.FREEZE_AT = 2  # 0: train all; 1: freeze stem; 2: stem + res2; ...

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False  # False: stride on the 3x3 conv (torchvision, detectron2 GN)
_C.MODEL.RESNETS.NUM_GROUPS = 1
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.RESNETS.ZERO_INIT_RESIDUAL = True  # last norm gamma of each block starts at 0

_C.INPUT = CN()
# Channel order the model sees, as detectron2's INPUT.FORMAT: "RGB" or "BGR". MODEL.PIXEL_MEAN/STD
# are given in this order (detectron2's MSRA/Caffe2 weights: "BGR" with std 1).
_C.INPUT.FORMAT = "RGB"

_C.DATASETS = CN()
_C.DATASETS.TRAIN = ("coco_2017_train",)
_C.DATASETS.TEST = ("coco_2017_val",)

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
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
# Keep only the newest K periodic checkpoints (0: keep all); model_final and the one
# last_checkpoint names are never deleted (fvcore PeriodicCheckpointer's max_to_keep).
_C.SOLVER.CHECKPOINT_MAX_TO_KEEP = 0
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False
# Autocast dtype: "auto" (float16 with a GradScaler on CUDA, bfloat16 elsewhere), "float16"
# (CUDA only, with a GradScaler) or "bfloat16" (no GradScaler: it has float32's range).
_C.SOLVER.AMP.DTYPE = "auto"
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"  # "norm" | "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0

_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0

_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # < 0: a fresh seed per run, recorded in the log
_C.LOG_PERIOD = 20
_C.CUDNN_BENCHMARK = False
