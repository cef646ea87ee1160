#!/usr/bin/env python
"""Inference time of an exported GN+WS classifier, WS folded vs unfolded (``gn-det-export --keep-ws``).

Builds the config's classifier with random weights (no pretrained weights are downloadable here; the
time does not depend on their values), exports it with ``gn-det-export`` as TorchScript and ONNX,
folded and unfolded, and times each program and the eager model on one image, one thread, the
rows interleaved. Unfolded TorchScript uses WS mode "paper": the default "authors" WS is a Python
autograd function that TorchScript cannot hold. Prints a markdown table and writes JSON::

    python benchmarks/bench_export.py --output bench_out/export.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
import warnings

import torch

from gn_det import tasks  # noqa: F401  (registers the built-in tasks)
from gn_det.cli.export import main as export_main
from gn_det.config import load_config
from gn_det.engine.task import get_task
from gn_det.export import onnx_missing
from gn_det.layers.ws_conv import fold_ws
from gn_det.utils.io import atomic_write_text

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "classification", "R_50_gn_ws_imagenet_finetune.yaml")


def _export(config: str, weights: str, out: str, fmt: str, *extra: str) -> None:
    flags = ["--keep-ws"] if extra else []
    export_main(["--config-file", config, "--format", fmt, "--output", out, *flags, *extra, "MODEL.WEIGHTS", weights])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=CONFIG, help="a GN+WS classification config")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per program (median and best reported)")
    parser.add_argument("--output", help="JSON file for the results")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    cfg = load_config(args.config_file, [])
    torch.manual_seed(0)
    model = get_task(cfg.TASK).build_model(cfg).eval()
    size = int(cfg.INPUT.TEST_CROP_SIZE)
    x = torch.randint(0, 256, (1, 3, size, size)).float()
    folded = copy.deepcopy(model)
    fold_ws(folded)
    programs = {"eager PyTorch, WS unfolded (the training model)": lambda: model.resnet(model.normalize(x)),
                "eager PyTorch, WS folded": lambda: folded.resnet(folded.normalize(x))}
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "model.pth")
        torch.save({"model": model.state_dict()}, weights)
        _export(args.config_file, weights, os.path.join(tmp, "folded"), "torchscript")
        _export(args.config_file, weights, os.path.join(tmp, "unfolded"), "torchscript", "MODEL.WS_MODE", "paper")
        for name, folder in (("folded", "folded"), ("unfolded (WS mode paper)", "unfolded")):
            program = torch.jit.load(os.path.join(tmp, folder, "model.torchscript.pt"))
            programs[f"TorchScript, WS {name}"] = (lambda p: lambda: p(x))(program)
        if not onnx_missing():
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            _export(args.config_file, weights, os.path.join(tmp, "folded"), "onnx")
            _export(args.config_file, weights, os.path.join(tmp, "unfolded_onnx"), "onnx", "MODEL.WS_MODE", "authors")
            for name, folder in (("folded", "folded"), ("unfolded", "unfolded_onnx")):
                session = onnxruntime.InferenceSession(os.path.join(tmp, folder, "model.onnx"), options,
                                                       providers=["CPUExecutionProvider"])
                programs[f"ONNX Runtime, WS {name}"] = (lambda s: lambda: s.run(None, {"images": x.numpy()}))(session)
        times: dict[str, list[float]] = {k: [] for k in programs}
        with torch.no_grad():
            for run in programs.values():
                run(), run()  # warm-up (TorchScript's profiling runs)
            for _ in range(args.runs):
                for name, run in programs.items():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
    results = {k: {"median_ms": 1000 * statistics.median(v), "best_ms": 1000 * min(v)} for k, v in times.items()}
    print(f"| program ({os.path.basename(args.config_file)}, batch 1, {size} px, 1 thread) | median | best |")
    print("| --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['median_ms']:.0f} ms | {r['best_ms']:.0f} ms |")
    if args.output:
        atomic_write_text(json.dumps({"config": args.config_file, "load_average": os.getloadavg(), "results": results},
                                     indent=2) + "\n", args.output)


if __name__ == "__main__":
    main()
