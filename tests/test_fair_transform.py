"""FairMetricDebias: identity at alpha = 0, determinism, the locality bound (property test), unseen
rows moved, a planted nonlinear bias that LEACE leaves readable and the transform removes, the
random-feature bias against scikit-learn's ridge, dtypes, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manifoldnn.fairness import LEACE, FairMetricDebias, RandomFeatureBias, probe_accuracy
from manifoldnn.manifolds import Sphere

DTYPES = [torch.float32, torch.float64]


def chance_bound(n: int, sigmas: float = 4.0) -> float:
    """0.5 + ``sigmas`` standard errors of an accuracy at chance over ``n`` labels."""
    return 0.5 + sigmas * math.sqrt(0.25 / n)


def planted_xor(n: int, seed: int, d: int = 8, cap: float | None = None):
    """Unit vectors whose bias is an XOR in coordinates 0, 1 (``sign(x0 x1)`` = side: no linear
    direction reads it) and whose meaning is one of 4 clusters in the other coordinates. With
    ``cap``, everything is pushed towards the pole ``e_{d-1}`` (a sensitive region)."""
    rng = np.random.default_rng(seed)
    side = rng.choice([-1, 1], n)
    biased = rng.random(n) < 2 / 3
    z = np.where(biased, side, 0)
    a = rng.choice([-1, 1], n)
    x01 = np.stack([a, a * side], 1) * 0.5 + 0.08 * rng.standard_normal((n, 2))
    x01[~biased] = 0.08 * rng.standard_normal((int((~biased).sum()), 2))
    meaning = rng.integers(0, 4, n)
    rest = np.eye(d - 2)[meaning] + 0.15 * rng.standard_normal((n, d - 2))
    X = np.concatenate([x01, rest], 1)
    if cap is not None:
        X = cap * X / np.linalg.norm(X, axis=1, keepdims=True)
        X[:, -1] += 1.0
    return X / np.linalg.norm(X, axis=1, keepdims=True), z, meaning


def geodesic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sphere = Sphere()
    return sphere.dist(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b)).numpy()


# ---------------------------------------------------------------------------- identity, seed
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", [{"alpha": 0.0}, {"rounds": 0}])
def test_zero_strength_returns_the_input_unchanged(dtype, params, device):
    X, z, _ = planted_xor(120, 0)
    x = torch.as_tensor(X, dtype=dtype, device=device)
    host = x.cpu().numpy()
    model = FairMetricDebias(n_features=32, **params).fit(x, z)
    # one return type: a NumPy array in the input's float dtype, for tensor and array input
    for rows in (x, host):
        out = model.transform(rows)
        assert isinstance(out, np.ndarray) and out.dtype == host.dtype
        assert np.array_equal(out, host)


def test_deterministic_given_the_seed(device):
    X, z, _ = planted_xor(200, 0)
    Xt, _, _ = planted_xor(50, 1)
    kw = {"rounds": 3, "n_features": 64, "device": device}
    first = FairMetricDebias(random_state=7, **kw).fit(X, z).transform(Xt)
    again = FairMetricDebias(random_state=7, **kw).fit(X, z).transform(Xt)
    other = FairMetricDebias(random_state=8, **kw).fit(X, z).transform(Xt)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


# ---------------------------------------------------------------------------- locality
_CAP_X, _CAP_Z, _ = planted_xor(300, 3, cap=0.4)
_CAP_MODEL = FairMetricDebias(alpha=30.0, rounds=4, n_features=128, random_state=0).fit(
    _CAP_X, _CAP_Z
)


def _independent_bound(model: FairMetricDebias, x: np.ndarray) -> np.ndarray:
    """The module docstring's bound recomputed from the fitted parameters with NumPy:
    ``sum_r min(max_step, sqrt(alpha sum_m W_m(x) B_r^2))``, ``W`` the kernel averaged over the
    centres, ``B_r = sqrt(2 / D) |w_r|_1 + |c_r|``."""
    centres = model.centres_.double().numpy()
    d = geodesic(x[:, None, :], centres[None, :, :])
    weight = np.exp(-(d**2) / (2 * model.bandwidth_**2)).mean(-1)
    total = np.zeros(len(x))
    for metric in model.metrics_:
        (bias,) = metric.bias_losses
        w = bias.weights.double().numpy()
        sup = math.sqrt(2 / w.size) * np.abs(w).sum() + abs(float(bias.intercept))
        total += np.minimum(model.max_step, sup * np.sqrt(model.alpha * weight))
    return total


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    min_angle=st.floats(1.2, 3.0),
)
def test_points_far_from_every_centre_move_less_than_the_bound(seed, min_angle):
    """Points at geodesic distance >= ``min_angle`` from the pole of the sensitive region (so
    >= ``min_angle - 0.4`` from every centre, all within 0.4 rad of it) move less than the stated
    bound, which is itself below the closed form ``R B sqrt(alpha) exp(-r^2 / (4 sigma^2))``."""
    rng = np.random.default_rng(seed)
    d = _CAP_X.shape[1]
    pole = np.eye(d)[-1]
    angle = rng.uniform(min_angle, math.pi, 64)
    tangent = rng.standard_normal((64, d))
    tangent -= (tangent @ pole)[:, None] * pole
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    x = np.cos(angle)[:, None] * pole + np.sin(angle)[:, None] * tangent
    model = _CAP_MODEL
    moved = geodesic(x, model.transform(x))
    bound = _independent_bound(model, x)
    np.testing.assert_allclose(model.displacement_bound(x), bound, rtol=1e-9, atol=1e-300)
    # each round renormalises once: a few rounding units of angle per round
    rounding = 8 * model.rounds * np.finfo(np.float64).eps
    assert np.all(moved <= bound + rounding)
    r = geodesic(x[:, None, :], model.centres_.double().numpy()[None]).min(-1)
    assert np.all(r >= min_angle - 0.4 - 1e-9)
    sups = [
        math.sqrt(2 / b.weights.numel()) * float(b.weights.abs().sum()) + abs(float(b.intercept))
        for (b,) in (m.bias_losses for m in model.metrics_)
    ]
    closed = len(sups) * max(sups) * math.sqrt(model.alpha)
    assert np.all(bound <= closed * np.exp(-(r**2) / (4 * model.bandwidth_**2)) * (1 + 1e-9))


def test_points_in_the_sensitive_region_do_move():
    """The bound is not met trivially: the biased points of the sensitive region move by more
    than neutral ones there, and by far more than the bound allows a point 1.5 rad from the pole."""
    moved = geodesic(_CAP_X, _CAP_MODEL.transform(_CAP_X))
    pole = np.eye(_CAP_X.shape[1])[-1]
    far = np.cos(1.5) * pole + np.sin(1.5) * np.eye(_CAP_X.shape[1])[:1]
    far_bound = float(_CAP_MODEL.displacement_bound(far)[0])
    assert np.median(moved[_CAP_Z != 0]) > np.median(moved[_CAP_Z == 0])
    assert np.median(moved[_CAP_Z != 0]) > 1e3 * far_bound


# ------------------------------------------------------------------- planted nonlinear bias
@pytest.mark.parametrize("dtype", DTYPES)
def test_planted_xor_bias_is_removed_on_unseen_rows_where_leace_leaves_it(dtype, device):
    """Bias as an XOR (no linear direction reads it): LEACE leaves it to the RBF probe; the
    transform, fitted on other rows, brings the RBF probe on unseen rows to chance, moves those
    rows, and keeps the meaning clusters readable."""
    X, z, _ = planted_xor(900, 0)
    Xt, zt, meaning = planted_xor(600, 1)
    biased = zt != 0
    n = int(biased.sum())
    before = probe_accuracy(Xt[biased], zt[biased], "rbf", (0,)).mean
    leace = LEACE().fit(X, z).transform(Xt)
    leace_rbf = probe_accuracy(leace[biased], zt[biased], "rbf", (0,)).mean
    model = FairMetricDebias(
        alpha=30.0, rounds=8, n_features=256, random_state=0, device=device, dtype=dtype
    )
    out = model.fit(X, z).transform(Xt.astype(np.float32) if dtype == torch.float32 else Xt)
    assert out.dtype == (np.float32 if dtype == torch.float32 else np.float64)
    ours_rbf = probe_accuracy(out[biased], zt[biased], "rbf", (0,)).mean
    assert before > 1 - chance_bound(n) + 0.5 and leace_rbf > 1 - chance_bound(n) + 0.5
    assert ours_rbf < chance_bound(n)
    # unseen rows moved, biased ones much more than neutral ones
    moved = geodesic(Xt, out.astype(np.float64))
    assert np.median(moved[biased]) > 0.1
    # meaning: the 4 clusters stay linearly readable as well as before (4 sigma of 600 rows)
    kept = probe_accuracy(out, meaning, "linear", (0,)).mean
    orig = probe_accuracy(Xt, meaning, "linear", (0,)).mean
    assert kept >= orig - 4 * math.sqrt(orig * (1 - orig) / len(Xt) + 1 / len(Xt) ** 2)


class _TanhMLPBias(torch.nn.Module):
    """A one-hidden-layer tanh network's output: a nonlinear probe supplied by the user."""

    def __init__(self, d: int, hidden: int, generator: torch.Generator, dtype) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(d, hidden, dtype=dtype)
        self.outer = torch.nn.Linear(hidden, 1, dtype=dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=dtype) * 0.5)

    def forward(self, x):
        return self.outer(torch.tanh(self.inner(x))).squeeze(-1)


def _fit_mlp(x, target, weight, generator):
    # initialised by the (CPU) generator the transform passes, then moved to the rows' device
    model = _TanhMLPBias(x.shape[-1], 16, generator, x.dtype).to(x.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(150):
            optimiser.zero_grad()
            loss = (weight * (model(x) - target) ** 2).sum() / weight.sum()
            loss.backward()
            optimiser.step()
    return model.requires_grad_(False)


def test_a_user_supplied_mlp_bias_function_is_refitted_and_removes_the_planted_bias(device):
    calls = []

    def fitter(x, target, weight, generator):
        calls.append(x.clone())
        return _fit_mlp(x, target, weight, generator)

    X, z, _ = planted_xor(600, 0)
    Xt, zt, _ = planted_xor(400, 1)
    biased = zt != 0
    model = FairMetricDebias(
        alpha=30.0, rounds=6, bias_fitter=fitter, random_state=0, device=device
    )
    out = model.fit(X, z).transform(Xt)
    assert len(calls) == 6 and not torch.equal(calls[0], calls[-1])  # refitted on moved rows
    assert probe_accuracy(out[biased], zt[biased], "rbf", (0,)).mean < chance_bound(
        int(biased.sum())
    )
    with pytest.raises(ValueError, match="sup_bound"):
        model.displacement_bound(Xt)


# ---------------------------------------------------------------------- oracle: the ridge
def test_random_feature_bias_matches_scikit_learn_weighted_ridge(device):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((80, 5)), dtype=torch.float64, device=device)
    target = torch.as_tensor(rng.standard_normal(80), device=device)
    weight = torch.as_tensor(rng.uniform(0.5, 2.0, 80), device=device)
    bias = RandomFeatureBias.fit(
        x, target, weight, n_features=40, gamma=0.7, ridge=0.1, generator=torch.Generator()
    )
    phi = RandomFeatureBias.features(x, bias.frequencies, bias.phases).cpu().numpy()
    s = (weight / weight.sum()).cpu().numpy()
    centred = phi - s @ phi
    lam = 0.1 * np.mean(np.diag(centred.T @ (s[:, None] * centred)))
    ref = Ridge(alpha=lam).fit(phi, target.cpu().numpy(), sample_weight=s)
    tol = 1e3 * np.finfo(np.float64).eps  # solve of a 40 x 40 system, condition <= 1 / ridge
    np.testing.assert_allclose(bias.weights.cpu().numpy(), ref.coef_, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(float(bias.intercept), ref.intercept_, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(bias(x).detach().cpu().numpy(), ref.predict(phi), atol=tol * 10)


def test_random_feature_bias_gradcheck_and_sup_bound(device):
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.standard_normal((30, 4)), dtype=torch.float64, device=device)
    bias = RandomFeatureBias.fit(
        x,
        torch.as_tensor(rng.standard_normal(30), device=device),
        torch.ones(30, dtype=torch.float64, device=device),
        n_features=16,
        gamma=1.0,
        ridge=1e-2,
        generator=torch.Generator().manual_seed(0),
    )
    probe = x[:5].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(bias, (probe,))
    far = torch.as_tensor(rng.standard_normal((2000, 4)) * 5, device=device)
    assert bool((bias(far).abs() <= bias.sup_bound()).all())


def test_one_round_is_the_closed_form_step(device):
    """Round one equals ``Exp_x(-alpha W b g / (1 + alpha W |g|^2))`` computed by hand."""
    X, z, _ = planted_xor(200, 0)
    model = FairMetricDebias(alpha=5.0, rounds=1, n_features=32, max_step=10.0, device=device)
    model = model.fit(X, z)
    (bias,) = model.metrics_[0].bias_losses
    x = torch.as_tensor(X[:20], device=device).requires_grad_(True)
    b = bias(x)
    (egrad,) = torch.autograd.grad(b.sum(), x)
    x = x.detach()
    g = egrad - (egrad * x).sum(-1, keepdim=True) * x
    centres = model.centres_
    dist = torch.as_tensor(geodesic(X[:20, None, :], centres.cpu().numpy()[None]), device=device)
    weight = torch.exp(-(dist**2) / (2 * model.bandwidth_**2)).mean(-1)
    c = model.alpha * weight
    u = -(c * b.detach() / (1 + c * (g * g).sum(-1))).unsqueeze(-1) * g
    norm = u.norm(dim=-1, keepdim=True)
    expected = torch.cos(norm) * x + torch.sin(norm) / norm * u
    out = torch.as_tensor(model.transform(X[:20]), device=device)
    torch.testing.assert_close(out, expected / expected.norm(dim=-1, keepdim=True))


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("X", "z", "message"),
    [
        (np.full((4, 3), np.nan), [1, -1, 0, 1], "NaN"),
        (np.ones(3) / math.sqrt(3), [1], r"\(n, d\)"),
        (np.eye(4)[:, :3][:3], [1, -1], "z must be"),
        (np.eye(3), [1, -1, 2], r"\{-1, 0, 1\}"),
        (np.eye(3), [0.5, -1, 0], "integers"),
        (np.eye(3) * 2, [1, -1, 0], "unit-norm"),
        (np.eye(3), [1, 1, 0], "both"),
        (np.eye(3).astype(int), [1, -1, 0], "float"),
    ],
)
def test_bad_fit_input_raises(X, z, message):
    with pytest.raises(ValueError, match=message):
        FairMetricDebias(rounds=1, n_features=4).fit(X, z)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"rounds": -1}, "rounds"),
        ({"n_features": 0}, "n_features"),
        ({"gamma": 0.0}, "gamma"),
        ({"ridge": -1.0}, "ridge"),
        ({"max_step": 0.0}, "max_step"),
        ({"bandwidth": -0.1}, "bandwidth"),
        ({"n_centres": 0}, "n_centres"),
        ({"bias_fitter": 3}, "bias_fitter"),
    ],
)
def test_bad_parameters_raise_naming_them(params, name):
    X, z, _ = planted_xor(30, 0)
    with pytest.raises(ValueError, match=name):
        FairMetricDebias(**params).fit(X, z)


def test_bad_transform_input_raises():
    X, z, _ = planted_xor(60, 0)
    with pytest.raises(ValueError, match="not fitted"):
        FairMetricDebias().transform(X)
    model = FairMetricDebias(rounds=1, n_features=8).fit(X, z)
    with pytest.raises(ValueError, match="columns"):
        model.transform(np.eye(3))
    bad = X[:5].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.transform(bad)


def test_batched_leading_dimensions_equal_the_flat_transform(device):
    X, z, _ = planted_xor(100, 0)
    model = FairMetricDebias(rounds=2, n_features=16, batch_size=7, device=device).fit(X, z)
    flat = model.transform(X[:24])
    np.testing.assert_array_equal(
        model.transform(X[:24].reshape(2, 3, 4, -1)).reshape(24, -1), flat
    )


def test_device_generic(device):
    """Fitted and applied on each device present (CUDA skipped with its reason when absent), the
    result, a float64 NumPy array on the host, matches the CPU's to float64 rounding amplified by
    the rounds."""
    X, z, _ = planted_xor(150, 0)
    x = torch.as_tensor(X, device=device)
    model = FairMetricDebias(rounds=3, n_features=32).fit(x, z)
    assert model.centres_.device == x.device
    out = model.transform(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    ref = FairMetricDebias(rounds=3, n_features=32).fit(X, z).transform(X)
    np.testing.assert_allclose(out, ref, atol=1e6 * np.finfo(np.float64).eps)


def test_two_equal_bias_functions_act_as_one_with_twice_alpha(device):
    """The M x M solve of the step: M copies of one bias function give
    ``1/2 |u|^2 + (M alpha W / 2) (b + <g, u>)^2``, one function at ``M alpha``."""

    def fitter(copies):
        def fit(x, target, weight, generator):
            bias = RandomFeatureBias.fit(
                x, target, weight, n_features=32, gamma=1.0, ridge=1e-3, generator=generator
            )
            return [bias] * copies

        return fit

    X, z, _ = planted_xor(200, 0)
    two = FairMetricDebias(alpha=3.0, rounds=2, bias_fitter=fitter(2), device=device).fit(X, z)
    one = FairMetricDebias(alpha=6.0, rounds=2, bias_fitter=fitter(1), device=device).fit(X, z)
    assert len(two.metrics_[0].bias_losses) == 2
    np.testing.assert_allclose(two.transform(X), one.transform(X), atol=1e3 * np.finfo(float).eps)
