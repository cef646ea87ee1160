"""The shipped full-size configs name weights a user can get: a name gn_det resolves (with the input
convention those weights expect), or the output of a command written in a config, or nothing."""

import functools
import os
import re
from pathlib import Path

import pytest

from gn_det.checkpoint import weight_urls as wu
from gn_det.checkpoint.detectron2_detector import CAFFE2_INPUT, input_convention_warning
from gn_det.checkpoint.input_convention import TORCHVISION_INPUT, cfg_input_convention
from gn_det.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "synthetic" not in p.parts)


@functools.lru_cache(maxsize=None)
def _made_by_commands() -> frozenset[str]:
    """Files the configs' own commands write: every config's OUTPUT_DIR/model_final.pth, and the
    ``--output FILE`` / ``OUTPUT_DIR DIR`` of the commands in their comments."""
    made = set()
    for path in CONFIGS:
        made.add(os.path.normpath(os.path.join(load_config(str(path)).OUTPUT_DIR, "model_final.pth")))
        comments = "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))
        made.update(os.path.normpath(f) for f in re.findall(r"--output (\S+)", comments))
        made.update(os.path.normpath(os.path.join(d, "model_final.pth")) for d in re.findall(r"OUTPUT_DIR (\S+)", comments))
    return frozenset(made)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_weights_resolve_or_are_made_by_a_command(path):
    cfg = load_config(str(path))
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        return
    if not wu.is_weights_url(weights):
        assert os.path.normpath(weights) in _made_by_commands(), f"{path.name}: nothing makes {weights}"
        return
    source = wu.weights_source(weights)  # resolves the name; nothing is downloaded
    assert source.url.startswith(("https://dl.fbaipublicfiles.com/", "https://download.pytorch.org/models/"))
    if cfg.TASK == "detection":  # the detector normalizes with INPUT.FORMAT / MODEL.PIXEL_*
        expected = CAFFE2_INPUT if weights.startswith("catalog://") else TORCHVISION_INPUT
        have = cfg_input_convention(cfg)
        assert input_convention_warning(expected, input_format=have["format"], pixel_mean=have["pixel_mean"],
                                        pixel_std=have["pixel_std"], source=weights) is None
    if weights.startswith("catalog://ImageNetPretrained/"):
        assert bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1) == source.stride_in_1x1
        assert cfg.INPUT.FORMAT == "BGR"


def test_no_shipped_config_names_a_file_nothing_makes():
    named = {load_config(str(p)).MODEL.WEIGHTS for p in CONFIGS}
    assert not any(w.startswith(("weights/", "checkpoints/")) for w in named), named


@pytest.mark.parametrize("name,url,stride_in_1x1", [
    ("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml",
     "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/47261647/R-50-GN.pkl", False),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
     "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl", True),
])
def test_detectron2_configs_weights_names_resolve_as_detectron2_resolves_them(name, url, stride_in_1x1):
    """detectron2's own YAML files, read as they are: their catalog:// and detectron2:// names point
    where detectron2's ModelCatalog / Detectron2Handler point, with the stride the config says."""
    cfg = load_config(str(ROOT / "tests" / "data" / "detectron2_configs" / name))
    assert wu.weights_source(cfg.MODEL.WEIGHTS).url == url
    assert bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1) is stride_in_1x1
