#!/usr/bin/env bash
# GPU checks and timings, run as one script on a lent GPU machine (see DEVELOPERS notes):
#   bash benchmarks/gpu_check.sh OUT_DIR          # everything below
#   bash benchmarks/gpu_check.sh OUT_DIR suite    # only part 3's benchmark suite (GPU run time not measured yet: 976 s on a 2-core CPU at batch 2)
# 1. detection (Mask R-CNN R-18-FPN GN, tiny synthetic set) trained on CUDA in fp32 and with AMP
#    (fp16 autocast + GradScaler), evaluated, resumed from its mid-run checkpoint, --eval-only;
# 2. the classification task on CUDA (tiny synthetic config), when present;
# 3. the benchmark suite (benchmarks/bench_suite.py, fp32): train-step time and peak memory of
#    Mask R-CNN R50/R18-FPN FrozenBN / GN / GN+WS and the video models at 1 and 2 images per GPU,
#    the torchvision peer, parameters and FLOPs, folded-WS inference -> OUT_DIR/bench_suite.json;
#    and the R-50-FPN step with AMP (bench_mask_rcnn_step.py --amp).
# Every log goes to OUT_DIR; the script keeps going after a failed part and says which failed.
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GN_DET_CACHE=/tmp/gn_det_cache
fail=()
run() {  # run NAME CMD...: log to OUT/NAME.log, note a failure
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$(date +%s)
  if "$@" >"$OUT/$name.log" 2>&1; then echo "    ok ($(( $(date +%s) - t0 )) s)"; else echo "    FAILED ($(( $(date +%s) - t0 )) s)"; fail+=("$name"); tail -5 "$OUT/$name.log"; fi
}
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
suite() {
  run bench_suite python3 benchmarks/bench_suite.py --device cuda --iters 20 --warmup 5 --out "$OUT/bench_suite.json"
  sed -n '/^#/,$p' "$OUT/bench_suite.log"  # the suite's tables
}
if [ "${2:-}" = suite ]; then suite; echo "failed parts: ${fail[*]:-none}"; exit 0; fi
DET=configs/synthetic/mask_rcnn_R_18_FPN_test.yaml
COMMON=(MODEL.DEVICE cuda SOLVER.MAX_ITER 40 SOLVER.CHECKPOINT_PERIOD 20 SEED 3 LOG_PERIOD 1 DATALOADER.NUM_WORKERS 2)
run det_fp32 python3 -m gn_det.cli.train_net --config-file $DET OUTPUT_DIR /tmp/det_fp32 "${COMMON[@]}"
run det_amp python3 -m gn_det.cli.train_net --config-file $DET OUTPUT_DIR /tmp/det_amp SOLVER.AMP.ENABLED True "${COMMON[@]}"
rm -rf /tmp/det_resume && cp -r /tmp/det_fp32 /tmp/det_resume && rm -f /tmp/det_resume/model_final.pth && echo model_0000019.pth > /tmp/det_resume/last_checkpoint
run det_resume python3 -m gn_det.cli.train_net --config-file $DET --resume OUTPUT_DIR /tmp/det_resume "${COMMON[@]}"
run det_eval_only python3 -m gn_det.cli.train_net --config-file $DET --eval-only OUTPUT_DIR /tmp/det_eval MODEL.WEIGHTS /tmp/det_fp32/model_final.pth "${COMMON[@]}"
for d in det_fp32 det_amp det_resume; do cp /tmp/$d/metrics.json "$OUT/$d.metrics.json" 2>/dev/null; done
cp /tmp/det_eval/eval_results.json "$OUT/det_eval_results.json" 2>/dev/null
CLS=configs/classification/synthetic/R_18_gn_test.yaml
if [ -f $CLS ]; then
  run cls_cuda python3 -m gn_det.cli.train_net --config-file $CLS OUTPUT_DIR /tmp/cls MODEL.DEVICE cuda
  cp /tmp/cls/metrics.json "$OUT/cls.metrics.json" 2>/dev/null
fi
R50=(configs/mask_rcnn_R_50_FPN_2x.yaml configs/mask_rcnn_R_50_FPN_gn_2x.yaml configs/mask_rcnn_R_50_FPN_gn_ws_2x.yaml)
suite
run bench_amp python3 benchmarks/bench_mask_rcnn_step.py --device cuda --amp --configs "${R50[@]}" --iters 30 --warmup 5 --batch 2 --threads 8 --out "$OUT/bench_r50_amp.json"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def last(name, key):
    try:
        rows = [json.loads(l) for l in open(os.path.join(out, f"{name}.metrics.json")) if l.strip()]
    except FileNotFoundError:
        return None
    vals = [r[key] for r in rows if key in r]
    return vals[-1] if vals else None
def losses(name):
    try:
        return {r["iteration"]: r["total_loss"] for r in map(json.loads, open(os.path.join(out, f"{name}.metrics.json"))) if "total_loss" in r}
    except FileNotFoundError:
        return {}
for name in ("det_fp32", "det_amp"):
    l = losses(name)
    print(name, "first/last loss", l.get(min(l)) if l else None, l.get(max(l)) if l else None, "bbox/AP", last(name, "bbox/AP"), "segm/AP", last(name, "segm/AP"))
a, b = losses("det_fp32"), losses("det_resume")
common = sorted(set(a) & set(b) & set(range(20, 40)))
print("resume: iterations compared", len(common), "max |loss diff|", max((abs(a[i] - b[i]) for i in common), default=None))
try:
    ev = json.load(open(os.path.join(out, "det_eval_results.json")))
    print("eval-only bbox/AP", next(iter(ev.values()))["bbox"]["AP"], "vs final", last("det_fp32", "bbox/AP"))
except FileNotFoundError:
    print("eval-only: no results")
print("classification top1", last("cls", "classification/top1"))
for f in ("bench_r50_amp.json",):
    try:
        for r in json.load(open(os.path.join(out, f)))["results"]:
            print(f, os.path.basename(r["config"]), r["norm"], f"median {r['median_s_per_iter']:.4f} s/it", f"peak {r['peak_gpu_gib']:.2f} GiB")
    except FileNotFoundError:
        print(f, "missing")
PY
echo "failed parts: ${fail[*]:-none}"
