"""Run a trained model on your own images or videos: ``gn-det-demo`` / ``python tools/demo.py``.

detectron2's ``demo/demo.py``, for every gn_det task::

    gn-det-demo --config-file CONFIG --input INPUT [INPUT ...] --output FOLDER \\
        [--confidence-threshold 0.5] MODEL.WEIGHTS model_final.pth [KEY VALUE ...]

The config and the KEY VALUE overrides are read as ``gn-det-train`` reads them; MODEL.WEIGHTS is
loaded through the same path as ``--eval-only`` and MODEL.DEVICE picks the device. ``--input``
takes files, folders (their image or video files, sorted, not recursive) and glob patterns
(quote them, ``"photos/*.jpg"``, or let the shell expand them); paths may hold spaces.

What goes to ``--output``, by the config's TASK:

- ``detection``: ``<image name>.png`` per image, the boxes, masks, class names and scores at or
  above ``--confidence-threshold`` drawn on it; ``predictions.json`` with, per image, those
  instances: ``box_xyxy`` in the input image's pixels, ``label`` (1..K), ``class``, ``score`` and
  ``segmentation`` (COCO RLE, pycocotools' ``{"size": [H, W], "counts": str}``).
- ``classification``: ``predictions.json`` with the top-5 classes (softmax scores) of each image,
  after the test transform (INPUT.TEST_RESIZE, INPUT.TEST_CROP_SIZE).
- ``video``: ``predictions.json`` with, per video, the top-5 classes of each clip (a view:
  TEST.NUM_ENSEMBLE_VIEWS temporal clips x TEST.NUM_SPATIAL_CROPS crops, sampled as the test set's)
  and of the whole video: the softmax scores averaged over its clips, as the video evaluator does.

Class names are the dataset's the config trains or tests on (DATASETS.TEST[0], else
DATASETS.TRAIN[0]; for video the training set's, whose indices the model predicts); when that set
cannot be found, ``class <i>`` with a warning.

An input file that cannot be read is skipped with one line naming it and counted (in the summary and
``predictions.json``); the rest go on. Exit codes: 0 done (skips included); 2 a user error, one
``gn-det-demo: error:`` line: bad arguments, config, no input found, MODEL.WEIGHTS unset, missing or
unreadable, every input unreadable, an output folder that cannot be written.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import sys
from typing import Any, Sequence

# torch, torchvision, pycocotools and matplotlib are imported inside the functions that use them:
# ``--help`` and argument errors answer without loading them.

__all__ = ["build_parser", "main", "find_inputs", "PREDICTIONS_FILE", "TOPK"]

logger = logging.getLogger("gn_det.demo")
PROG = "gn-det-demo"
PREDICTIONS_FILE = "predictions.json"
TOPK = 5
USER_ERROR = 2  # as gn-det-train: a user error
_TASKS = ("detection", "classification", "video")
_CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


class UserError(Exception):
    """A one-line error the user fixes (exit code 2)."""


class _Skip(Exception):
    """One input that cannot be used: skipped, named and counted; the run goes on."""


# On the quick start's own outputs: its trained models and the validation images it generated.
_EXAMPLES = """examples:
  gn-det-demo --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml \\
      --input "~/.cache/gn_det/synthetic/shapes-*-n100-s160-seed1/images/*.jpg" --output output/demo \\
      MODEL.WEIGHTS output/mask_rcnn_R_18_FPN_gn_demo/model_final.pth
  gn-det-demo --config-file configs/video/synthetic/r3d_18_gn_demo.yaml --input "my clips/walk.mp4" \\
      --output output/demo_video MODEL.WEIGHTS output/video/r3d_18_gn_demo/model_final.pth
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        self.exit(USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: detectron2's demo flags, then KEY VALUE config overrides."""
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=_EXAMPLES + "\n" + __doc__[__doc__.index("What goes to"):])
    p.add_argument("--config-file", required=True, metavar="FILE", help="the YAML config the model was trained with")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="image or video files, folders of them, or glob patterns (quoted); KEY VALUE "
                        "overrides may follow")
    p.add_argument("--output", required=True, metavar="FOLDER",
                   help=f"folder for the drawn PNG files (detection) and {PREDICTIONS_FILE}")
    p.add_argument("--confidence-threshold", type=float, default=0.5, metavar="SCORE",
                   help="detection: minimum score of an instance drawn and listed (default 0.5)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides as KEY VALUE pairs; MODEL.WEIGHTS path/to/model_final.pth")
    return p


# ------------------------------------------------------------------------------------ inputs
def find_inputs(paths: Sequence[str], extensions: Sequence[str]) -> list[str]:
    """The files ``--input`` names, in order, each once.

    Args:
        paths: files (taken whatever their extension), folders (their files with one of
            ``extensions``, any case, sorted; not recursive) or glob patterns (matching files, sorted).
        extensions: lower-case suffixes with the dot, e.g. ``(".jpg", ".png")``.

    Raises:
        UserError: a path that is neither a file, a folder nor a pattern matching a file, or a
            folder without such files.
    """
    found: list[str] = []
    for raw in paths:
        path = os.path.expanduser(raw)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(tuple(extensions))
                           and os.path.isfile(os.path.join(path, n)))
            if not names:
                raise UserError(f"--input {raw!r}: the folder holds no {'/'.join(extensions)} file")
            found += [os.path.join(path, n) for n in names]
        elif os.path.isfile(path):
            found.append(path)
        elif any(c in path for c in "*?["):
            matched = sorted(m for m in glob.glob(path) if os.path.isfile(m))
            if not matched:
                raise UserError(f"--input {raw!r}: no file matches this pattern")
            found += matched
        else:
            raise UserError(f"--input {raw!r}: no such file or folder")
    return list(dict.fromkeys(found))


def _split_overrides(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--input a.jpg b.jpg MODEL.WEIGHTS w.pth``: argparse gives ``--input`` everything up to the
    next flag; the inputs end at the first config key (``SECTION.KEY``, capitals) that is no file."""
    for i, item in enumerate(inputs):
        if i and _CONFIG_KEY.fullmatch(item) and not os.path.exists(item):
            return list(inputs[:i]), list(inputs[i:])
    return list(inputs), []


def _output_names(files: Sequence[str]) -> list[str]:
    """``<stem>.png`` per input file; a stem seen before gets ``_2``, ``_3``, ... (a.jpg and a.png)."""
    used: set[str] = set()
    names = []
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        name, k = f"{stem}.png", 1
        while name in used:
            k += 1
            name = f"{stem}_{k}.png"
        used.add(name)
        names.append(name)
    return names


# ------------------------------------------------------------------------------ class names
def _names_from_data(cfg) -> list[str]:
    """The class names of the config's data, index = the model's class index (detection: label - 1)."""
    if cfg.TASK == "video":
        from gn_det.data.video.build import video_list

        # The model predicts in the first training set's classes (see gn_det.data.video.build).
        return list(video_list(cfg, (list(cfg.DATASETS.TRAIN) or list(cfg.DATASETS.TEST))[0]).classes)
    name = (list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN))[0]
    if cfg.TASK == "classification":
        from gn_det.data.classification import dataset_classes

        names = dataset_classes(cfg, name)
        if names is None:
            raise FileNotFoundError(f"dataset {name!r} is not there")
        return names
    from gn_det.data import get_dataset_metadata

    return list(get_dataset_metadata(name, cfg).class_names)


def class_names(cfg, num_classes: int) -> list[str]:
    """``num_classes`` names: the data's (see the module docstring), else ``class <i>`` with a warning."""
    try:
        names = _names_from_data(cfg)
    except Exception as e:  # any reason the set cannot be read: the demo still runs, names generic
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        logger.warning("Class names unknown (%s): the classes are named 'class <i>'; set DATASETS.TEST to the "
                       "set the model was trained on to name them", first)
        names = []
    offset = 1 if cfg.TASK == "detection" else 0
    if len(names) > num_classes:
        logger.warning("The data has %d classes but the model %d: names past %d are not used", len(names),
                       num_classes, num_classes)
    return [names[i] if i < len(names) else f"class {i + offset}" for i in range(num_classes)]


def _top_classes(probs, names: Sequence[str], k: int = TOPK) -> list[dict[str, Any]]:
    """The ``k`` highest of ``probs`` (K,) as ``[{"label", "class", "score"}]``, best first."""
    import torch

    scores, labels = torch.topk(probs.double().cpu(), min(k, probs.numel()))
    return [{"label": int(i), "class": names[int(i)], "score": float(s)} for s, i in zip(scores, labels)]


# ------------------------------------------------------------------------------- predictors
class _Detector:
    """Mask R-CNN on one image: a PNG with the instances drawn and their JSON entry."""

    unit = "image"

    def __init__(self, cfg, model, names: Sequence[str], threshold: float, output: str):
        from gn_det.data.transforms import build_detection_transform
        from gn_det.utils.visualizer import class_colors

        self.cfg, self.model, self.names, self.threshold, self.output = cfg, model, list(names), threshold, output
        self.transform = build_detection_transform(cfg, is_train=False)
        self.colors = class_colors(len(self.names))

    def __call__(self, path: str, out_name: str) -> dict[str, Any]:
        import torch

        from gn_det.evaluation.coco_evaluation import instances_to_coco_results
        from gn_det.utils.image_io import ImageReadError, read_image
        from gn_det.utils.visualizer import draw_predictions, save_png

        try:
            image = read_image(path)
        except ImageReadError as e:
            raise _Skip(e.reason) from None
        h, w = image.shape[-2:]
        # The test set's resize (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST); the model returns input pixels.
        resized, _, _, _ = self.transform(image, torch.zeros(0, 4), torch.zeros(0, h, w, dtype=torch.uint8))
        with torch.inference_mode():
            (out,) = self.model([{"image": resized.as_subclass(torch.Tensor).float(), "height": h, "width": w}])
        keep = out["scores"] >= self.threshold
        kept = {k: v[keep].cpu() for k, v in out.items()}
        if "masks" in kept and kept["masks"].dim() == 4:
            kept["masks"] = kept["masks"][:, 0]
        labels = [int(v) for v in kept["labels"]]
        coco = instances_to_coco_results(kept, 0, {label: label for label in labels})  # masks -> RLE
        drawn = draw_predictions(image, kept["boxes"], [self.names[v - 1] for v in labels], kept["scores"],
                                 kept["masks"].bool() if "masks" in kept else None,
                                 colors=[self.colors[v - 1] for v in labels], score_threshold=self.threshold)
        save_png(drawn, os.path.join(self.output, out_name))
        instances = []
        for i, label in enumerate(labels):
            inst = {"label": label, "class": self.names[label - 1], "score": float(kept["scores"][i]),
                    "box_xyxy": [float(v) for v in kept["boxes"][i]]}
            if "segmentation" in coco[i]:
                inst["segmentation"] = coco[i]["segmentation"]
            instances.append(inst)
        return {"file": path, "output": out_name, "height": int(h), "width": int(w), "instances": instances}


class _ImageClassifier:
    """A classifier on one image (test transform): its top-5 classes."""

    unit = "image"

    def __init__(self, cfg, model, names: Sequence[str]):
        from gn_det.data.classification import build_classification_transform

        self.model, self.names = model, list(names)
        self.transform = build_classification_transform(cfg, is_train=False)

    def __call__(self, path: str, out_name: str) -> dict[str, Any]:
        import torch

        from gn_det.utils.image_io import ImageReadError, read_image_pil

        try:
            image = read_image_pil(path)
        except ImageReadError as e:
            raise _Skip(e.reason) from None
        with torch.inference_mode():
            logits = self.model([{"image": self.transform(image)}])
        return {"file": path, "height": image.height, "width": image.width,
                "top5": _top_classes(torch.softmax(logits[0].double(), 0), self.names)}


class _VideoClassifier:
    """A video model on one video: top-5 per clip (view) and per video (softmax averaged over clips)."""

    unit = "video"

    def __init__(self, cfg, model, names: Sequence[str]):
        self.cfg, self.model, self.names = cfg, model, list(names)
        self.batch_size = max(int(cfg.TEST.BATCH_SIZE), 1)
        # The dataset logs each bad video; the demo prints its own skip line for it: one line per file.
        logging.getLogger("gn_det.data.video.dataset").setLevel(logging.ERROR)

    def __call__(self, path: str, out_name: str) -> dict[str, Any]:
        import torch

        from gn_det.data.common import SkippedSample
        from gn_det.data.video.annotations import VideoRecord
        from gn_det.data.video.build import video_clip_dataset

        # The test set's clip sampling and crops, for this one file (its label is not used).
        views = video_clip_dataset(self.cfg, [VideoRecord(path, self.names[0])], self.names, train=False,
                                   name=PROG)
        samples = [views[i] for i in range(len(views))]
        good = [s for s in samples if not isinstance(s, SkippedSample)]
        if not good:
            raise _Skip(views.bad_videos[0][1] if views.bad_videos else samples[0].reason)
        logits = []
        with torch.inference_mode():
            for start in range(0, len(good), self.batch_size):
                logits.append(self.model(good[start:start + self.batch_size]).double().cpu())
        probs = torch.softmax(torch.cat(logits), dim=1)
        clips = [{"view": s["view"], "temporal_index": s["temporal_index"], "spatial_index": s["spatial_index"],
                  "top5": _top_classes(p, self.names)} for s, p in zip(good, probs)]
        return {"file": path, "num_views": len(samples), "missing_views": len(samples) - len(good),
                "top5": _top_classes(probs.mean(dim=0), self.names), "clips": clips}


# ------------------------------------------------------------------------------------- setup
def _load_cfg(args: argparse.Namespace, opts: list[str]):
    """The config as gn-det-train reads it, with MODEL.WEIGHTS set to a file; UserError otherwise."""
    from gn_det.checkpoint.weight_urls import is_weights_url
    from gn_det.cli.train_net import setup_cfg
    from gn_det.config import ConfigError

    try:
        cfg = setup_cfg(argparse.Namespace(config_file=args.config_file, opts=opts, eval_only=True, num_gpus=1,
                                           num_machines=1))
    except ConfigError as e:
        raise UserError(str(e)) from None
    if cfg.TASK not in _TASKS:
        raise UserError(f"TASK {cfg.TASK!r}: {PROG} runs the tasks {list(_TASKS)}")
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise UserError(f"no weights: add MODEL.WEIGHTS path/to/model_final.pth after the options (a training "
                        f"run writes it into its OUTPUT_DIR, here {cfg.OUTPUT_DIR})")
    if not is_weights_url(weights) and not os.path.exists(weights):  # a name is resolved when loading
        final = os.path.normpath(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
        raise UserError(f"MODEL.WEIGHTS {weights!r}: no such file; give the model_final.pth of a training run "
                        f"(this config's run writes {final})")
    return cfg


def _load_model(cfg):
    """The task's model on MODEL.DEVICE in eval mode, MODEL.WEIGHTS loaded as --eval-only loads it."""
    from gn_det.cli.train_net import describe_failure
    from gn_det.engine.task import get_task
    from gn_det.engine.trainer import load_model_weights, resolve_device

    task = get_task(cfg.TASK)
    try:
        model = task.build_model(cfg).to(resolve_device(cfg.MODEL.DEVICE))
        load_model_weights(cfg, model, cfg.MODEL.WEIGHTS, task)
    except Exception as e:
        code, message = describe_failure(e)  # gn-det-train's split of user errors from bugs
        if code != USER_ERROR:
            raise
        raise UserError(message) from None
    return model.eval()


def _num_classes(cfg, model) -> int:
    if cfg.TASK == "detection":
        return int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    return int(model.num_classes)


def _extensions(task_name: str) -> tuple[str, ...]:
    if task_name == "video":
        from gn_det.cli.prepare_videos import DEFAULT_EXTENSIONS

        return tuple(DEFAULT_EXTENSIONS)
    from gn_det.data.image_folder import IMAGE_EXTENSIONS

    return tuple(IMAGE_EXTENSIONS) + (".bmp", ".webp", ".tif", ".tiff")


def run(args: argparse.Namespace, opts: list[str]) -> dict[str, Any]:
    """Load, predict every input, write the outputs; returns the ``predictions.json`` record."""
    from tqdm import tqdm

    from gn_det.cli.train_net import _check_output_dir
    from gn_det.config import ConfigError
    from gn_det.utils.io import atomic_write_text
    from gn_det.utils.progress import progress_bar

    cfg = _load_cfg(args, opts)
    files = find_inputs(args.input, _extensions(cfg.TASK))  # before the model: input errors answer at once
    try:
        _check_output_dir(args.output, "--output")
    except ConfigError as e:
        raise UserError(str(e)) from None
    model = _load_model(cfg)
    names = class_names(cfg, _num_classes(cfg, model))
    if cfg.TASK == "detection":
        predict = _Detector(cfg, model, names, args.confidence_threshold, args.output)
    elif cfg.TASK == "classification":
        predict = _ImageClassifier(cfg, model, names)
    else:
        predict = _VideoClassifier(cfg, model, names)

    results, skipped = [], []
    for path, out_name in zip(progress_bar(files, desc=PROG, unit=predict.unit, file=sys.stderr),
                              _output_names(files)):
        try:
            results.append(predict(path, out_name))
        except _Skip as e:
            skipped.append({"file": path, "reason": str(e)})
            tqdm.write(f"{PROG}: skipped {path}: {e}", file=sys.stderr)
    record: dict[str, Any] = {"task": cfg.TASK, "config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS}
    if cfg.TASK == "detection":
        record["confidence_threshold"] = args.confidence_threshold
    record.update({"class_names": names, "num_inputs": len(files), "num_skipped": len(skipped),
                   "skipped": skipped, f"{predict.unit}s": results})

    atomic_write_text(json.dumps(record, indent=1) + "\n", os.path.join(args.output, PREDICTIONS_FILE))
    if not results:
        raise UserError(f"none of the {len(files)} input file(s) could be read (see the lines above)")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0. A user error prints one ``gn-det-demo: error:`` line and exits with 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.input, opts = _split_overrides(args.input)
    opts += args.opts[1:] if args.opts and args.opts[0] == "--" else list(args.opts)
    if len(opts) % 2:
        parser.error(f"config overrides come as KEY VALUE pairs; got an odd number: {opts}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        record = run(args, opts)
    except UserError as e:
        parser.exit(USER_ERROR, f"{PROG}: error: {e}\n")
    what = "PNG files and " if record["task"] == "detection" else ""
    done = record["num_inputs"] - record["num_skipped"]
    print(f"{PROG}: {done} {record['task']} result(s): {what}{PREDICTIONS_FILE} in {args.output}; "
          f"{record['num_skipped']} unreadable file(s) skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
