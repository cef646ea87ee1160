"""The Dockerfile installs exactly as the README does (no Docker engine runs in CI)."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_block(name: str) -> str:
    spec = importlib.util.spec_from_file_location("readme_block", ROOT / ".ci" / "readme_block.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.readme_block(str(ROOT / "README.md"), name)


def _pip_installs(text: str) -> list[str]:
    return [" ".join(m.split()) for m in re.findall(r"(pip install [^\n&]+)", text)]


def test_dockerfile_pip_steps_match_readme():
    readme = _pip_installs(_readme_block("ci:test"))
    docker = _pip_installs((ROOT / "Dockerfile").read_text())
    assert readme, "README test block has no pip install line"
    assert docker == readme


def test_demo_and_test_blocks_install_the_same_way():
    assert _pip_installs(_readme_block("demo")) == _pip_installs(_readme_block("ci:test"))
