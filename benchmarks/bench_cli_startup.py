"""How fast gn_det's command-line tools answer: ``--help``, a config mistake, an unknown key.

Each case runs what a console script (``gn-det-train`` ...) runs, ``main()`` of its entry module, in a
fresh process, and takes the wall time until it exits; the median over ``--runs``
warm runs (one untimed run first fills the file cache) is reported with the exit code. The cases
are interleaved round by round so the load of the machine spreads over all of them; the load
average is printed. ``--pythonpath DIR`` times another copy of gn_det (``DIR/gn_det``), e.g. a
copy of an older tree, for before/after numbers.

    python benchmarks/bench_cli_startup.py --out bench_cli_startup.json
    python benchmarks/bench_cli_startup.py --runs 9 --pythonpath /tmp/old_tree
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = "configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml"


# console script (pyproject.toml [project.scripts]) or tools/*.py -> its entry module in gn_det.cli
SCRIPTS = {"gn-det-train": "train_net", "gn-det-convert": "convert_checkpoint", "gn-det-check-videos": "check_videos",
           "gn-det-prepare-videos": "prepare_videos", "gn-det-batch-size-study": "batch_size_study",
           "gn-det-export": "export", "gn-det-demo": "demo", "tools/fidelity.py": "fidelity",
           "tools/visualize.py": "visualize"}
# What a console script runs, with the gn_det tree chosen explicitly (an editable install's finder
# would otherwise win over PYTHONPATH): argv = [tree or "", script name, args...].
_RUN_SCRIPT = """import sys
if sys.argv[1]:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.path.insert(0, sys.argv[1])
tree, name, module = sys.argv[1:4]
sys.argv = [name] + sys.argv[4:]
sys.exit(__import__("importlib").import_module("gn_det.cli." + module).main())
"""


def _script(name: str, *args: str) -> list[str]:
    return ["{tree}", name, SCRIPTS[name], *args]


# name -> command (run in the repository root); "{tree}" commands run through _RUN_SCRIPT
CASES: dict[str, list[str]] = {
    "python -c pass (interpreter)": [sys.executable, "-c", "pass"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
    "gn-det-train --help": _script("gn-det-train", "--help"),
    "gn-det-train: unknown key": _script("gn-det-train", "--config-file", DEMO, "SOLVER.BASE_LRR", "0.1"),
    "gn-det-train: config file missing": _script("gn-det-train", "--config-file", "no_such.yaml"),
    "gn-det-train: bad value": _script("gn-det-train", "--config-file", DEMO, "SOLVER.BASE_LR", "abc"),
    "gn-det-convert --help": _script("gn-det-convert", "--help"),
    "gn-det-convert: bad --group-policy": _script("gn-det-convert", "in.pth", "--group-policy", "even"),
    "gn-det-check-videos --help": _script("gn-det-check-videos", "--help"),
    "gn-det-check-videos: bad --format": _script("gn-det-check-videos", "list.csv", "--format", "json"),
    "gn-det-prepare-videos --help": _script("gn-det-prepare-videos", "--help"),
    "gn-det-batch-size-study --help": _script("gn-det-batch-size-study", "--help"),
    "gn-det-export --help": _script("gn-det-export", "--help"),
    "gn-det-demo --help": _script("gn-det-demo", "--help"),
    "tools/fidelity.py --help": _script("tools/fidelity.py", "--help"),
    "tools/visualize.py --help": _script("tools/visualize.py", "--help"),
}


def _command(case: str, tree: Path | None) -> list[str]:
    cmd = CASES[case]
    if cmd[0] != "{tree}":
        return cmd
    return [sys.executable, "-c", _RUN_SCRIPT, str(tree.resolve()) if tree else ""] + cmd[1:]


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, out.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), metavar="CASE")
    parser.add_argument("--pythonpath", type=Path, help="time the gn_det found in this folder instead")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {c: [] for c in args.cases}
    codes: dict[str, int] = {}
    for c in args.cases:  # untimed: fills the file cache ("warm")
        _, codes[c] = _time(_command(c, args.pythonpath), env)
    for _ in range(args.runs):
        for c in args.cases:
            seconds, codes[c] = _time(_command(c, args.pythonpath), env)
            times[c].append(seconds)
    load_after = os.getloadavg()

    print(f"{'case':<40} {'median s':>9} {'min s':>7} {'exit':>5}")
    rows = []
    for c in args.cases:
        row = {"case": c, "command": " ".join(CASES[c]).replace("{tree} ", ""), "median_s": statistics.median(times[c]),
               "min_s": min(times[c]), "runs_s": times[c], "exit_code": codes[c]}
        rows.append(row)
        print(f"{c:<40} {row['median_s']:>9.2f} {row['min_s']:>7.2f} {codes[c]:>5}")
    print(f"\n{args.runs} warm runs each, interleaved; load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after, on {os.cpu_count()} CPUs"
          + (f"; gn_det from {args.pythonpath}" if args.pythonpath else ""))
    if args.out:
        args.out.write_text(json.dumps({"cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
                                        "pythonpath": str(args.pythonpath) if args.pythonpath else None,
                                        "runs": args.runs, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
