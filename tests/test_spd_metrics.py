"""The SPD metrics against independent computations.

Distances against SciPy's ``logm`` / ``sqrtm`` / ``cholesky`` in float64, Karcher means against
pyRiemann's ``mean_riemann`` / ``mean_logeuclid`` / ``mean_logchol`` / ``mean_wasserstein``, and the
consistency of each metric's inner product with its distance, logarithm and Riemannian gradient.
The generic properties (exp of log, batched equals looped, the Karcher optimality condition) come
from ``tests/test_geometry_properties.py``, which every registered geometry joins.

Tolerances. Points have eigenvalues in ``[e^-1, e]`` and size ``n = 4``: every map here is well
conditioned on them, so a computed matrix is exact to ``ROUNDING * n^2 * eps`` relative to its
size (a few dozen operations, each exact to ``eps / 2``). Two minimisers of a Karcher cost whose
Riemannian gradients have norms ``g1``, ``g2`` are at most ``(g1 + g2) / mu`` apart, ``mu`` the
cost's geodesic strong convexity: ``mu = 1`` on the Hadamard metrics (affine-invariant, flat
log-Euclidean and log-Cholesky); for Bures-Wasserstein (non-negative curvature) ``mu >= 1/2``
for points this close (the curvature term is below the identity's half), so the bound is doubled.
"""

import math

import geoopt
import numpy as np
import pytest
import scipy.linalg
import torch

from manifoldnn.linalg import tolerance
from manifoldnn.manifolds import (
    SPD_METRICS,
    BuresWassersteinGeometry,
    BuresWassersteinSPD,
    LogCholeskyGeometry,
    LogCholeskySPD,
    LogEuclideanGeometry,
    LogEuclideanSPD,
    SPDGeometry,
    SymmetricPositiveDefinite,
    geometry_for,
    karcher_mean,
    spd_manifold,
)

pyriemann_mean = pytest.importorskip("pyriemann.geometry.mean")

ROUNDING = 64
N = 4
PYRIEMANN_TOL = 1e-13


def _spd(batch, seed, dtype=torch.float64, device="cpu", spread=1.0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, N, N, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(a)
    lam = spread * (2 * torch.rand(*batch, N, generator=generator, dtype=torch.float64) - 1)
    x = (q * lam.exp().unsqueeze(-2)) @ q.transpose(-1, -2)
    return (0.5 * (x + x.transpose(-1, -2))).to(dtype=dtype, device=device)


def _bound(dtype, scale=1.0):
    return ROUNDING * N * N * torch.finfo(dtype).eps * max(float(scale), 1.0)


def _scipy_distance(metric, x, y):
    if metric == "affine_invariant":
        inv_root = scipy.linalg.inv(scipy.linalg.sqrtm(x))
        return np.linalg.norm(scipy.linalg.logm(inv_root @ y @ inv_root), "fro")
    if metric == "log_euclidean":
        return np.linalg.norm(scipy.linalg.logm(x) - scipy.linalg.logm(y), "fro")
    if metric == "log_cholesky":
        lx, ly = np.linalg.cholesky(x), np.linalg.cholesky(y)
        strict = np.tril(lx, -1) - np.tril(ly, -1)
        diag = np.log(np.diag(lx)) - np.log(np.diag(ly))
        return math.sqrt((strict**2).sum() + (diag**2).sum())
    root = scipy.linalg.sqrtm(x)
    cross = scipy.linalg.sqrtm(root @ y @ root)
    return math.sqrt(max(np.trace(x) + np.trace(y) - 2 * np.trace(cross).real, 0.0))


def test_each_metric_name_gives_its_geometry_class():
    expected = {
        "affine_invariant": SPDGeometry,
        "log_euclidean": LogEuclideanGeometry,
        "log_cholesky": LogCholeskyGeometry,
        "bures_wasserstein": BuresWassersteinGeometry,
    }
    assert set(SPD_METRICS) == set(expected)
    for name, cls in expected.items():
        assert type(geometry_for(spd_manifold(name))) is cls
    assert isinstance(spd_manifold("log_cholesky"), LogCholeskySPD)
    with pytest.raises(ValueError, match="metric"):
        spd_manifold("stein")


@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_distance_against_scipy(metric):
    x, y = _spd((6,), seed=1), _spd((6,), seed=2)
    geometry = geometry_for(spd_manifold(metric))
    got = geometry.dist(x, y)
    expected = torch.tensor(
        [_scipy_distance(metric, a.numpy(), b.numpy()) for a, b in zip(x, y)], dtype=torch.float64
    )
    torch.testing.assert_close(got, expected, atol=_bound(torch.float64, expected.max()), rtol=0)


@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_pairwise_squared_distance_against_scipy(metric):
    q, k = _spd((2,), seed=3), _spd((3,), seed=4)
    got = geometry_for(spd_manifold(metric)).pairwise_sq_dist(q, k)
    expected = torch.tensor(
        [[_scipy_distance(metric, a.numpy(), b.numpy()) ** 2 for b in k] for a in q],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, expected, atol=_bound(torch.float64, expected.max()), rtol=0)


PYRIEMANN_MEANS = {
    "affine_invariant": "mean_riemann",
    "log_euclidean": "mean_logeuclid",
    "log_cholesky": "mean_logchol",
    "bures_wasserstein": "mean_wasserstein",
}


@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_karcher_mean_against_pyriemann(metric):
    manifold = spd_manifold(metric)
    points = _spd((7,), seed=5, spread=0.5)
    weights = torch.linspace(0.5, 1.5, 7, dtype=torch.float64)
    mean = karcher_mean(manifold, points, weights)
    function = getattr(pyriemann_mean, PYRIEMANN_MEANS[metric])
    kwargs = {}
    if metric in ("affine_invariant", "bures_wasserstein"):
        kwargs = {"tol": PYRIEMANN_TOL, "maxiter": 1000}
    expected = function(points.numpy(), sample_weight=weights.numpy(), **kwargs)
    expected = torch.from_numpy(np.asarray(expected))
    mu = 0.5 if metric == "bures_wasserstein" else 1.0
    bound = (tolerance("karcher_tol", torch.float64) + PYRIEMANN_TOL) / mu
    distance = geometry_for(manifold).dist(mean, expected)
    assert float(distance) <= bound + _bound(torch.float64, 1.0), float(distance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_norm_of_the_logarithm_is_the_distance(metric, dtype, device):
    manifold = spd_manifold(metric)
    x, y = _spd((5,), 6, dtype, device, 0.5), _spd((5,), 7, dtype, device, 0.5)
    log = manifold.logmap(x, y)
    norm = manifold.inner(x, log, log).clamp_min(0).sqrt()
    distance = manifold.dist(x, y)
    # the distance is O(1) here; the norm goes through a few more maps than the distance
    torch.testing.assert_close(norm, distance, atol=_bound(dtype, distance.max()), rtol=0)


@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_riemannian_gradient_represents_the_euclidean_one(metric, device):
    """``<egrad2rgrad(G), V>_X = <G, V>_F`` for every symmetric ``V``."""
    manifold = spd_manifold(metric)
    x = _spd((3,), 8, device=device)
    generator = torch.Generator().manual_seed(9)
    g = torch.randn(3, N, N, generator=generator, dtype=torch.float64).to(device)
    v = torch.randn(3, N, N, generator=generator, dtype=torch.float64).to(device)
    v = 0.5 * (v + v.transpose(-1, -2))
    rgrad = manifold.egrad2rgrad(x, g)
    got = manifold.inner(x, rgrad, v)
    expected = (0.5 * (g + g.transpose(-1, -2)) * v).sum((-2, -1))
    torch.testing.assert_close(got, expected, atol=_bound(torch.float64, 10.0), rtol=0)


@pytest.mark.parametrize("cls", [LogEuclideanSPD, LogCholeskySPD])
def test_flat_metrics_transport_keeps_inner_products(cls, device):
    manifold = cls()
    x, y = _spd((4,), 10, device=device), _spd((4,), 11, device=device)
    generator = torch.Generator().manual_seed(12)
    u = torch.randn(2, 4, N, N, generator=generator, dtype=torch.float64).to(device)
    u = 0.5 * (u + u.transpose(-1, -2))
    before = manifold.inner(x, u[0], u[1])
    after = manifold.inner(y, manifold.transp(x, y, u[0]), manifold.transp(x, y, u[1]))
    torch.testing.assert_close(
        after, before, atol=_bound(torch.float64, before.abs().max()), rtol=0
    )


@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_karcher_mean_gradient_is_finite_at_repeated_eigenvalues(metric, device):
    """Identical points with a repeated eigenvalue: the mean is the point, and the gradient of
    its trace is the identity times the weight share (the mean of equal points moves with each)."""
    manifold = spd_manifold(metric)
    point = torch.diag(torch.tensor([2.0, 2.0, 2.0, 0.5], dtype=torch.float64, device=device))
    points = point.expand(3, N, N).clone().requires_grad_()
    mean = karcher_mean(manifold, points)
    torch.testing.assert_close(mean, point, atol=_bound(torch.float64, 2.0), rtol=0)
    (grad,) = torch.autograd.grad(mean.diagonal().sum(), points)
    assert bool(torch.isfinite(grad).all())
    expected = torch.eye(N, dtype=torch.float64, device=device).expand(3, N, N) / 3
    torch.testing.assert_close(
        grad, expected, atol=math.sqrt(torch.finfo(torch.float64).eps), rtol=0
    )


def test_bures_wasserstein_is_the_gaussian_wasserstein_distance_of_commuting_matrices():
    """For commuting X, Y: d = ||X^{1/2} - Y^{1/2}||_F (Bhatia, Jain & Lim 2019, Sec. 1)."""
    x = torch.diag(torch.tensor([1.0, 4.0, 9.0, 0.25], dtype=torch.float64))
    y = torch.diag(torch.tensor([4.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    expected = (x.diagonal().sqrt() - y.diagonal().sqrt()).norm()
    got = BuresWassersteinSPD().dist(x, y)
    torch.testing.assert_close(got, expected, atol=_bound(torch.float64, 3.0), rtol=0)
    assert isinstance(BuresWassersteinSPD(), SymmetricPositiveDefinite)


@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_riemannian_sgd_on_each_metric_reaches_the_target(metric):
    """``f(X) = d^2(X, T) / 2`` has Riemannian gradient ``-Log_X T``: a unit step of Riemannian
    SGD (Euclidean gradient -> ``egrad2rgrad`` -> ``retr``) lands on ``T`` on every metric, to the
    accuracy of the step's maps; a few steps remove the rest."""
    manifold = spd_manifold(metric)
    start, target = _spd((), seed=13, spread=0.5), _spd((), seed=14, spread=0.5)
    point = geoopt.ManifoldParameter(start.clone(), manifold=manifold)
    optimizer = geoopt.optim.RiemannianSGD([point], lr=1.0)
    for _ in range(5):
        optimizer.zero_grad()
        (0.5 * manifold.dist(point, target).pow(2)).backward()
        optimizer.step()
    assert float(manifold.dist(point.detach(), target)) <= 1e-6
