"""Time Mask R-CNN training steps (forward + backward + SGD step) for detection configs.

The demo's budget (issue 3) is box AP >= 20 within 15 minutes on a 2-core CPU at 2 images per
batch, so seconds per iteration of the demo models decide how many iterations it gets.

    python benchmarks/bench_mask_rcnn_step.py --out bench_mask_rcnn_step.json
    python benchmarks/bench_mask_rcnn_step.py --configs configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml \\
        --threads 2 --iters 30

Each config trains on one fixed batch of ``--batch`` images at the config's test size
(INPUT.MIN_SIZE_TEST, square) holding ``--objects`` rectangles each, so data loading is not
timed. The first ``--warmup`` iterations are dropped; the table shows median and mean seconds
per iteration and the share of time spent in forward.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gn_det.checkpoint.io import atomic_write_text
from gn_det.config import load_config
from gn_det.modeling.mask_rcnn import build_mask_rcnn

_DEMOS = ("gn", "gn_ws", "bn", "frozenbn")
DEFAULT_CONFIGS = [f"configs/synthetic/mask_rcnn_R_18_FPN_{n}_demo.yaml" for n in _DEMOS]


def fake_batch(num_images: int, size: int, objects: int, num_classes: int, seed: int = 0) -> list[dict]:
    """Noise images with flat rectangles, and their boxes, labels and masks."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(num_images):
        image = torch.rand(3, size, size, generator=g) * 255
        masks = torch.zeros(objects, size, size, dtype=torch.uint8)
        boxes = []
        for j in range(objects):
            w, h = (size // 6 + torch.randint(0, size // 3, (2,), generator=g)).tolist()
            x = int(torch.randint(0, size - w, (1,), generator=g))
            y = int(torch.randint(0, size - h, (1,), generator=g))
            masks[j, y:y + h, x:x + w] = 1
            image[:, y:y + h, x:x + w] = float(torch.randint(0, 256, (1,), generator=g))
            boxes.append([x, y, x + w, y + h])
        batch.append({"image": image, "image_id": i, "height": size, "width": size,
                      "instances": {"boxes": torch.tensor(boxes, dtype=torch.float32),
                                    "labels": torch.randint(1, num_classes + 1, (objects,), generator=g),
                                    "masks": masks}})
    return batch


def time_config(path: str, iters: int, warmup: int, batch_size: int, objects: int) -> dict:
    cfg = load_config(path)
    torch.manual_seed(0)
    model = build_mask_rcnn(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    batch = fake_batch(batch_size, int(cfg.INPUT.MIN_SIZE_TEST), objects, int(cfg.MODEL.ROI_HEADS.NUM_CLASSES))
    steps, forwards = [], []
    for i in tqdm(range(warmup + iters), desc=Path(path).name, leave=False):
        start = time.perf_counter()
        loss = sum(model(batch).values())
        mid = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        end = time.perf_counter()
        if i >= warmup:
            steps.append(end - start)
            forwards.append(mid - start)
    return {"config": path, "norm": cfg.MODEL.RESNETS.NORM, "image_size": int(cfg.INPUT.MIN_SIZE_TEST),
            "median_s_per_iter": statistics.median(steps), "mean_s_per_iter": statistics.mean(steps),
            "forward_share": sum(forwards) / sum(steps), "iters": iters,
            "params_millions": sum(p.numel() for p in model.parameters()) / 1e6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="images per iteration (default 2)")
    parser.add_argument("--objects", type=int, default=3, help="objects per image (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = [time_config(c, args.iters, args.warmup, args.batch, args.objects) for c in args.configs]
    print(f"{'config':<55} {'norm':>8} {'median s/it':>12} {'mean s/it':>10} {'fwd %':>6}")
    for r in rows:
        print(f"{Path(r['config']).name:<55} {r['norm']:>8} {r['median_s_per_iter']:>12.3f} "
              f"{r['mean_s_per_iter']:>10.3f} {100 * r['forward_share']:>6.0f}")
    if args.out:
        env = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
               "batch": args.batch, "objects": args.objects}
        atomic_write_text(json.dumps({"env": env, "results": rows}, indent=2), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
