"""Every ```python block of README.md runs: each in a fresh interpreter (a fresh namespace), from a
temporary directory, with the repository importable and one thread, within a time limit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# A fenced block opened by ```python (or ```py) at the start of a line, up to the closing fence.
BLOCK = re.compile(r"^```(?:python|py)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TIMEOUT_SECONDS = 300


def readme_blocks() -> list[tuple[int, str]]:
    """``(line number, code)`` of every python block of README.md."""
    if not README.exists():
        return []
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_block_extraction_finds_python_blocks_only():
    sample = "x\n```python\na = 1\n```\n```bash\nls\n```\n```py\nb = 2\n\nc = 3\n```\n"
    assert [m.group(1) for m in BLOCK.finditer(sample)] == ["a = 1\n", "b = 2\n\nc = 3\n"]


BLOCKS = readme_blocks()


@pytest.mark.slow
@pytest.mark.skipif(not BLOCKS, reason="README.md has no ```python block")
@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block_runs(line: int, code: str, tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, (
        f"README.md block at line {line} failed:\n{code}\n--- stderr ---\n{result.stderr[-3000:]}"
    )
