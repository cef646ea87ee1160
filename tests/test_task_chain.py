"""The README's chain across tasks: a classification run's model_final.pth starts Mask R-CNN."""

import os

import pytest
import torch

from gn_det.checkpoint import CheckpointError
from gn_det.cli.train_net import main as train_net
from gn_det.config import load_config
from gn_det.engine.trainer import load_model_weights
from gn_det.modeling.mask_rcnn import build_mask_rcnn
from gn_det.tasks.detection import DetectionTask

ROOT = os.path.join(os.path.dirname(__file__), "..")
CLS = os.path.join(ROOT, "configs", "classification", "synthetic", "R_18_gn_test.yaml")
DET = os.path.join(ROOT, "configs", "synthetic", "mask_rcnn_R_18_FPN_test.yaml")


@pytest.fixture(scope="module")
def classifier_runs(tmp_path_factory):
    """model_final.pth of two short classification runs: GN and GN+WS."""
    root = tmp_path_factory.mktemp("chain")
    runs = {}
    for norm in ("GN", "GN+WS"):
        out = root / norm.replace("+", "_")
        assert train_net(["--config-file", CLS, "OUTPUT_DIR", str(out), "MODEL.RESNETS.NORM", norm,
                          "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]) == 0
        runs[norm] = out / "model_final.pth"
    return runs


def _detector(norm: str):
    cfg = load_config(DET, ["MODEL.RESNETS.NORM", norm])
    torch.manual_seed(0)
    return cfg, build_mask_rcnn(cfg)


def test_classification_checkpoint_fills_the_detector_backbone(classifier_runs):
    cfg, model = _detector("GN")
    report = load_model_weights(cfg, model, str(classifier_runs["GN"]), DetectionTask())
    trained = torch.load(classifier_runs["GN"], weights_only=True)["model"]
    body = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.body.")}
    assert sorted(report.loaded) == sorted(body) and len(body) == 60
    for key, value in body.items():  # value by value, every tensor
        assert torch.equal(value, trained["resnet." + key.removeprefix("backbone.body.")]), key
    assert set(report.unexpected) == {"fc.weight", "fc.bias"}


def test_gn_ws_classifier_into_a_detector_without_ws_is_refused(classifier_runs):
    cfg, model = _detector("GN")
    with pytest.raises(CheckpointError, match="Weight-Standardized"):
        load_model_weights(cfg, model, str(classifier_runs["GN+WS"]), DetectionTask())
    cfg, model = _detector("GN+WS")
    assert len(load_model_weights(cfg, model, str(classifier_runs["GN+WS"]), DetectionTask()).loaded) == 60
