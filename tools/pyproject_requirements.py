#!/usr/bin/env python3
"""Print the requirements ``pip install -e ".[EXTRAS]"`` would install for this project, one a line.

The Dockerfile installs these into their own layer from ``pyproject.toml`` alone, before the source
is copied, so that a code change does not reinstall torch and the other dependencies::

    python3 tools/pyproject_requirements.py pyproject.toml --extras test > requirements.txt

The build system's requirements (``[build-system] requires``) come first, so that the project itself
can then be installed with ``pip install --no-deps --no-build-isolation -e .`` and needs no network.
Standard library only (Python >= 3.11 for ``tomllib``): it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import sys
import tomllib


def requirements(pyproject: dict, extras: list[str]) -> list[str]:
    """The build requirements, the dependencies and those of ``extras``, in the file's order.

    Args:
        pyproject: the parsed ``pyproject.toml``.
        extras: names of ``[project.optional-dependencies]`` groups to add.

    Raises:
        KeyError: an extra the file does not define (its message names the ones it does).
    """
    optional = pyproject["project"].get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise KeyError(f"extra {unknown[0]!r} is not in [project.optional-dependencies] "
                       f"(defined: {', '.join(sorted(optional)) or 'none'})")
    found = list(pyproject.get("build-system", {}).get("requires", []))
    found += pyproject["project"].get("dependencies", [])
    for extra in extras:
        found += optional[extra]
    return list(dict.fromkeys(found))  # one line per requirement, first occurrence wins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", help="path to pyproject.toml")
    parser.add_argument("--extras", default="", help="comma-separated optional groups, e.g. test")
    args = parser.parse_args(argv)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    try:
        with open(args.pyproject, "rb") as f:
            data = tomllib.load(f)
        lines = requirements(data, extras)
    except (OSError, tomllib.TOMLDecodeError) as e:
        print(f"pyproject_requirements: error: cannot read {args.pyproject}: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"pyproject_requirements: error: {args.pyproject}: {e.args[0]}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
