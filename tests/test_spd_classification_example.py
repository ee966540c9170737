"""Smoke run of examples/spd_classification.py on BasicMotions with two epochs."""

import importlib.util
import json

import numpy as np
import pytest
import torch

pytest.importorskip("aeon")
pytest.importorskip("pyriemann")
pytest.importorskip("matplotlib")

from examples.spd_classification import main  # noqa: E402


def test_spd_classification_example_runs(tmp_path):
    argv = ["--data", "basic_motions", "--epochs", "2", "--out", str(tmp_path)]
    report = main(argv + ["--json", str(tmp_path / "r.json")])
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert results == report["results"]
    expected = {"mdm", "ts_lr", "spdnet", "spdnet_bn", "spdnet_bn_var", "spd_attention"}
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


def test_with_mean_embeds_mean_and_covariance_as_one_spd_matrix(tmp_path):
    from examples.spd_classification import covariances

    rng = np.random.default_rng(0)
    train = [rng.standard_normal((3, 20)) + 1.0 for _ in range(4)]
    plain, _ = covariances(train, train[:1], 0.1)
    embedded, _ = covariances(train, train[:1], 0.1, with_mean=True)
    assert embedded.shape == (4, 4, 4)
    mu = embedded[:, :3, 3:]
    # the Schur complement of the corner 1 is the covariance itself
    torch.testing.assert_close(embedded[:, :3, :3] - mu @ mu.mT, plain)
    assert bool((torch.linalg.eigvalsh(embedded) > 0).all())
    argv = ["--data", "basic_motions", "--epochs", "1", "--methods", "mdm", "spdnet"]
    results = main(argv + ["--with-mean", "--out", str(tmp_path)])
    assert results["config"]["layer_sizes"][0] == 7  # six channels and the mean
