"""The Dockerfile installs as the README does, in cacheable layers (no Docker engine runs in CI).

`tools/build_container_local.sh` builds and runs the image for real (minutes, not in CI); these tests
check the file's structure: the README's pins, the dependency layer read from pyproject.toml before the
source is copied, the non-root user, the entrypoint and the volumes.
"""

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS_TOOL = ROOT / "tools" / "pyproject_requirements.py"
# Flags the image adds to the README's project install: its dependencies are an earlier layer already.
LAYER_FLAGS = ("--no-deps", "--no-build-isolation")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme_block(name: str) -> str:
    return _load(ROOT / ".ci" / "readme_block.py", "readme_block").readme_block(str(ROOT / "README.md"), name)


def _pip_installs(text: str) -> list[str]:
    return [" ".join(m.split()) for m in re.findall(r"(pip install [^\n&\\]+)", text)]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), " ".join(m.group(2).split()))
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)]


def _index(instructions, keyword: str, contains: str) -> int:
    found = [i for i, (k, args) in enumerate(instructions) if k == keyword and contains in args]
    assert len(found) == 1, f"expected one {keyword} with {contains!r}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def readme_installs() -> list[str]:
    installs = _pip_installs(_readme_block("ci:test"))
    assert len(installs) == 2, f"README test block: expected the torch line and the project line, got {installs}"
    return installs


def test_torch_pins_match_readme(dockerfile, readme_installs):
    torch_line = readme_installs[0]
    assert re.fullmatch(r"pip install torch==\S+ torchvision==\S+", torch_line), torch_line
    docker_torch = [line for line in _pip_installs(dockerfile) if "torch" in line.split()[2]]
    assert docker_torch == [torch_line]


def test_project_install_is_the_readmes_without_deps(dockerfile, readme_installs):
    project = [line for line in _pip_installs(dockerfile) if " -e " in f" {line} "]
    assert len(project) == 1, project
    words = project[0].split()
    assert all(flag in words for flag in LAYER_FLAGS), project[0]
    assert " ".join(w for w in words if w not in LAYER_FLAGS) == readme_installs[1]


def test_dependency_layers_come_before_the_source(dockerfile, readme_installs):
    steps = _instructions(dockerfile)
    torch_run = _index(steps, "RUN", readme_installs[0])
    deps_copy = _index(steps, "COPY", "pyproject.toml")
    deps_run = _index(steps, "RUN", "pip install -r")
    source_copy = _index(steps, "COPY", ". .")
    project_run = _index(steps, "RUN", "--no-deps")
    assert torch_run < deps_copy < deps_run < source_copy < project_run
    # The dependency layer sees pyproject.toml and its reader only, so code changes leave it cached.
    assert steps[deps_copy][1].split()[:-1] == ["pyproject.toml", "tools/pyproject_requirements.py"]
    # ... and asks for the extras the README's install names.
    extras = re.search(r'\.\[([^\]]*)\]', readme_installs[1]).group(1)
    assert re.search(rf"--extras {re.escape(extras)}(\s|$)", steps[deps_run][1]), steps[deps_run][1]


def test_requirements_layer_covers_pyproject():
    """What the layer installs is exactly build-system + dependencies + the test extra."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out = subprocess.run([sys.executable, str(REQUIREMENTS_TOOL), str(ROOT / "pyproject.toml"), "--extras", "test"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    expected = (data["build-system"]["requires"] + data["project"]["dependencies"]
                + data["project"]["optional-dependencies"]["test"])
    assert out == expected


def test_requirements_tool_orders_dedups_and_rejects_unknown_extras(tmp_path):
    tool = _load(REQUIREMENTS_TOOL, "pyproject_requirements")
    pyproject = {"build-system": {"requires": ["setuptools>=68"]},
                 "project": {"dependencies": ["torch>=2.1", "numpy"],
                             "optional-dependencies": {"test": ["pytest>=7", "numpy"], "docs": ["sphinx"]}}}
    assert tool.requirements(pyproject, ["docs", "test"]) == ["setuptools>=68", "torch>=2.1", "numpy", "sphinx",
                                                             "pytest>=7"]
    assert tool.requirements(pyproject, []) == ["setuptools>=68", "torch>=2.1", "numpy"]
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\ndependencies = ["a"]\n[project.optional-dependencies]\ntest = ["b"]\n')
    bad = subprocess.run([sys.executable, str(REQUIREMENTS_TOOL), str(path), "--extras", "tests"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "'tests'" in bad.stderr and "defined: test" in bad.stderr


def test_runtime_settings(dockerfile):
    steps = _instructions(dockerfile)
    keywords = [k for k, _ in steps]
    # The base is a build ARG declared before FROM (so --build-arg BASE=... reaches it).
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE=") and steps[1] == ("FROM", "${BASE}")
    # A non-root user, set after the last RUN, and the training CLI as entrypoint.
    user = [args for k, args in steps if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert ("ENTRYPOINT", '["gn-det-train"]') in steps
    env = " ".join(args for k, args in steps if k == "ENV")
    assert "GN_DET_DATASETS=/datasets" in env.split()
    assert any(w.startswith("GN_DET_CACHE=/cache") for w in env.split())
    assert ("VOLUME", '["/output"]') in steps
    # The configs' relative OUTPUT_DIR (output/...) lands in the volume.
    assert "ln -s /output /workspace/gn_det/output" in steps[_index(steps, "RUN", "--no-deps")][1]
    assert ("WORKDIR", "/workspace/gn_det") in steps


def test_default_base_matches_torch_cuda(dockerfile, readme_installs):
    """The default CUDA runtime base is the CUDA the pinned torch wheel was built for."""
    spec = importlib.util.find_spec("torch")  # its version.py only: importing torch takes seconds
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torch is not installed")
    torch_version = _load(Path(spec.submodule_search_locations[0]) / "version.py", "torch_version")
    pinned = re.search(r"torch==(\S+)", readme_installs[0]).group(1)
    if torch_version.__version__.split("+")[0] != pinned or torch_version.cuda is None:
        pytest.skip(f"installed torch {torch_version.__version__} is not the README's CUDA build {pinned}")
    base = re.search(r"^ARG BASE=(\S+)", dockerfile, re.M).group(1)
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-\S+", base)
    assert match, base
    assert ".".join(match.groups()) == torch_version.cuda


def test_dockerignore_keeps_environments_outputs_and_data_out():
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "output", "bench_out", "datasets", "**/__pycache__", "*.egg-info"} <= entries
    # The layers' inputs must stay in the context.
    assert not entries & {"pyproject.toml", "tools", "gn_det", "configs"}


def test_demo_and_test_blocks_install_the_same_way():
    assert _pip_installs(_readme_block("demo")) == _pip_installs(_readme_block("ci:test"))
