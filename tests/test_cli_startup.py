"""Every console script's ``--help`` (and tools/fidelity.py's, tools/visualize.py's), argument
mistakes, and ``gn-det-train``'s config mistakes answer without importing torch (issue 11: a CLI that
answers at once), with the same exit codes and messages. Not timed: benchmarks/bench_cli_startup.py
measures the time."""

import os
import subprocess
import sys
import tomllib

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


def _console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: console script name -> entry module."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


# (program, entry module); tools/*.py name no prog: argparse's usage line names the interpreter's argv[0]
_TOOLS = sorted(_console_scripts().items()) + [
    ("tools/fidelity.py", "gn_det.cli.fidelity"), ("tools/visualize.py", "gn_det.cli.visualize")]


@pytest.mark.parametrize("prog,module", _TOOLS, ids=[prog for prog, _ in _TOOLS])
def test_every_tool_help_imports_no_heavy_package(prog, module):
    code, stdout, stderr, imported = _run(module, "--help")
    assert code == 0, stderr
    assert stdout.startswith("usage: " + ("" if prog.startswith("tools/") else prog + " ")), stdout[:200]
    assert "-h, --help" in stdout and "Traceback" not in stderr
    assert imported == []


def test_every_console_script_is_checked():
    # a console script added to pyproject.toml joins the --help check above by itself; this guards the reading
    assert len(_console_scripts()) >= 7
    assert {"gn-det-train", "gn-det-convert", "gn-det-check-videos", "gn-det-export",
            "gn-det-demo"} <= set(_console_scripts())


@pytest.mark.parametrize("module,args,message", [
    ("gn_det.cli.convert_checkpoint", ["in.pth", "--group-policy", "even"],
     "gn-det-convert: error: argument --group-policy: invalid choice: 'even' (choose from "),
    ("gn_det.cli.convert_checkpoint", ["in.pth", "--arch", "resnet51"],
     "gn-det-convert: error: argument --arch: invalid choice: 'resnet51' (choose from "),
    ("gn_det.cli.convert_checkpoint", ["in.pth", "--calib-images", "0"],
     "gn-det-convert: error: --calib-images must be positive, got 0"),
    ("gn_det.cli.check_videos", ["list.csv", "--format", "json"],
     "gn-det-check-videos: error: argument --format: invalid choice: 'json' (choose from "),
])
def test_argument_mistakes_exit_2_without_torch(module, args, message):
    code, stdout, stderr, imported = _run(module, *args)
    assert code == 2 and stdout == ""
    assert stderr.splitlines()[-1].startswith(message), stderr
    assert imported == []


def test_help_lists_the_choices_of_the_torch_modules():
    # one definition: the torch-free name lists are the very objects the torch-using modules check against
    from gn_det.checkpoint import format_names, formats
    from gn_det.convert import resnet_arch
    from gn_det.data.video import annotations, list_formats
    from gn_det.layers import norm, norm_names
    from gn_det.modeling.backbone import resnet, resnet_specs

    assert formats.FORMATS is format_names.FORMATS and formats.OUTPUT_FORMATS is format_names.OUTPUT_FORMATS
    assert norm.GROUP_POLICIES is norm_names.GROUP_POLICIES and norm.NORM_NAMES is norm_names.NORM_NAMES
    assert resnet_arch.RESNET_ARCHS is resnet_specs.RESNET_ARCHS and resnet.RESNET_SPECS is resnet_specs.RESNET_SPECS
    assert annotations.FORMATS is list_formats.FORMATS
    code, stdout, _, _ = _run("gn_det.cli.convert_checkpoint", "--help")
    assert code == 0
    flat = " ".join(stdout.split())
    assert "{" + ",".join(("auto",) + formats.FORMATS) + "}" in flat
    assert "{" + ",".join(formats.OUTPUT_FORMATS) + "}" in flat
    assert "{" + ",".join(norm.GROUP_POLICIES) + "}" in flat
    assert "{" + ",".join(sorted(resnet_arch.RESNET_ARCHS)) + "}" in flat
    code, stdout, _, _ = _run("gn_det.cli.check_videos", "--help")
    assert "{" + ",".join(("auto",) + annotations.FORMATS) + "}" in " ".join(stdout.split())
