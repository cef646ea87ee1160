"""The video task (``TASK video``): I3D 3D-conv classifiers for Kinetics with any norm, 2D checkpoints
inflated to 3D, multi-view clip/video accuracy.

The point (the GN paper's Kinetics experiment): at 4-8 clips per GPU BatchNorm's statistics get
noisy, GroupNorm's (over channels-in-group x T x H x W of each clip) do not. This module
registers ``"video"``, declares its config keys (:func:`add_video_config`: PySlowFast's names where
they do not clash with the shared tree) and only wires existing builders together:

- model: :func:`gn_det.modeling.video_resnet.build_video_model` (the one ResNet, ``dim=3``);
- data: :mod:`gn_det.data.video.build` (dataset names, loaders, bad-video handling);
- metrics: :class:`~gn_det.evaluation.video_evaluation.VideoEvaluator`;
- MODEL.WEIGHTS: :func:`gn_det.modeling.video_resnet.video_weights_transform` (2D -> 3D inflation).

PySlowFast key -> gn_det key (same name when only the section is listed):

==================================  ==========================================================
PySlowFast                          gn_det (TASK video)
==================================  ==========================================================
MODEL.ARCH "i3d"                    MODEL.META_ARCHITECTURE "I3D"
MODEL.NUM_CLASSES, DROPOUT_RATE     same
RESNET.DEPTH / NUM_GROUPS /         MODEL.RESNETS.DEPTH / NUM_GROUPS / WIDTH_PER_GROUP /
WIDTH_PER_GROUP / STRIDE_1X1 /      STRIDE_IN_1X1 / ZERO_INIT_RESIDUAL
ZERO_INIT_FINAL_BN
BN.NORM_TYPE "batchnorm" /          MODEL.RESNETS.NORM "BN" / "SyncBN" (and "FrozenBN", "GN",
"sync_batchnorm"                    "GN+WS", ...); MODEL.GROUP_NORM.NUM_GROUPS for GN
TRAIN.CHECKPOINT_FILE_PATH +        MODEL.WEIGHTS (a 2D checkpoint is inflated, MODEL.INFLATE)
CHECKPOINT_INFLATE
DATA.NUM_FRAMES, SAMPLING_RATE,     same
TRAIN_JITTER_SCALES,
TRAIN_CROP_SIZE, TEST_CROP_SIZE,
MEAN, STD, RANDOM_FLIP,
PATH_TO_DATA_DIR, PATH_PREFIX,
PATH_LABEL_SEPARATOR
TEST.NUM_ENSEMBLE_VIEWS,            same
NUM_SPATIAL_CROPS, BATCH_SIZE
TRAIN.BATCH_SIZE                    SOLVER.IMS_PER_BATCH (clips per step over all GPUs)
SOLVER.BASE_LR, MOMENTUM,           same
WEIGHT_DECAY
SOLVER.MAX_EPOCH                    SOLVER.MAX_ITER = epochs x videos / IMS_PER_BATCH
SOLVER.LR_POLICY "cosine"           SOLVER.LR_SCHEDULER_NAME "WarmupCosineLR"
SOLVER.WARMUP_EPOCHS                SOLVER.WARMUP_ITERS
DATA_LOADER.NUM_WORKERS             DATALOADER.NUM_WORKERS
RNG_SEED, OUTPUT_DIR                SEED, OUTPUT_DIR
==================================  ==========================================================
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable

from gn_det.config import CfgNode as CN
from gn_det.config import refuse_unsupported
from gn_det.engine.task import register_task

if TYPE_CHECKING:  # torch, checkpoints and evaluators only when used: the CLIs read the config keys without them
    from torch import nn

    from gn_det.checkpoint.model_loading import WeightsForModel
    from gn_det.evaluation.video_evaluation import VideoEvaluator

__all__ = ["VideoTask", "add_video_config", "check_video_config"]


def add_video_config(cfg: CN) -> None:
    """Add the video keys and defaults (PySlowFast's where it has them) to ``cfg``, in place."""
    cfg.MODEL.META_ARCHITECTURE = "I3D"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # the I3D recipe fine-tunes every stage
    cfg.MODEL.RESNETS.NORM = "BN"  # PySlowFast's; the configs set GN
    cfg.MODEL.NUM_CLASSES = 400
    cfg.MODEL.DROPOUT_RATE = 0.5  # before the head's fc
    cfg.MODEL.INFLATE = "mean"  # 2D -> 3D weights: "mean" (w / T repeated) or "center" (w at T // 2)
    cfg.MODEL.VIDEO = CN()
    cfg.MODEL.VIDEO.STEM_TEMPORAL_KERNEL = 5  # 5x7x7 stem conv
    # Per stage, the temporal kernel of each block's first conv: [] = I3D's layout for the depth
    # (gn_det.modeling.video_resnet); else one int per stage or a list per block, e.g. [[3, 3], 3, 1, [1, 3]].
    cfg.MODEL.VIDEO.TEMPORAL_KERNELS = []
    cfg.MODEL.VIDEO.TEMPORAL_POOL = 2  # max pool over time after res2 (PySlowFast's pool1); 1: none
    cfg.MODEL.VIDEO.TEMPORAL_STRIDES = [1, 1, 1, 1]  # per stage, on its first block
    # "rgb": the frames; "rgb_diff": differences of consecutive frames (TSN's RGB difference; T - 1 of them)
    cfg.MODEL.VIDEO.INPUT_MODALITY = "rgb"
    # Optional 1x1x1 conv + norm + ReLU in the head before the pool (PySlowFast's head has none: 0).
    cfg.MODEL.VIDEO_HEAD = CN()
    cfg.MODEL.VIDEO_HEAD.CONV_DIM = 0
    cfg.MODEL.VIDEO_HEAD.NORM = ""  # norm of that conv: "", "BN", "GN", "GN+WS", ...

    cfg.DATA = CN()
    cfg.DATA.NUM_FRAMES = 8  # frames per clip
    cfg.DATA.SAMPLING_RATE = 8  # frames between two clip frames
    cfg.DATA.TRAIN_JITTER_SCALES = [256, 320]  # training short side, random in this range
    cfg.DATA.TRAIN_CROP_SIZE = 224
    cfg.DATA.TEST_CROP_SIZE = 256  # test short side and crop
    cfg.DATA.MEAN = [0.45, 0.45, 0.45]  # RGB, of pixels / 255
    cfg.DATA.STD = [0.225, 0.225, 0.225]
    cfg.DATA.RANDOM_FLIP = True
    # Classes swapped by a horizontal flip, [[a, b], ...] (the synthetic sets add theirs).
    cfg.DATA.FLIP_LABEL_PAIRS = []
    cfg.DATA.PATH_TO_DATA_DIR = ""  # PySlowFast's folder of {train,val,test}.csv: names slowfast_*
    cfg.DATA.PATH_PREFIX = ""  # folder their relative paths are under ("": the list's folder)
    cfg.DATA.PATH_LABEL_SEPARATOR = " "
    cfg.DATA.LIST_FORMAT = "auto"  # "auto" | "kinetics" | "list" (PySlowFast's) | "csv" (path,label header)
    cfg.DATA.TOO_SHORT = "clamp"  # a video shorter than a clip: "clamp" (repeat its last frame) | "skip"
    cfg.DATA.MAX_RETRIES = 10  # replacements tried for a bad training video before failing

    cfg.DATASETS.TRAIN = ("kinetics400_train",)
    cfg.DATASETS.TEST = ("kinetics400_val",)
    # Video lists: [[name, list_file], ...] or [[name, list_file, video_root], ...].
    cfg.DATASETS.REGISTER = []
    # Synthetic motion sets: [[prefix, num_classes, train_per_class, val_per_class, num_frames, size, seed]],
    # registering <prefix>_train and <prefix>_val.
    cfg.DATASETS.SYNTHETIC = []
    cfg.TEST.NUM_ENSEMBLE_VIEWS = 10  # temporal clips per test video
    cfg.TEST.NUM_SPATIAL_CROPS = 3
    cfg.TEST.BATCH_SIZE = 8  # test views per batch, over all processes


def check_video_config(cfg: CN, *, detectron2_file: bool = False) -> None:
    """Refuse (one-line :class:`~gn_det.config.ConfigError`) the MODEL.RESNETS and MODEL.VIDEO_HEAD values
    the I3D model cannot build (depth, GroupNorm widths), before anything is built."""
    from gn_det.modeling.backbone.resnet import resnet_cfg_problems
    from gn_det.modeling.cfg_norm import group_norm_width_problems

    conv_dim = int(cfg.MODEL.VIDEO_HEAD.CONV_DIM)
    head = [("MODEL.VIDEO_HEAD.CONV_DIM", "the head's convs", "MODEL.VIDEO_HEAD.NORM", conv_dim)]
    head = head if conv_dim > 0 else []
    refuse_unsupported(resnet_cfg_problems(cfg) + group_norm_width_problems(cfg, head))


@register_task("video")
class VideoTask:
    """Video classification with an I3D ResNet (any norm) on Kinetics-style lists; multi-view accuracy."""

    name = "video"
    add_config = staticmethod(add_video_config)
    check_config = staticmethod(check_video_config)

    def build_model(self, cfg) -> nn.Module:
        """:class:`~gn_det.modeling.video_resnet.VideoClassifier`, randomly initialized (the engine
        loads MODEL.WEIGHTS through :meth:`weights_transform`)."""
        from gn_det.modeling.video_resnet import build_video_model

        return build_video_model(cfg)

    def build_train_loader(self, cfg, micro_batch_size: int, skip_batches: int = 0) -> Iterable:
        """Endless micro-batches of ``micro_batch_size`` clips for this rank from DATASETS.TRAIN;
        ``skip_batches`` (set on --resume) continues the clip stream exactly."""
        from gn_det.data.video.build import build_video_train_loader

        return build_video_train_loader(cfg, micro_batch_size, skip_batches=skip_batches)

    def build_test_loader(self, cfg, dataset_name: str) -> Iterable:
        """This rank's share of the views of ``dataset_name`` (temporal clips x spatial crops)."""
        from gn_det.data.video.build import build_video_test_loader

        return build_video_test_loader(cfg, dataset_name)

    def build_evaluator(self, cfg, dataset_name: str, output_dir: str) -> VideoEvaluator:
        """Clip- and video-level top-1/top-5; ``video_results.json`` and ``confusion_matrix.png`` go to
        ``output_dir/inference/<dataset_name>/``."""
        from gn_det.data.video.build import video_set_info
        from gn_det.evaluation.video_evaluation import VideoEvaluator

        info = video_set_info(cfg, dataset_name)
        results_dir = os.path.join(output_dir, "inference", dataset_name) if output_dir else None
        return VideoEvaluator(info.classes, info.views_per_video, info.paths, results_dir, distributed=True,
                              dataset_name=dataset_name)

    def weight_parts(self, cfg) -> dict[str, str]:
        """MODEL.WEIGHTS must fill the 3D ResNet (completely; see :meth:`weights_transform`)."""
        from gn_det.modeling.video_resnet import RESNET_PREFIX

        return {"backbone": RESNET_PREFIX}

    def weights_transform(self, cfg, model: nn.Module, raw, source: str) -> WeightsForModel:
        """A video checkpoint by name, or a 2D ResNet / classification checkpoint inflated to 3D; see
        :func:`gn_det.modeling.video_resnet.video_weights_transform`."""
        from gn_det.modeling.video_resnet import video_weights_transform

        return video_weights_transform(cfg, model, raw, source)
