"""Smoke test of scripts/gpu_check.sh: its CPU run passes every part and writes the JSON report and
the markdown tables; a bad argument is a usage error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
PARTS = {"tests", "attention", "sequence", "karcher", "tokens", "grassmann", "sync"}


def run(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


@pytest.mark.slow
def test_cpu_run_passes_and_writes_the_report(tmp_path):
    result = run("--device", "cpu", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu"
    assert set(report["parts"]) == PARTS
    assert all(part["status"] == "passed" for part in report["parts"].values()), report["parts"]
    assert report["results"].keys() == report["parts"].keys()
    tests = report["tests"]
    assert tests["passed"] > 0 and tests["failures"] == tests["errors"] == 0
    assert set(report["benchmarks"]) == {"attention", "sequence", "karcher", "tokens", "grassmann"}
    for name in ("bdh", "gpt"):
        row = report["benchmarks"]["tokens"][name]
        assert row["train_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0
    assert report["sync"] and all(row["status"] == "ran" for row in report["sync"].values())
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert markdown.startswith("# GPU check")
    for heading in ("## Parts", "## Tests", "## Benchmark: tokens", "## Host synchronisation"):
        assert heading in markdown
    assert "| tokens | passed |" in markdown


def test_usage_errors():
    assert run("--device", "tpu").returncode == 2
    assert run("--frobnicate").returncode == 2
