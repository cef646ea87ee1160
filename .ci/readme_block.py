"""Print the shell code block that follows the marker `<!-- NAME -->` in a Markdown file.

Used by .ci/run (and the Dockerfile check in the tests) so that CI runs exactly the README's commands.
"""

import re
import sys


def readme_block(path: str, name: str) -> str:
    text = open(path, encoding="utf-8").read()
    match = re.search(r"<!--\s*" + re.escape(name) + r"\s*-->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    if not match:
        sys.exit(f"{path}: no code block after the marker <!-- {name} -->")
    lines = [ln for ln in match.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_block(sys.argv[1], sys.argv[2]))
