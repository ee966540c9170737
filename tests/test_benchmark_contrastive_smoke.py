"""Smoke test of benchmarks/contrastive_loss.py: tiny runs of its ``main`` on both kernel paths."""

import json

import pytest

from benchmarks import contrastive_loss as bench


@pytest.mark.parametrize("n, p", [(6, 2), (30, 2)])  # projector vectors, basis cross products
def test_benchmark_agrees_with_the_textbook_loss(n, p, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--views", "3", "--samples", "24", "--n", str(n), "--p", str(p), "--repeats", "1"]
    result = bench.main([*argv, "--dtype", "float64", "--json", str(out)])
    assert result["loss_difference"] < 1e-12
    assert result["gradient_difference"] < 1e-12 * max(1.0, result["gradient_scale"])
    assert result["ours_seconds"] > 0 and result["textbook_seconds"] > 0
    assert json.loads(out.read_text())["results"]["contrastive_loss"]["ratio"] == result["ratio"]
