"""gn_det's cost of GN, one command: training step time and peak memory, parameters and FLOPs,
the torchvision peer, and folded-WS inference. Tables on stdout, everything as JSON.

    python benchmarks/bench_suite.py --out bench_suite.json                 # CPU, 512 px, 1 thread
    python benchmarks/bench_suite.py --device cuda --iters 30 --warmup 5 --out bench_suite_gpu.json
    python benchmarks/bench_suite.py --only R50-FPN --iters 5               # rows whose name has R50-FPN
    python benchmarks/bench_suite.py --smoke --out /tmp/smoke.json          # seconds: the test's run

Training rows: Mask R-CNN R50-FPN (the GN paper's configs: FrozenBN with the 4conv1fc box head, GN,
GN+WS) and R18-FPN (the CPU demo's configs), plus each family's FrozenBN 2fc config (the peer's
twin) at 1 and 2 images; the video models (I3D R50 and the small 3D R18 of configs/video/; BN, GN,
GN+WS) at 1 and 2 clips. Each step is ``Trainer.run_step`` on one fixed fake batch (data loading is
not timed). Rows are grouped by model and batch; within a group the rounds are interleaved (one
step of each row per round, in rotating order), so machine noise hits the rows alike, and every
ratio divides by the baseline row of the same group measured in the same rounds (FrozenBN for
detection, BN for video). The median after ``--warmup`` rounds is reported.

The peer: torchvision's own Mask R-CNN (FrozenBN ResNet, 2fc head; see :mod:`bench_peer`) with the
same image size, anchors, RPN/RoI settings and classes, trained with a plain SGD step on the same
batch, interleaved with gn_det's FrozenBN 2fc row (R50: configs/mask_rcnn_R_50_FPN_2x.yaml, already
2fc; R18: the demo's FrozenBN config with a 2fc head and 256-channel FPN and mask head, the only
widths torchvision builds); the ratio is gn_det / torchvision. ``--profile-peer N`` adds a
torch.profiler comparison of N steps of each pair (self time per op, the largest differences).

Peak training memory: on CUDA ``torch.cuda.max_memory_allocated`` over the row's steps, less what the
other rows of the process hold; on CPU, a separate process (glibc's mmap threshold fixed, so freed
tensors leave RSS) builds each row alone and reports the peak RSS over ``--memory-steps`` steps
(VmHWM, reset after the build) less the RSS after the build, plus the model's own parameters and
buffers.

FLOPs (fvcore, convolutions, linear layers, matmuls and norms; elementwise ops not counted) are of
one inference forward at the benchmark's input size, with the RoI heads' score threshold at 0 so
every model makes its full DETECTIONS_PER_IMAGE detections. Inference rows time GN, GN+WS and
GN+WS with WS folded (``fold_ws``) in eval mode without grad, at one image, same threshold.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench_fixtures import (FixedBatchDetectionTask, FixedBatchVideoTask, SteppedTrainer, busy_processes, fake_batch,
                            fake_clips, machine_info, synchronize, tensor_bytes, trainer_opts)
from bench_peer import PeerStepper, build_peer, peer_inference
from gn_det.config import load_config
from gn_det.engine.trainer import Trainer
from gn_det.layers.ws_conv import fold_ws
from gn_det.utils.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]  # configs are named relative to the repository
_R18 = "configs/synthetic/mask_rcnn_R_18_FPN_{}_demo.yaml"
# The peer's twin of a family: FrozenBN, 2fc box head, 256-channel FPN and mask head.
_TWO_FC = ("MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "2", "MODEL.ROI_BOX_HEAD.FC_DIM", "1024",
           "MODEL.FPN.OUT_CHANNELS", "256", "MODEL.ROI_MASK_HEAD.CONV_DIM", "256")
# family -> norm -> (config, opts); the first norm is the family's baseline.
DETECTION = {
    "R50-FPN": {"FrozenBN": ("configs/mask_rcnn_R_50_FPN_4conv1fc_frozenbn_2x.yaml", ()),
                "GN": ("configs/mask_rcnn_R_50_FPN_gn_2x.yaml", ()),
                "GN+WS": ("configs/mask_rcnn_R_50_FPN_gn_ws_2x.yaml", ()),
                "FrozenBN-2fc": ("configs/mask_rcnn_R_50_FPN_2x.yaml", ())},
    "R18-FPN": {"FrozenBN": (_R18.format("frozenbn"), ()), "GN": (_R18.format("gn"), ()),
                "GN+WS": (_R18.format("gn_ws"), ()), "FrozenBN-2fc": (_R18.format("frozenbn"), _TWO_FC)},
}
VIDEO = {
    "I3D-R50": {"BN": ("configs/video/i3d_R_50_32x2_bn_8clips.yaml", ()),
                "GN": ("configs/video/i3d_R_50_32x2_gn_8clips.yaml", ()),
                "GN+WS": ("configs/video/i3d_R_50_32x2_gn_ws_8clips.yaml", ())},
    "R3D-18": {"BN": ("configs/video/synthetic/r3d_18_bn_demo.yaml", ()),
               "GN": ("configs/video/synthetic/r3d_18_gn_demo.yaml", ()),
               "GN+WS": ("configs/video/synthetic/r3d_18_gn_demo.yaml", ("MODEL.RESNETS.NORM", "GN+WS"))},
}
# --smoke: few RoIs, proposals and detections, so the 256-channel heads of the peer's twin cost little.
_SMOKE_DETECTION = ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
                    "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "TEST.DETECTIONS_PER_IMAGE", "5")
PEER = "torchvision"  # the peer row's norm column
TWIN = "FrozenBN-2fc"
OBJECTS = 3  # objects per fake image


@dataclass
class Row:
    """One training row: a model family and norm at a batch size."""

    family: str
    norm: str
    batch: int
    kind: str  # "detection", "video" or "peer"
    config: str
    opts: tuple = ()
    baseline: str = ""  # the name of the row this one's time and memory are divided by
    steps_s: list = field(default_factory=list)
    peak_mib: float | None = None

    @property
    def name(self) -> str:
        return f"{self.family} {self.norm} x{self.batch}"

    @property
    def group(self) -> tuple[str, int]:
        return self.family, self.batch


def all_rows(batches: list[int], smoke: bool) -> list[Row]:
    """Every row of the suite (``--smoke``: the R18 families only)."""
    rows = []
    for batch in batches:
        for kind, table, smoke_family in (("detection", DETECTION, "R18-FPN"), ("video", VIDEO, "R3D-18")):
            for family, norms in table.items():
                if smoke and family != smoke_family:
                    continue
                base = next(iter(norms))
                for norm, (config, opts) in norms.items():
                    rows.append(Row(family, norm, batch, kind, config, opts, f"{family} {base} x{batch}"))
                if kind == "detection":
                    config, opts = norms[TWIN]
                    rows.append(Row(family, PEER, batch, "peer", config, opts, f"{family} {TWIN} x{batch}"))
    return rows


def select(rows: list[Row], only: list[str] | None) -> list[Row]:
    """Rows whose name contains one of ``only`` (all without it), with the rows they divide by."""
    if not only:
        return rows
    names = {r.name for r in rows if any(o in r.name for o in only)}
    for _ in range(2):  # a peer's twin, and the twin's baseline
        names |= {r.baseline for r in rows if r.name in names}
    return [r for r in rows if r.name in names]


# ------------------------------------------------------------------------------------------ building
def row_cfg(row: Row, args, output_dir: str):
    """The row's config with the timing overrides, the benchmark's input size and clip shape."""
    opts = trainer_opts(output_dir, row.batch, args.device) + list(row.opts)
    if row.kind == "video":
        frames, crop = video_shape(row.family, args)
        opts += ["DATA.NUM_FRAMES", str(frames), "DATA.TRAIN_CROP_SIZE", str(crop)]
    elif args.smoke:
        opts += list(_SMOKE_DETECTION)
    return load_config(str(REPO / row.config), opts)


def video_shape(family: str, args) -> tuple[int, int]:
    """(frames, crop) of a video family's clips: ``--video-frames/--video-crop`` for I3D-R50 (CPU
    default 8 x 112, CUDA: the config's 32 x 224); the small model at its config's (4 x 48 with --smoke)."""
    if family == "I3D-R50":
        cuda = args.device.startswith("cuda")
        return args.video_frames or (32 if cuda else 8), args.video_crop or (224 if cuda else 112)
    return (4, 48) if args.smoke else (8, 48)


class Runner:
    """A built row: ``step()`` trains once; ``state()`` is what the row keeps between steps."""

    def __init__(self, row: Row, args, output_dir: str):
        self.row = row
        self.device = torch.device(args.device)
        cfg = row_cfg(row, args, output_dir)
        torch.manual_seed(0)
        if row.kind == "video":
            frames, crop = video_shape(row.family, args)
            batch = fake_clips(row.batch, frames, crop, int(cfg.MODEL.NUM_CLASSES))
            trainer = Trainer(cfg, FixedBatchVideoTask(batch))
        else:
            batch = fake_batch(row.batch, args.size, OBJECTS, int(cfg.MODEL.ROI_HEADS.NUM_CLASSES))
            trainer = Trainer(cfg, FixedBatchDetectionTask(batch)) if row.kind == "detection" else None
        if trainer is not None:
            self.model, self.optimizer = trainer.unwrapped_model, trainer.optimizer
            self.step = SteppedTrainer(trainer).step
        else:
            peer = PeerStepper(build_peer(cfg, args.size), cfg, batch, self.device)
            self.model, self.optimizer, self.step = peer.model, peer.optimizer, peer.step

    def state(self) -> int:
        """Bytes of the row's parameters, buffers, gradients and optimizer state."""
        return tensor_bytes(self.model, self.optimizer)


def time_group(rows: list[Row], args, counts: list[dict] | None = None) -> None:
    """Interleaved rounds over ``rows`` (one group): fills ``steps_s`` and, on CUDA, ``peak_mib``;
    then appends to ``counts`` the parameters and FLOPs of each model not counted yet."""
    cuda = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as out:
        runners = [Runner(r, args, out) for r in rows]
        for rnd in range(args.warmup + args.iters):
            k = rnd % len(runners)
            for run in runners[k:] + runners[:k]:
                if cuda:
                    synchronize(run.device)
                    others = torch.cuda.memory_allocated(run.device) - run.state()
                    torch.cuda.reset_peak_memory_stats(run.device)
                t0 = time.perf_counter()
                run.step()
                synchronize(run.device)
                seconds = time.perf_counter() - t0
                if cuda:
                    peak = (torch.cuda.max_memory_allocated(run.device) - others) / 2**20
                    run.row.peak_mib = max(run.row.peak_mib or 0.0, peak)
                if rnd >= args.warmup:
                    run.row.steps_s.append(seconds)
        for run in runners:  # after the timing: counting sets the models to eval mode
            if counts is not None and (run.row.family, run.row.norm) not in {(c["family"], c["norm"]) for c in counts}:
                counts.append(count_model(run.model, run.row, args))
        del runners
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------- CPU memory
def _rss_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def cpu_memory_rows(rows: list[Row], args) -> dict[str, float]:
    """Peak training memory (MiB) of each row built alone, in this process (the worker's side)."""
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    result = {}
    with tempfile.TemporaryDirectory() as out:
        for row in rows:
            run = Runner(row, args, out)
            own = tensor_bytes(run.model) / 2**20
            gc.collect()
            trim(0)
            before = _rss_kib("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS
                f.write("5")
            for _ in range(args.memory_steps):
                run.step()
            result[row.name] = own + (_rss_kib("VmHWM") - before) / 1024
            del run
            gc.collect()
            trim(0)
    return result


def measure_cpu_memory(rows: list[Row], args) -> str | None:
    """Fill ``peak_mib`` of ``rows`` from a worker process; returns why not, if it could not."""
    cmd = [sys.executable, __file__, "--memory-worker", "--device", "cpu", "--threads", str(args.threads),
           "--size", str(args.size), "--memory-steps", str(args.memory_steps)]
    if args.video_frames:
        cmd += ["--video-frames", str(args.video_frames)]
    if args.video_crop:
        cmd += ["--video-crop", str(args.video_crop)]
    cmd += ["--only"] + [r.name for r in rows] + (["--smoke"] if args.smoke else [])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return f"memory worker failed: {proc.stderr.strip().splitlines()[-1:]}"
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in rows:
        r.peak_mib = peaks.get(r.name)
    return None


# ------------------------------------------------------------------------------------- FLOPs, params
class _Traced(nn.Module):
    """Tensor-in, tensors-out view of a model's inference call, for fvcore's tracer."""

    def __init__(self, model: nn.Module, call):
        super().__init__()
        self.model, self.call = model, call

    def forward(self, x):
        return self.call(x)


def _detection_call(model):
    def run(image):
        d = model.run([image])[0][0]
        return d["boxes"], d["scores"], d["masks"]
    return run


def inference_call(model: nn.Module, row: Row, args) -> tuple[object, torch.Tensor]:
    """(tensor-in call, one input on the device) of ``row``'s model, set to eval mode, at batch 1;
    detection models make all DETECTIONS_PER_IMAGE detections (score threshold 0)."""
    device = torch.device(args.device)
    model.eval()
    if row.kind == "video":
        frames, crop = video_shape(row.family, args)
        x = fake_clips(1, frames, crop, 2)[0]["video"][None].to(device)
        return (lambda v: model.head(model.resnet(model.network_input(v)))), x
    model.roi_heads.score_thresh = 0.0
    x = fake_batch(1, args.size, OBJECTS, 2)[0]["image"].to(device)
    return (peer_inference(model) if row.kind == "peer" else _detection_call(model)), x


def build_detector(row: Row, args, output_dir: str) -> nn.Module:
    """``row``'s gn_det detection model, randomly initialized, on the device."""
    from gn_det.modeling.mask_rcnn import build_mask_rcnn

    torch.manual_seed(0)
    return build_mask_rcnn(row_cfg(row, args, output_dir)).to(torch.device(args.device))


def count_model(model: nn.Module, row: Row, args) -> dict:
    """Parameters (all, and trainable as built: FREEZE_AT) and fvcore inference FLOPs of ``model``."""
    from fvcore.nn import FlopCountAnalysis

    call, x = inference_call(model, row, args)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        flops = FlopCountAnalysis(_Traced(model, call), (x,))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        by_op = {k: v / 1e9 for k, v in flops.by_operator().items()}  # one trace; total() would trace again
    return {"family": row.family, "norm": row.norm, "config": row.config, "input": list(x.shape),
            "params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "gflops": sum(by_op.values()), "gflops_by_operator": by_op}


# ------------------------------------------------------------------------------------------ inference
def inference_rows(family: str, args, output_dir: str) -> dict:
    """GN vs GN+WS vs GN+WS folded, eval mode without grad, one image, interleaved rounds."""
    rows = {n: Row(family, n, 1, "detection", *DETECTION[family][n]) for n in ("GN", "GN+WS")}
    gn, ws = build_detector(rows["GN"], args, output_dir), build_detector(rows["GN+WS"], args, output_dir)
    (gn_call, x), (ws_call, _) = inference_call(gn, rows["GN"], args), inference_call(ws, rows["GN+WS"], args)
    folded = copy.deepcopy(ws)
    n_folded = fold_ws(folded)
    calls = {"GN": gn_call, "GN+WS": ws_call, "GN+WS folded": _detection_call(folded)}
    device = torch.device(args.device)
    seconds: dict[str, list[float]] = {k: [] for k in calls}
    names = list(calls)
    with torch.no_grad():
        diff_features = max((a - b).abs().max().item() for a, b in zip(
            ws.backbone(ws.transform([x])[0].tensors).values(),
            folded.backbone(folded.transform([x])[0].tensors).values()))
        out_ws, out_folded = ws_call(x), calls["GN+WS folded"](x)
        same = all(a.shape == b.shape for a, b in zip(out_ws, out_folded))
        diff_out = max((a.float() - b.float()).abs().max().item() for a, b in zip(out_ws, out_folded)) if same else None
        for rnd in range(args.warmup + args.iters):
            k = rnd % len(names)
            for name in names[k:] + names[:k]:
                synchronize(device)
                t0 = time.perf_counter()
                calls[name](x)
                synchronize(device)
                if rnd >= args.warmup:
                    seconds[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"family": family, "image": list(x.shape), "convs_folded": n_folded, "median_s": med,
            "steps_s": seconds, "ratio_folded_vs_gn": med["GN+WS folded"] / med["GN"],
            "ratio_unfolded_vs_gn": med["GN+WS"] / med["GN"],
            "max_abs_diff_fpn_features": diff_features, "max_abs_diff_outputs": diff_out}


def profile_peer(rows: list[Row], args, steps: int) -> dict:
    """torch.profiler over ``steps`` steps of each peer row and its gn_det twin (after one warm-up
    step, taking turns): self time per op (ms per step), largest first, and which ops differ most."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    by_name = {r.name: r for r in rows}
    report = {}
    with tempfile.TemporaryDirectory() as out:
        for peer in (r for r in rows if r.kind == "peer" and r.baseline in by_name):
            pair = [Runner(by_name[peer.baseline], args, out), Runner(peer, args, out)]
            for run in pair:
                run.step()
            tables: list[dict[str, float]] = [{}, {}]
            key = "self_device_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
            for i in range(steps):  # one profiled step each, taking turns, so noise hits both alike
                for j in (i % 2, 1 - i % 2):
                    with profile(activities=activities) as prof:
                        pair[j].step()
                        synchronize(pair[j].device)
                    for e in prof.key_averages():
                        tables[j][e.key] = tables[j].get(e.key, 0.0) + getattr(e, key) / 1e3 / steps
            gn_det, tv = tables
            diff = {k: (gn_det.get(k, 0.0), tv.get(k, 0.0)) for k in set(gn_det) | set(tv)}
            report[peer.name] = {
                "gn_det_total_ms": sum(gn_det.values()), "torchvision_total_ms": sum(tv.values()),
                "gn_det_top_ms": dict(sorted(gn_det.items(), key=lambda kv: -kv[1])[:15]),
                "torchvision_top_ms": dict(sorted(tv.items(), key=lambda kv: -kv[1])[:15]),
                "largest_differences_ms": {k: [a, b, a - b] for k, (a, b) in
                                           sorted(diff.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:20]}}
            del pair
            gc.collect()
    return report


# --------------------------------------------------------------------------------------------- report
def summarize(rows: list[Row]) -> tuple[list[dict], list[dict]]:
    """Training rows with medians and ratios to their baseline, and the peer comparisons."""
    by_name = {r.name: r for r in rows}
    med = {r.name: statistics.median(r.steps_s) for r in rows}
    train = []
    for r in rows:
        base = by_name.get(r.baseline)
        d = {k: v for k, v in asdict(r).items()}
        d.update(name=r.name, median_s=med[r.name], mean_s=statistics.mean(r.steps_s), min_s=min(r.steps_s))
        if base is not None and r.kind != "peer":
            d["time_ratio"] = med[r.name] / med[base.name]
            d["mem_ratio"] = r.peak_mib / base.peak_mib if r.peak_mib and base.peak_mib else None
        train.append(d)
    peers = [{"family": r.family, "batch": r.batch, "gn_det_row": r.baseline, "peer_row": r.name,
              "gn_det_median_s": med[r.baseline], "peer_median_s": med[r.name],
              "ratio_gn_det_vs_peer": med[r.baseline] / med[r.name]}
             for r in rows if r.kind == "peer" and r.baseline in med]
    return train, peers


def print_tables(result: dict) -> None:
    """The JSON's tables, as text."""
    s = result["settings"]
    m = result["machine"]
    print(f"# {m['device_name']} ({m['device']}), torch {m['torch']}, {s['threads']} thread(s), "
          f"{m['cpu_count']} CPUs, load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}; "
          f"detection images {s['size']}x{s['size']}, video clips {s['video_shapes']}; "
          f"{s['iters']} timed rounds after {s['warmup']} warm-up")
    for when in ("start", "end"):
        print(f"# busy processes at the {when}: {'; '.join(m.get('busy_processes_' + when) or ['none'])}")
    print(f"\n## Training step (Trainer.run_step), median s; peak memory MiB: {s['memory_measure']}")
    print(f"{'row':<28}{'median s':>10}{'x base':>8}{'peak MiB':>10}{'x base':>8}  baseline")
    for r in result["train"]:
        ratio = f"{r['time_ratio']:.3f}" if "time_ratio" in r else "-"
        mem = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        mr = f"{r['mem_ratio']:.3f}" if r.get("mem_ratio") else "-"
        print(f"{r['name']:<28}{r['median_s']:>10.4f}{ratio:>8}{mem:>10}{mr:>8}  {r['baseline']}")
    print("\n## Peer: torchvision's Mask R-CNN vs gn_det's twin config (FrozenBN, 2fc head), same batch")
    for p in result["peer"]:
        print(f"{p['gn_det_row']:<28}{p['gn_det_median_s']:>10.4f} s   torchvision {p['peer_median_s']:.4f} s"
              f"   gn_det/torchvision {p['ratio_gn_det_vs_peer']:.3f} (target <= 1.05)")
    print("\n## Models: parameters and inference GFLOPs (fvcore, batch 1)")
    for c in result["models"]:
        print(f"{c['family'] + ' ' + c['norm']:<28}{c['params'] / 1e6:>8.2f} M params "
              f"({c['trainable_params'] / 1e6:.2f} M trainable){c['gflops']:>10.2f} GFLOPs  input {c['input']}")
    print("\n## Inference (eval, no grad, 1 image): GN+WS with WS folded vs unfolded vs GN, median s")
    for i in result["inference"]:
        med = i["median_s"]
        print(f"{i['family']:<10} GN {med['GN']:.4f}  GN+WS {med['GN+WS']:.4f}  folded {med['GN+WS folded']:.4f}  "
              f"folded/GN {i['ratio_folded_vs_gn']:.3f} (target <= 1.03)  unfolded/GN {i['ratio_unfolded_vs_gn']:.3f}"
              f"  max |diff| {i['max_abs_diff_fpn_features']:.1e}")
    print(f"\n# total {result['runtime_s']:.0f} s")


def result_json(rows: list[Row], models: list[dict] | None, inference: list[dict], machine: dict, args,
                memory_measure: str, t_start: float) -> dict:
    """Everything measured so far, as the JSON file holds it."""
    train, peers = summarize(rows)
    machine = dict(machine, loadavg_end=list(os.getloadavg()), busy_processes_end=busy_processes())
    shapes = {f: "x".join(map(str, video_shape(f, args))) for f in VIDEO}
    return {"machine": machine,
            "settings": {"device": args.device, "threads": args.threads, "iters": args.iters,
                         "warmup": args.warmup, "size": args.size, "video_shapes": shapes, "objects": OBJECTS,
                         "batches": args.batches, "smoke": args.smoke, "memory_measure": memory_measure},
            "train": train, "peer": peers, "models": models or [], "inference": inference,
            "runtime_s": time.perf_counter() - t_start}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, help="torch threads (default: 1 on CPU, torch's default on CUDA)")
    parser.add_argument("--iters", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--size", type=int, help="detection image side (default: 800 on CUDA, 512 on CPU)")
    parser.add_argument("--video-frames", type=int, help="I3D-R50 clip frames (default: 32 on CUDA, 8 on CPU)")
    parser.add_argument("--video-crop", type=int, help="I3D-R50 crop side (default: 224 on CUDA, 112 on CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2], help="images/clips per step (1 2)")
    parser.add_argument("--only", nargs="+", help="rows whose name contains one of these (with their baselines)")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps per row of the CPU memory pass")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory pass")
    parser.add_argument("--no-flops", action="store_true", help="skip parameter and FLOP counts")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: R18 families only, 64 px, few RoIs, 1 image, 2 iters (the test's run)")
    parser.add_argument("--profile-peer", type=int, default=0, metavar="STEPS",
                        help="also profile STEPS steps of each peer row and its twin (torch.profiler)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.batches = args.size or 64, [1]
        args.iters, args.warmup, args.memory_steps = min(args.iters, 2), min(args.warmup, 1), 1
    cuda = args.device.startswith("cuda")
    args.size = args.size or (800 if cuda else 512)
    args.threads = args.threads or (torch.get_num_threads() if cuda else 1)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    rows = select(all_rows(args.batches, args.smoke), args.only)
    if not rows:
        print(f"--only {args.only} selects no row; names look like 'R50-FPN GN x2'", file=sys.stderr)
        return 2
    if args.memory_worker:
        print(json.dumps(cpu_memory_rows(rows, args)))
        return 0
    t_start = time.perf_counter()
    machine = machine_info(torch.device(args.device), args.threads)
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    models: list[dict] | None = None if args.no_flops else []
    done: list[Row] = []
    for g, members in groups.items():
        print(f"timing {g[0]} x{g[1]}: {len(members)} rows ...", file=sys.stderr, flush=True)
        time_group(members, args, models)
        done += members
        if args.out:  # a long CPU run leaves its finished groups behind
            partial = result_json(done, models, [], machine, args, "not measured yet", t_start)
            atomic_write_text(json.dumps(dict(partial, partial=True), indent=2), args.out)
    cuda = args.device.startswith("cuda")
    if cuda:
        memory_measure = "torch.cuda.max_memory_allocated over the row's steps, less the other rows' tensors"
    elif args.no_memory:
        memory_measure = "not measured (--no-memory)"
    else:
        memory_measure = (f"CPU: peak RSS over {args.memory_steps} steps of the row alone in a worker process "
                          "(VmHWM reset after the build) - RSS after the build + its parameters and buffers")
        why = measure_cpu_memory(rows, args)
        if why:
            memory_measure = why
    inference = []
    with tempfile.TemporaryDirectory() as out:
        for family in DETECTION:
            if any(r.family == family and r.norm in ("GN", "GN+WS") for r in rows):
                inference.append(inference_rows(family, args, out))
    result = result_json(rows, models, inference, machine, args, memory_measure, t_start)
    if args.profile_peer:
        result["peer_profile"] = profile_peer(rows, args, args.profile_peer)
        for name, p in result["peer_profile"].items():
            print(f"\n## Profile of {name} vs its gn_det twin: ms per step, largest differences (gn_det - torchvision)")
            print(f"total {p['gn_det_total_ms']:.1f} vs {p['torchvision_total_ms']:.1f}")
            for op, (a, b, d) in p["largest_differences_ms"].items():
                print(f"  {op[:58]:<60}{d:>+10.2f}  ({a:.2f} / {b:.2f})")
    print_tables(result)
    if args.out:
        atomic_write_text(json.dumps(result, indent=2), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
