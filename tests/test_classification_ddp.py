"""TASK classification evaluated by 2 gloo CPU processes (train_net --num-gpus 2) gives the numbers of 1."""

import json
import os

import torch

from gn_det.cli.train_net import main as train_net
from gn_det.config import load_config
from gn_det.data.synthetic_classification import make_synthetic_classification, write_image_folder
from gn_det.evaluation.classification_evaluation import RESULTS_FILE
from gn_det.modeling.classifier import build_classifier

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "classification", "synthetic", "R_18_gn_test.yaml")


def test_two_process_evaluation_equals_one(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by the spawned workers
    images, labels = make_synthetic_classification(4, image_size=32, seed=3)
    paths = write_image_folder(images, labels, tmp_path / "val")
    os.remove(paths[-1])  # 39 images: the two shards differ in size (20 + 19)
    # random weights, without zero-init residuals so that predictions vary from image to image
    opts = ["MODEL.RESNETS.ZERO_INIT_RESIDUAL", "False", "DATASETS.REGISTER", json.dumps([["val39", str(tmp_path / "val")]]),
            "DATASETS.TEST", '("val39",)', "TEST.IMS_PER_BATCH", "8"]
    torch.manual_seed(0)
    weights = tmp_path / "weights.pth"
    torch.save({"model": build_classifier(load_config(CONFIG, opts)).state_dict()}, weights)

    results = []
    for gpus in ("1", "2"):
        out = tmp_path / f"eval{gpus}"
        assert train_net(["--config-file", CONFIG, "--eval-only", "--num-gpus", gpus, "OUTPUT_DIR", str(out),
                          "MODEL.WEIGHTS", str(weights), *opts]) == 0
        results.append(json.loads((out / "inference" / "val39" / RESULTS_FILE).read_text()))
    assert (tmp_path / "eval2" / "log.txt.rank1").exists()  # two processes did run
    one, two = results
    assert one["num_images"] == two["num_images"] == 39
    assert sum(v["num_images"] for v in two["per_class"].values()) == 39
    assert (one["top1"], one["top5"]) == (two["top1"], two["top5"])
    assert one["per_class"] == two["per_class"]  # per image: the same predictions, each counted once
    assert 0 < one["top5"] < 100 and len({v["top1"] for v in one["per_class"].values()}) > 1
