"""``gn-det-train --help`` and config mistakes answer without importing torch (issue 11: a CLI that
answers at once), with the same exit codes and messages. Not timed: benchmarks/bench_cli_startup.py
measures the time."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = "configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml"
HEAVY = ("torch", "torchvision", "pycocotools", "matplotlib", "av")

# Runs an entry point's main() as its console script does, then reports which heavy packages got imported.
_WRAPPER = """
import importlib, sys
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
    code = importlib.import_module(module).main()
except SystemExit as e:
    code = e.code
print("IMPORTED:" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
""".format(heavy=HEAVY)


def _run(module: str, *args: str) -> tuple[int, str, str, list[str]]:
    out = subprocess.run([sys.executable, "-c", _WRAPPER, module, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    err_lines = out.stderr.strip().splitlines()
    imported = err_lines[-1].removeprefix("IMPORTED:").split(",") if err_lines else ["?"]
    return out.returncode, out.stdout, "\n".join(err_lines[:-1]), [m for m in imported if m]


def test_train_help_imports_no_heavy_package():
    code, stdout, _, imported = _run("gn_det.cli.train_net", "--help")
    assert code == 0
    assert stdout.startswith("usage: gn-det-train") and "--config-file FILE" in stdout
    assert imported == []


@pytest.mark.parametrize("args,message,usage", [
    (["--config-file", DEMO, "SOLVER.BASE_LRR", "0.1"],
     "gn-det-train: error: Unknown config key 'SOLVER.BASE_LRR' (in command-line override). "
     "Did you mean 'SOLVER.BASE_LR'?", False),
    (["--config-file", "no_such.yaml"], "gn-det-train: error: Config file not found: 'no_such.yaml'.", False),
    (["--config-file", DEMO, "SOLVER.BASE_LR", "abc"],
     "gn-det-train: error: Bad value for config key 'SOLVER.BASE_LR' (in command-line override): got 'abc'",
     False),
    # a command-line mistake: argparse's usage, then the error line
    (["--config-file", DEMO, "--num-gpus", "0"], "gn-det-train: error: --num-gpus must be >= 1, got 0", True),
])
def test_train_config_mistakes_exit_2_with_one_line_and_no_torch(args, message, usage):
    code, stdout, stderr, imported = _run("gn_det.cli.train_net", *args)
    assert code == 2
    lines = stderr.splitlines()
    assert lines[-1].startswith(message), stderr
    assert lines[0].startswith("usage: gn-det-train") if usage else len(lines) == 1
    assert "Traceback" not in stderr and stdout == ""
    assert imported == []


@pytest.mark.parametrize("module,prog", [("gn_det.cli.batch_size_study", "gn-det-batch-size-study"),
                                         ("gn_det.cli.prepare_videos", "gn-det-prepare-videos")])
def test_other_tools_help_imports_no_heavy_package(module, prog):
    code, stdout, _, imported = _run(module, "--help")
    assert code == 0 and stdout.startswith(f"usage: {prog}")
    assert imported == []
