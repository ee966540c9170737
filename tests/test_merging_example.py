"""Smoke test: examples/model_merging.py on tiny settings (one seed, few epochs)."""

import json

import pytest

from examples import model_merging


@pytest.mark.slow
def test_model_merging_example_runs(tmp_path):
    out = tmp_path / "out"
    payload = model_merging.main(
        [
            "--seeds", "1", "--lrs", "1e-3", "--epochs", "2", "--hidden", "32",
            "--out", str(out), "--json", str(tmp_path / "merging.json"),
        ]
    )  # fmt: skip
    saved = json.loads((tmp_path / "merging.json").read_text())
    assert saved["results"].keys() == payload["results"].keys()
    expected = set(model_merging.NO_C + model_merging.DATA + model_merging.WITH_C)
    assert expected | set(model_merging.REFERENCES) <= set(saved["results"])
    for method, metrics in saved["results"].items():
        assert set(metrics) == {"normalised", "task_a", "task_b"}, method
        assert 0.0 <= metrics["task_a"] <= 1.0 and 0.0 <= metrics["task_b"] <= 1.0
    assert saved["results"]["fine-tuned A / B"]["normalised"] == 1.0
    assert set(saved["settings"]) == {"digits", "mfeat"}
    assert saved["settings"]["digits"]["lr=0.001"]["drift"] > 0
    assert (out / "merging.png").stat().st_size > 0


def test_rgsp_tefm_diagnostics_runs():
    from benchmarks import rgsp_tefm_diagnostics

    report = rgsp_tefm_diagnostics.main(["--settings", "digits", "--seeds", "1", "--ranks", "2"])
    low, high = report["digits"]["sigma2_over_sigma1"]
    assert 0.0 <= low <= high <= 1.0
