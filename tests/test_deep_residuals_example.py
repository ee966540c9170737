"""Smoke run of examples/deep_residuals.py on a tiny configuration: every method trains, the table
has every metric, the constrained mixings keep their composite gain, and the plots are written."""

import json

import pytest

from examples import deep_residuals


@pytest.mark.slow
def test_example_runs_on_tiny_settings(tmp_path):
    pytest.importorskip("hyper_connections", reason="the benchmarks extra (reference mHC)")
    out = tmp_path / "deep_residuals.json"
    argv = ["--steps", "4", "--depths", "2", "3", "--dim", "16", "--context", "16"]
    argv += ["--batch", "2", "--eval-bytes", "200", "--out", str(tmp_path), "--json", str(out)]
    report = deep_residuals.main(argv)
    results = json.loads(out.read_text())["results"]
    methods = set(deep_residuals.METHODS)
    assert set(results) == {f"{m}@{d}" for m in methods for d in (2, 3)}
    for row in results.values():
        # untrained bytes cost about 8 bits; four steps cannot make it far worse than uniform
        assert 0.0 < row["val_bpb"] < 12.0 and row["step_seconds"] > 0
        assert row["max_grad_norm"] > 0 and row["loss_spikes"] >= 0
    eps = 1e-5  # float32 Sinkhorn / projection, products of 6 matrices
    for depth in (2, 3):
        assert results[f"prenorm@{depth}"]["composite_gain"] is None
        for method in ("mhc", "birkhoff", "reference"):
            assert results[f"{method}@{depth}"]["composite_gain"] <= 1.0 + eps
        assert abs(results[f"orthogonal@{depth}"]["composite_norm2"] - 1.0) <= eps
    assert len(report["runs"]) == 2 * len(methods)
    assert (tmp_path / "loss_curves.png").stat().st_size > 0
    assert (tmp_path / "composite_gain.png").stat().st_size > 0
    # --combine re-reads the runs without training
    again = deep_residuals.main(["--combine", str(out), "--out", str(tmp_path / "again")])
    assert again["results"] == results
