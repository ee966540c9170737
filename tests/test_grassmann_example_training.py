"""Tests of the training options of ``examples/grassmann_classification.py``: augmented subspaces
(``--augment``) and weight averaging over the last epochs (``--swa``)."""

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


def test_input_head_adds_a_linear_term_in_the_input_projectors(monkeypatch):
    import geoopt

    from examples.grassmann_classification import InputHeadGrNet, build_grnet
    from manifoldnn.linalg import symmetric_vectorize
    from manifoldnn.models import GrNet

    series, labels = toy_series(18)
    windows = parse_windows(list(WINDOWS))
    x = subspaces(series, 2, 1, windows).float()
    args = build_parser().parse_args(["--dims", "4", "--input-head"])
    torch.manual_seed(0)
    model = build_grnet(args, x, 3)
    assert isinstance(model, InputHeadGrNet) and isinstance(model.grnet, GrNet)
    # logits = GrNet logits + A vec(input projectors) + b, A acting on all K = 6 windows.
    features = symmetric_vectorize(projectors(x)).flatten(1)  # (N, 6 * 25 * 26 / 2)
    linear = model.input_head.linear
    assert linear.in_features == features.shape[1] == 6 * 325
    expected = model.grnet(x) + features @ linear.weight.T + linear.bias
    assert torch.allclose(model(x), expected, atol=1e-5)
    # Without the option: the plain GrNet, as before.
    assert isinstance(build_grnet(build_parser().parse_args(["--dims", "4"]), x, 3), GrNet)
    # Trained by fit_grnet: both heads are in the head group (head lr, weight decay), the FRMap
    # weights in the other, and every parameter moves.
    groups = []

    class Recording(geoopt.optim.RiemannianAdam):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            groups.append(self.param_groups)

    monkeypatch.setattr(geoopt.optim, "RiemannianAdam", Recording)
    trained, history = small_run(["--epochs", "2", "--input-head", "--augment", "2"])
    assert isinstance(trained, InputHeadGrNet) and np.isfinite(history["loss"]).all()
    manifold_group, head_group = groups[0]
    heads = [trained.grnet.head, trained.input_head]
    assert {id(q) for q in head_group["params"]} == {id(q) for h in heads for q in h.parameters()}
    assert head_group["lr"] == 0.03 and head_group["weight_decay"] == 1e-3
    assert {id(q) for q in manifold_group["params"]} == {id(trained.grnet.first[0].weight)}
    torch.manual_seed(0)  # small_run's initialisation
    small_args = build_parser().parse_args(["--dims", "4", "--input-head"])
    before = dict(build_grnet(small_args, x, 3).named_parameters())
    for name, q in trained.named_parameters():
        assert not torch.allclose(q, before[name]), name
    # An ensemble of such models trains and predicts (log mean probabilities).
    ensemble, _ = small_run(["--epochs", "1", "--input-head", "--ensemble", "2", "--augment", "0"])
    ensemble.eval()
    with torch.no_grad():
        log_probs = ensemble(x)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(len(x)), atol=1e-5)


def test_mixup_trains_on_points_of_grassmann_geodesics_between_samples():
    from manifoldnn.manifolds import Grassmann

    series, labels = toy_series(18)
    windows = parse_windows(list(WINDOWS))
    x = subspaces(series, 2, 1, windows)  # float64: exact geodesic checks
    y = torch.from_numpy(labels)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 3)).double()
    seen = []
    model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    train(
        model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, x[:2], y[:2], 3, 6,
        torch.Generator().manual_seed(0), "test", mixup=0.4,
    )  # fmt: skip
    batches = [b for b in seen if len(b) == 6]
    assert len(batches) == 9
    grassmann = Grassmann()
    d_all = grassmann.dist(x[:, None], x[None])  # (N, N, K) distances between samples per window
    inside = 0
    for batch in batches:
        eye = torch.eye(2, dtype=batch.dtype)
        assert (batch.transpose(-1, -2) @ batch - eye).abs().max() < 1e-8  # orthonormal bases
        for row in batch:
            d_row = grassmann.dist(x, row[None])  # (N, K)
            # Some pair (a, b): d(a, m) + d(m, b) = d(a, b) in every window, at one fraction t.
            gap = (d_row[:, None] + d_row[None] - d_all).abs().amax(-1)  # (N, N)
            t = d_row[:, None] / d_all.clamp_min(1e-12)  # (N, N, K)
            spread = t.amax(-1) - t.amin(-1)
            ok = (gap < 1e-6) & ((spread < 1e-6) | (d_all.amin(-1) < 1e-9))
            assert ok.any()
            a, b = ok.nonzero()[0]
            inside += int(0.05 < t[a, b].mean() < 0.95 and a != b)
    assert inside >= 6  # and mixing does happen (points strictly between two samples)
    # Through fit_grnet (one GrNet and an ensemble): finite losses.
    for extra in ([], ["--ensemble", "2"]):
        _, history = small_run(["--epochs", "2", "--mixup", "0.4", "--augment", "0"] + extra)
        assert np.isfinite(history["loss"]).all()


def test_mixed_cross_entropy_weights_the_two_label_sets():
    from examples.grassmann_classification import mixed_cross_entropy

    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 0, 1])
    partner = torch.tensor([4, 3, 0, 2, 1])
    log_p = logits.log_softmax(-1)
    rows = torch.arange(5)
    first, second = -log_p[rows, targets].mean(), -log_p[rows, targets[partner]].mean()
    mixed = mixed_cross_entropy(logits, targets, partner, 0.3)
    assert torch.allclose(mixed, 0.3 * first + 0.7 * second)
    assert torch.allclose(mixed_cross_entropy(logits, targets, None, 0.3), first)
