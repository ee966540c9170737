"""Smoke run of examples/spd_classification.py on BasicMotions with two epochs."""

import json

import pytest

pytest.importorskip("aeon")
pytest.importorskip("pyriemann")
pytest.importorskip("matplotlib")

from examples.spd_classification import main  # noqa: E402


def test_spd_classification_example_runs(tmp_path):
    argv = ["--data", "basic_motions", "--epochs", "2", "--out", str(tmp_path)]
    report = main(argv + ["--json", str(tmp_path / "r.json")])
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert results == report["results"]
    assert set(results) == {"mdm", "ts_lr", "spdnet", "spdnet_bn", "spd_attention"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results.values())
    # BasicMotions separates perfectly for pyRiemann's anchors (issue 29's measurement)
    assert results["mdm"]["accuracy"] >= 0.9
    assert (tmp_path / "accuracy.png").exists()
