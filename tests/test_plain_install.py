"""A plain install (``pip install manifoldnn``, core dependencies only) imports every subpackage and
every public name, and an optional feature's error names the extra that installs it.

The test builds a fresh virtual environment in a temporary directory, installs PyTorch first (the
build ``scripts/run.sh`` installs, so that pip's cache serves it), then the package from a copy of
its sources with no extras, and runs the checks in that environment, from a directory outside the
repository so that the installed copy is the one imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The same pin as scripts/run.sh: the CPU build this project is tested with.
TORCH = "torch==2.13.0"
# Modules of the core dependencies; anything else in the fresh venv means an extra leaked in.
EXTRAS_MODULES = ("librosa", "concept_erasure", "ot", "pymanopt", "aeon", "matplotlib", "seaborn")

CHECK = textwrap.dedent(
    """
    import importlib, importlib.util, json, pkgutil, traceback

    import manifoldnn
    from manifoldnn.utils.optional import require

    failures, modules, names = {}, 0, 0
    leaked = [m for m in EXTRAS if importlib.util.find_spec(m) is not None]
    infos = pkgutil.walk_packages(manifoldnn.__path__, "manifoldnn.", onerror=lambda name: None)
    for name in ["manifoldnn"] + sorted(info.name for info in infos):
        try:
            module = importlib.import_module(name)
        except Exception:
            failures[name] = traceback.format_exc(limit=-3)
            continue
        modules += 1
        for public in getattr(module, "__all__", ()):
            try:
                getattr(module, public)
                names += 1
            except Exception:
                failures[f"{name}.{public}"] = traceback.format_exc(limit=-3)

    try:
        require("manifoldnn_missing_module", "speech", "log-mel frames")
        optional_error = None
    except ImportError as error:
        optional_error = str(error)

    print(json.dumps({"failures": failures, "modules": modules, "names": names,
                      "leaked": leaked, "optional_error": optional_error,
                      "file": manifoldnn.__file__}))
    """
)


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.mark.slow
def test_plain_install_imports_every_public_name(tmp_path: Path) -> None:
    # the package's sources only: the build writes into its source tree (build/, *.egg-info)
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "manifoldnn", source / "manifoldnn", ignore=shutil.ignore_patterns("__pycache__")
    )

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, 120)
    python = str(venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python"))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run([*pip, TORCH], tmp_path, 900)
    run([*pip, str(source)], tmp_path, 900)

    script = f"EXTRAS = {EXTRAS_MODULES!r}\n{CHECK}"
    result = run([python, "-c", script], tmp_path, 600)
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert str(venv) in report["file"], report["file"]  # the installed copy, not the repository's
    assert report["leaked"] == [], f"a plain install brought in extras' modules: {report['leaked']}"
    assert not report["failures"], "not importable from a plain install:\n" + "\n".join(
        f"{name}:\n{trace}" for name, trace in report["failures"].items()
    )
    assert report["modules"] > 10 and report["names"] > 50, report
    error = report["optional_error"]
    assert error is not None and 'pip install "manifoldnn[speech]"' in error, error
