"""The documentation site builds with warnings as errors (``mkdocs build --strict``): every page in
the navigation, every link and anchor resolving, every docstring section the API reference renders
well-formed. Needs the ``docs`` extra (``pip install ".[docs]"``; part of ``dev``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages() -> set[str]:
    """The Markdown files that ``mkdocs.yml``'s navigation names (the lines after ``nav:`` ending
    in ``.md``)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return set(re.findall(r"([\w./-]+\.md)\s*$", nav, flags=re.MULTILINE))


def test_every_page_is_in_the_navigation_and_every_example_has_a_results_page() -> None:
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert nav_pages() == pages
    examples = {
        p.stem
        for p in (ROOT / "examples").glob("*.py")
        if not p.stem.startswith("_") and p.stem != "example_common"
    }
    results = {p.stem for p in (DOCS / "results").glob("*.md")} - {"index", "benchmarks"}
    assert results == examples


def test_every_subpackage_has_an_api_page() -> None:
    packages = {
        p.parent.name if p.name == "__init__.py" else p.stem
        for p in (ROOT / "manifoldnn").glob("*")
        if (p / "__init__.py").exists() or (p.suffix == ".py" and not p.stem.startswith("_"))
    } - {"data"}  # manifoldnn.data: the old name of manifoldnn.datasets, kept as an alias
    assert {p.stem for p in (DOCS / "api").glob("*.md")} == packages


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason='the docs extra: pip install ".[docs]"')
    pytest.importorskip("mkdocstrings", reason='the docs extra: pip install ".[docs]"')
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    assert (tmp_path / "site" / "api" / "layers" / "index.html").exists()


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links to the documentation"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
