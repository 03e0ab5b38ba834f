"""The README's "Using the library" examples run as written, in a fresh interpreter."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _section_code(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"## {title}\n")
    end = readme.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", readme[start:end], flags=re.S)
    assert blocks, f"README.md has no python example under '## {title}'"
    return "\n".join(blocks)


def test_using_the_library_examples_run():
    code = _section_code("Using the library") + "\nprint('README examples ran')\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "README examples ran" in out.stdout
