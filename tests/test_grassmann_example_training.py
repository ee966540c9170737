"""Tests of the training options of ``examples/grassmann_classification.py`` that its defaults use:
augmented subspaces (``--augment``) and weight averaging over the last epochs (``--swa``). Both are
library material (a time-series-to-subspace transform and Stiefel-projected weight averaging) and
these tests move with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from examples.grassmann_classification import (
    WINDOWS,
    augmented_subspaces,
    build_parser,
    fit_grnet,
    parse_windows,
    subspaces,
    train,
)


def toy_series(count: int = 12, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """(12, T) series of 7 to 20 frames in 3 classes (a class-dependent mean plus noise)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    series = [
        rng.standard_normal((12, int(rng.integers(7, 21)))) + 2.0 * np.eye(12)[:, [label]]
        for label in labels
    ]
    return series, labels


def projectors(bases: torch.Tensor) -> torch.Tensor:
    return bases @ bases.transpose(-1, -2)


def test_augmented_subspaces_shapes_identity_and_perturbation():
    series, _ = toy_series()
    windows = parse_windows(list(WINDOWS))
    plain = subspaces(series, 2, 1, windows)
    # No perturbation at all: every copy is the plain representation.
    same = augmented_subspaces(
        series, 2, 1, windows, 3, np.random.default_rng(0), jitter=0.0, drop=0.0, noise=0.0
    )
    assert same.shape == (3,) + tuple(plain.shape) == (3, 12, 6, 25, 2)
    assert torch.allclose(
        projectors(same), projectors(plain).expand_as(projectors(same)), atol=1e-10
    )
    # Perturbed copies: orthonormal bases, different from the plain ones and from each other,
    # reproducible from the seed.
    views = augmented_subspaces(series, 2, 1, windows, 2, np.random.default_rng(1))
    again = augmented_subspaces(series, 2, 1, windows, 2, np.random.default_rng(1))
    assert torch.equal(views, again)
    gram = views.transpose(-1, -2) @ views
    assert (gram - torch.eye(2, dtype=gram.dtype)).abs().max() < 1e-10
    gap = (projectors(views) - projectors(plain)).flatten(2).norm(dim=-1)  # (copies, N)
    assert (gap > 1e-3).all()
    assert ((projectors(views[0]) - projectors(views[1])).flatten(1).norm(dim=-1) > 1e-3).all()
    # The perturbation is small: the whole-utterance subspace stays close to the plain one.
    whole_gap = (projectors(views[:, :, 0]) - projectors(plain[:, 0])).flatten(2).norm(dim=-1)
    assert whole_gap.median() < 0.5
    # Frame dropping never leaves fewer frames than the delay embedding needs (7-frame series).
    short = [np.random.default_rng(2).standard_normal((12, 7))]
    dropped = augmented_subspaces(short, 2, 1, windows, 4, np.random.default_rng(3), drop=0.9)
    assert torch.isfinite(dropped).all()
    with pytest.raises(ValueError):
        augmented_subspaces(series, 2, 1, windows, 0, np.random.default_rng(0))


def small_run(argv: list[str], seed: int = 0):
    """A GrNet on the toy data trained by fit_grnet with the example's options ``argv``."""
    series, labels = toy_series(18)
    args = build_parser().parse_args(["--dims", "4", "--batch-size", "6"] + argv)
    bases = subspaces(series, args.p, args.delays, parse_windows(args.windows)).float()
    y = torch.from_numpy(labels)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model, history = fit_grnet(args, bases, y, generator, bases, y, num_classes=3, series=series)
    return model, history


def test_weight_averaging_is_the_projected_mean_of_the_last_iterates():
    iterates = [small_run(["--epochs", str(epochs), "--swa", "0"])[0] for epochs in (3, 4)]
    averaged, _ = small_run(["--epochs", "4", "--swa", "2"])
    last = small_run(["--epochs", "4", "--swa", "1"])[0]
    for name, q in averaged.named_parameters():
        first, second = (dict(model.named_parameters())[name] for model in iterates)
        assert not torch.allclose(first, second)  # the two iterates differ
        mean = (first + second) / 2
        if hasattr(q, "manifold"):  # Stiefel weight: the polar factor of the mean, orthonormal
            u, _, vh = torch.linalg.svd(mean, full_matrices=False)
            assert torch.allclose(q, u @ vh, atol=1e-5)
            eye = torch.eye(q.shape[-1])
            assert (q.transpose(-1, -2) @ q - eye).abs().max() < 1e-5
        else:
            assert torch.allclose(q, mean, atol=1e-6)
        # Averaging over one epoch keeps the last iterate.
        assert torch.allclose(dict(last.named_parameters())[name], second, atol=1e-5)
    # --swa longer than the run averages over all its epochs; train() itself refuses that.
    whole = small_run(["--epochs", "2", "--swa", "5"])[0]
    same = small_run(["--epochs", "2", "--swa", "2"])[0]
    for q, r in zip(whole.parameters(), same.parameters()):
        assert torch.equal(q, r)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError):
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, x, y, 2, 2,
              torch.Generator(), "test", average_last=3)  # fmt: skip


def test_training_on_augmented_copies_uses_them():
    series, labels = toy_series(18)
    windows = parse_windows(list(WINDOWS))
    x = subspaces(series, 2, 1, windows).float()
    y = torch.from_numpy(labels)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 3))
    seen = []
    model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    copies = augmented_subspaces(series, 2, 1, windows, 2, np.random.default_rng(0)).float()
    train(
        model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, x[:2], y[:2], 4, 6,
        torch.Generator().manual_seed(0), "test", augmented=copies,
    )  # fmt: skip
    batches = [b for b in seen if len(b) == 6]  # training mini-batches (evaluation uses 2 rows)
    versions = torch.cat([x[None], copies])  # (3, N, ...)
    used = set()
    for batch in batches:
        for row in batch:
            match = ((versions - row).flatten(2).abs().amax(-1) == 0).nonzero()
            assert len(match) >= 1  # every training input is one version of some sample
            used.add(int(match[0, 0]))
    assert used == {0, 1, 2}  # the original and both copies are drawn
    with pytest.raises(ValueError):
        train(
            model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, x[:2], y[:2], 1, 6,
            torch.Generator().manual_seed(0), "test", augmented=copies[:, :5],
        )  # fmt: skip
    # fit_grnet needs the series to build the copies.
    args = build_parser().parse_args(["--augment", "2", "--epochs", "1"])
    with pytest.raises(ValueError):
        fit_grnet(args, x, y, torch.Generator(), x, y, num_classes=3)
    model, history = small_run(["--epochs", "2", "--augment", "2"])
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()


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
        load_data,
        main,
        standardise,
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
    bases_test = subspaces(standardise(x_train, x_test)[1], 2, 1, parse_windows(list(WINDOWS)))
    model = build_grnet(build_parser().parse_args(argv), bases_test, 9)
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
