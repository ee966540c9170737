"""Smoke run of examples/spd_classification.py on BasicMotions with two epochs."""

import importlib.util
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
    expected = {"mdm", "ts_lr", "spdnet", "spdnet_bn", "spd_attention"}
    # the spd_learn peer runs by default where it is installed
    if importlib.util.find_spec("spd_learn") is not None:
        expected.add("spd_learn")
    assert set(results) == expected
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results.values())
    # BasicMotions separates perfectly for pyRiemann's anchors (issue 29's measurement)
    assert results["mdm"]["accuracy"] >= 0.9
    assert (tmp_path / "accuracy.png").exists()


def test_spd_learn_peer_trains_on_the_same_matrices(tmp_path):
    pytest.importorskip("spd_learn")
    argv = ["--data", "basic_motions", "--epochs", "2", "--methods", "spd_learn"]
    results = main(argv + ["--out", str(tmp_path)])["results"]
    assert set(results) == {"spd_learn"}
    assert 0.0 <= results["spd_learn"]["accuracy"] <= 1.0
