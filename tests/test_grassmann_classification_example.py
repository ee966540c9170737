"""Smoke tests of ``examples/grassmann_classification.py`` and its cross-validation script. The
library code they use is tested where it lives: the window subspaces and their augmentation in
``test_datasets_timeseries.py``, the projected weight averaging (``--swa``) in ``test_optim.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def grnet_parameter_count(n: int, d: int, channels: int, classes: int) -> int:
    """One FRMap n -> d per window (d x n each) and a linear head on the upper triangles of the
    ``channels`` projectors of size d (d (d + 1) / 2 features each)."""
    features = channels * d * (d + 1) // 2
    return channels * d * n + features * classes + classes


def test_example_smoke(tmp_path):
    """A tiny run of the example: the parameter counts follow from the architecture, the saved
    checkpoint reproduces the reported accuracy, the FRMap weights are orthonormal to float32
    rounding, and the deterministic baselines beat chance by a binomial margin."""
    pytest.importorskip("aeon", reason="JapaneseVowels is read from aeon's bundled copy")
    import json

    from scipy.stats import binom

    from examples.grassmann_classification import (
        accuracy,
        build_grnet,
        build_parser,
        load_data,
        main,
        standardise,
        subspaces,
    )

    argv = ["--train-limit", "30", "--epochs", "1", "--mlp-epochs", "1", "--out", str(tmp_path)]
    output = main(argv + ["--json", str(tmp_path / "results.json")])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == output["results"]
    results = output["results"]
    assert set(results) == {"grnet", "projector_logreg", "log_euclidean", "mlp"}
    # Gr(25, 2) (12 channels x 2 delays + 1), six windows, FRMap 25 -> 20, nine speakers.
    expected = grnet_parameter_count(25, 20, 6, 9)
    assert results["grnet"]["parameters"] == expected
    hidden = round((expected - 9) / (12 * 29 + 1 + 9))  # the MLP sized like GrNet
    assert results["mlp"]["parameters"] == (12 * 29 + 1) * hidden + (hidden + 1) * 9
    # Weight averaging ends with a projection onto the Stiefel manifold (an SVD): O(n eps) error.
    assert output["stiefel_error"] <= 4 * 25 * torch.finfo(torch.float32).eps
    # The checkpoint holds the evaluated model: reloaded, it gives the reported test accuracy.
    checkpoint = torch.load(tmp_path / "grnet.pt", weights_only=False)
    x_train, _, x_test, y_test = load_data()
    x_train, x_test = x_train[:: len(x_train) // 30], x_test[:: len(x_test) // 30]
    y_test = torch.from_numpy(y_test[:: len(y_test) // 30])
    args = build_parser().parse_args(argv)
    bases_test = subspaces(standardise(x_train, x_test)[1], args)
    model = build_grnet(args, bases_test, 9)
    model.load_state_dict(checkpoint["state_dict"])
    assert accuracy(model, bases_test.float(), y_test) == results["grnet"]["accuracy"]
    assert (tmp_path / "training_curve.png").exists()
    n_test = len(y_test)
    # The logistic regressions are trained to convergence: on nine balanced speakers their
    # accuracy must exceed what guessing reaches with probability 1e-6 (binomial, p = 1/9).
    chance = binom.ppf(1 - 1e-6, n_test, 1 / 9) / n_test
    for method in ("projector_logreg", "log_euclidean"):
        assert results[method]["accuracy"] > chance, method


@pytest.mark.slow
def test_cross_validation_script_smoke():
    pytest.importorskip("aeon", reason="JapaneseVowels is read from aeon's bundled copy")
    from examples.grassmann_classification_cv import main as cv_main

    cv = cv_main(
        ["--train-limit", "30", "--folds", "3", "--repeats", "2", "--epochs", "1",
         "--mlp-epochs", "1", "--baselines"]
    )  # fmt: skip
    for method in ("grnet", "projector_logreg", "log_euclidean", "mlp"):
        folds = cv["cv"][method]["folds"]
        assert len(folds) == 3 * 2  # folds x repeats
        assert cv["cv"][method]["mean"] == pytest.approx(np.mean(folds), abs=1e-12)
        assert cv["results"][method]["cv_accuracy"] == cv["cv"][method]["mean"]
