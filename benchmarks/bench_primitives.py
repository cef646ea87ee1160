"""Before/after timings of gn_det's two per-layer primitives: FrozenBN and WS standardization.

* FrozenBN: "before" is the scale-and-shift gn_det used (scale and shift computed from the
  buffers, then ``x * scale + shift``: two passes over x); "after" is the layer now: one
  ``F.batch_norm(training=False)`` call without grad (detectron2's form), one
  ``addcmul(shift, x, scale)`` with grad (batch_norm's backward would keep x alive: the JSON
  gives the bytes each keeps for backward).
* WS: "before" is autograd through ``var_mean`` and the formula's elementwise ops; "after"
  is :func:`gn_det.layers.standardize_weight` now ("paper"/"timm": one training-mode
  ``F.batch_norm`` over ``weight.reshape(1, out, -1)``; "authors": ``var_mean``, one fused
  multiply-add and a hand-written backward). Timed alone on conv weights of ResNet-50 shapes,
  and inside a WS conv forward+backward on a feature map.

Shapes are those of ResNet-50 (2D, an 512x512 image) and I3D ResNet-50 (3D, 8x224x224 clip)
stages. The two versions run in alternation, ``--repeats`` times each, so machine noise hits
both alike; each row gives the median milliseconds per call and the ratio after / before.

    python benchmarks/bench_primitives.py --out bench_primitives.json
    python benchmarks/bench_primitives.py --smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fixtures import finish_report, machine_info  # noqa: E402

from gn_det.layers import FrozenBatchNorm, standardize_weight  # noqa: E402
from gn_det.layers.ws_conv import get_ws_config  # noqa: E402
from gn_det.utils.table import format_table  # noqa: E402

# (name, feature-map shape (N, C, ...)): where FrozenBN layers of R50 / I3D-R50 run
BN_SHAPES = [("R50 res2", (1, 256, 128, 128)), ("R50 res3", (1, 512, 64, 64)), ("R50 res4", (1, 1024, 32, 32)),
             ("R50 res5", (1, 2048, 16, 16)), ("I3D res3", (1, 512, 4, 28, 28)), ("I3D res4", (1, 1024, 4, 14, 14))]
# (name, conv weight shape): R50 bottleneck convs, and I3D's temporal / spatial ones
WS_SHAPES = [("R50 res2 3x3", (64, 64, 3, 3)), ("R50 res3 1x1", (512, 128, 1, 1)), ("R50 res4 3x3", (256, 256, 3, 3)),
             ("R50 res5 3x3", (512, 512, 3, 3)), ("R50 res5 1x1", (2048, 512, 1, 1)),
             ("I3D res4 3x1x1", (256, 1024, 3, 1, 1)), ("I3D res5 1x3x3", (512, 512, 1, 3, 3))]
# (name, weight shape, input shape): a whole WS conv, forward + backward
WS_CONV_SHAPES = [("R50 res4 3x3 conv", (256, 256, 3, 3), (1, 256, 32, 32)),
                  ("I3D res4 1x3x3 conv", (256, 256, 1, 3, 3), (1, 256, 4, 14, 14))]
SMOKE = {"bn": [("tiny 2D", (1, 16, 8, 8)), ("tiny 3D", (1, 16, 2, 4, 4))],
         "ws": [("tiny", (8, 4, 3, 3))], "conv": [("tiny conv", (8, 4, 3, 3), (1, 4, 6, 6))]}


def frozen_bn_before(bn: FrozenBatchNorm, x: torch.Tensor) -> torch.Tensor:
    """gn_det's FrozenBN forward before the fused one: scale and shift, two passes over x."""
    scale, shift = bn.scale_and_shift()
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.reshape(shape).to(x.dtype) + shift.reshape(shape).to(x.dtype)


def ws_before(weight: torch.Tensor, mode: str) -> torch.Tensor:
    """gn_det's WS standardization before the fused forms: var_mean, then the formula."""
    cfg = get_ws_config(mode)
    dims = tuple(range(1, weight.dim()))
    var, mean = torch.var_mean(weight, dim=dims, correction=int(cfg.unbiased), keepdim=True)
    if cfg.eps_inside_sqrt:
        return (weight - mean) * torch.rsqrt(var + cfg.eps)
    return (weight - mean) / (var.sqrt() + cfg.eps)


def _median_ms(fns: dict[str, Callable[[], None]], repeats: int, calls: int) -> dict[str, float]:
    """Median ms per call of each function, the functions run in alternation ``repeats`` times."""
    for fn in fns.values():  # warm-up (allocator, first-call dispatch)
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _frozen_bn(c: int) -> FrozenBatchNorm:
    bn = FrozenBatchNorm(c)
    with torch.no_grad():
        for t in bn.buffers():
            t.copy_(torch.rand(c) + 0.5)
    return bn


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd keeps for the backward of ``fn()``."""
    sizes: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.nbytes) or t, lambda t: t):
        fn()
    return sum(sizes)


def bench_frozen_bn(shapes, repeats: int, calls: int) -> list[dict]:
    rows = []
    for name, shape in shapes:
        bn, x = _frozen_bn(shape[1]), torch.randn(shape)
        xg, grad = x.clone().requires_grad_(), torch.randn(shape)
        with torch.no_grad():
            t = _median_ms({"before": lambda: frozen_bn_before(bn, x), "after": lambda: bn(x)}, repeats, calls)
        rows.append({"primitive": "FrozenBN", "shape": name, "dims": list(shape), "pass": "forward (no grad)", **t})
        t = _median_ms({"before": lambda: frozen_bn_before(bn, xg).backward(grad),
                        "after": lambda: bn(xg).backward(grad)}, repeats, calls)
        rows.append({"primitive": "FrozenBN", "shape": name, "dims": list(shape), "pass": "forward+backward", **t,
                     "saved_bytes_before": saved_bytes(lambda: frozen_bn_before(bn, xg)),
                     "saved_bytes_after": saved_bytes(lambda: bn(xg)),
                     "saved_bytes_batch_norm": saved_bytes(lambda: torch.nn.functional.batch_norm(
                         xg, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps))})
    return rows


def bench_ws(shapes, conv_shapes, repeats: int, calls: int) -> list[dict]:
    rows = []
    for mode in ("authors", "paper", "timm"):
        for name, shape in shapes:
            w, grad = torch.randn(shape).mul_(0.05).requires_grad_(), torch.randn(shape)
            t = _median_ms({"before": lambda: ws_before(w, mode).backward(grad),
                            "after": lambda: standardize_weight(w, mode).backward(grad)}, repeats, calls)
            rows.append({"primitive": f"WS {mode}", "shape": name, "dims": list(shape),
                         "pass": "forward+backward", **t})
        for name, wshape, xshape in conv_shapes:
            w = torch.randn(wshape).mul_(0.05).requires_grad_()
            x = torch.randn(xshape).requires_grad_()
            conv = F.conv2d if len(wshape) == 4 else F.conv3d
            pad = tuple(k // 2 for k in wshape[2:])
            grad = torch.randn(conv(x, w, padding=pad).shape)
            t = _median_ms({"before": lambda: conv(x, ws_before(w, mode), padding=pad).backward(grad),
                            "after": lambda: conv(x, standardize_weight(w, mode), padding=pad).backward(grad)},
                           repeats, calls)
            rows.append({"primitive": f"WS {mode}", "shape": name, "dims": list(wshape) + list(xshape),
                         "pass": "conv forward+backward", **t})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="alternations of before/after (default 15)")
    parser.add_argument("--calls", type=int, default=5, help="calls per timing (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 2 repeats: a quick check")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, calls = (2, 1) if args.smoke else (args.repeats, args.calls)
    bn_shapes, ws_shapes, conv_shapes = ((SMOKE["bn"], SMOKE["ws"], SMOKE["conv"]) if args.smoke
                                         else (BN_SHAPES, WS_SHAPES, WS_CONV_SHAPES))
    env = machine_info(torch.device("cpu"), args.threads)
    env.update(repeats=repeats, calls=calls)
    rows = bench_frozen_bn(bn_shapes, repeats, calls) + bench_ws(ws_shapes, conv_shapes, repeats, calls)
    env["loadavg_end"] = list(os.getloadavg())
    for r in rows:
        r["ratio"] = r["after"] / r["before"]
    print(format_table([(r["primitive"], r["shape"], r["pass"], r["before"], r["after"], r["ratio"]) for r in rows],
                       ["primitive", "shape", "pass", "before ms", "after ms", "after/before"]))
    finish_report(env, rows, args.out, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
