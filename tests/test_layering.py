"""The package layering the README's Layout section promises, checked on the source itself."""

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "gn_det"
# package -> packages of gn_det it must never import (lazily or by importlib string)
FORBIDDEN = {
    "utils": {"layers", "config", "checkpoint", "data", "modeling", "engine", "evaluation", "convert", "tasks", "cli"},
    "layers": {"config", "checkpoint", "data", "modeling", "engine", "evaluation", "convert", "tasks", "cli"},
    "config": {"layers", "checkpoint", "data", "modeling", "engine", "evaluation", "convert", "tasks", "cli"},
    "checkpoint": {"data", "modeling", "engine", "evaluation", "convert", "tasks", "cli"},
    "data": {"modeling", "engine", "evaluation", "convert", "tasks", "cli"},
    "modeling": {"engine", "evaluation", "tasks", "cli", "convert"},
    "evaluation": {"modeling", "engine", "tasks", "cli", "convert"},
    "engine": {"modeling", "evaluation", "data", "tasks", "cli", "convert"},
    "tasks": {"cli"},
    "export": {"engine", "evaluation", "tasks", "cli", "convert"},
}


def _imported_packages(path: Path) -> set[str]:
    """gn_det sub-packages a module imports: absolute, relative and importlib strings."""
    text = path.read_text(encoding="utf-8")
    names = re.findall(r"[\"'](gn_det\.[a-z_.]+)", text)
    package = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                names.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.append(node.module)
    return {n.split(".")[1] for n in names if n.startswith("gn_det.") and len(n.split(".")) > 1}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_down(package):
    bad = {}
    for path in sorted((PKG / package).rglob("*.py")):
        wrong = _imported_packages(path) & FORBIDDEN[package]
        if wrong:
            bad[str(path.relative_to(PKG))] = sorted(wrong)
    assert not bad, f"gn_det.{package} imports packages above it: {bad}"
