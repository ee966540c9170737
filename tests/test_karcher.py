"""Karcher mean: float64 fixed-point references in NumPy/SciPy, optimality, gradients, errors."""

import math
import warnings

import geoopt
import numpy as np
import pytest
import scipy.linalg
import torch
from pymanopt.manifolds import Grassmann as PymanoptGrassmann

from manifoldnn.linalg import qr_positive, tolerance
from manifoldnn.manifolds import (
    Euclidean,
    Grassmann,
    GrassmannGeometry,
    ManifoldGeometry,
    PoincareBall,
    Sphere,
    SymmetricPositiveDefinite,
    karcher_mean,
)

SETS, POINTS = 64, 7

# Thresholds. karcher_mean stops a set when its gradient norm g = ||sum_i w_i Log_m(x_i)|| is at
# most TOL (the library's default, tolerance("karcher_tol")). The weighted cost is strongly convex
# near its minimiser, with the smallest eigenvalue MU of its Riemannian Hessian equal to 1 in flat
# space and, on the sets here (spread well inside the convexity radius), above MU = 0.01 (the Hessian
# of d^2/2 has eigenvalues r cot r >= 0.01 for every distance r <= 1.56); so a mean with gradient
# norm g is within g / MU of the minimiser. Quantities computed twice by the same arithmetic agree
# to ROUNDING eps times their size.
MU = 0.01
ROUNDING = 64
TOL64 = tolerance("karcher_tol", torch.float64)
TOL32 = tolerance("karcher_tol", torch.float32)


def _rounding(dtype, scale=1.0):
    return ROUNDING * torch.finfo(dtype).eps * max(float(scale), 1.0)


# ----------------------------------------------------------------------------- references
# Independent float64 logarithm / exponential maps (NumPy, SciPy, pymanopt), one point at a time.
def _grassmann_maps(n, p):
    manopt = PymanoptGrassmann(n, p)
    return manopt.log, manopt.exp, lambda x, u: np.linalg.norm(u)


def _sphere_log(x, y):
    v = y - x.dot(y) * x
    s = np.linalg.norm(v)
    return v if s == 0 else np.arctan2(s, x.dot(y)) * v / s


def _sphere_exp(x, u):
    t = np.linalg.norm(u)
    return x if t == 0 else np.cos(t) * x + np.sin(t) * u / t


def _spd_function(x, fn):
    values, vectors = np.linalg.eigh(x)
    return (vectors * fn(values)) @ vectors.T


def _spd_log(x, y):
    root, inv_root = _spd_function(x, np.sqrt), _spd_function(x, lambda v: 1 / np.sqrt(v))
    return root @ _spd_function(inv_root @ y @ inv_root, np.log) @ root


def _spd_exp(x, u):
    root, inv_root = _spd_function(x, np.sqrt), _spd_function(x, lambda v: 1 / np.sqrt(v))
    return root @ scipy.linalg.expm(inv_root @ u @ inv_root) @ root


def _spd_norm(x, u):
    inv = np.linalg.inv(x)
    return np.sqrt(np.trace(inv @ u @ inv @ u))


def _mobius_add(x, y):
    xy, x2, y2 = x.dot(y), x.dot(x), y.dot(y)
    return ((1 + 2 * xy + y2) * x + (1 - x2) * y) / (1 + 2 * xy + x2 * y2)


def _ball_log(x, y):  # curvature -1 (Ganea, Becigneul & Hofmann 2018)
    lam = 2 / (1 - x.dot(x))
    z = _mobius_add(-x, y)
    r = np.linalg.norm(z)
    return z if r == 0 else 2 / lam * np.arctanh(r) * z / r


def _ball_exp(x, u):
    lam = 2 / (1 - x.dot(x))
    t = np.linalg.norm(u)
    return x if t == 0 else _mobius_add(x, np.tanh(lam * t / 2) * u / t)


def _ball_norm(x, u):
    return 2 / (1 - x.dot(x)) * np.linalg.norm(u)


def _reference_mean(points, weights, log, exp, norm, init, iterations=2000, tol=1e-13):
    """Fixed point m <- Exp_m(t sum_i w_i Log_m x_i) in float64 to a gradient norm of 1e-13.

    t = 1, halved whenever the gradient norm grows (a unit step can overshoot in negative curvature).
    """
    w = weights / weights.sum()
    m, t = init, 1.0

    def gradient(m):
        return sum(wi * log(m, x) for wi, x in zip(w, points))

    grad = gradient(m)
    for _ in range(iterations):
        if norm(m, grad) < tol:
            break
        candidate = exp(m, t * grad)
        candidate_grad = gradient(candidate)
        if norm(candidate, candidate_grad) > norm(m, grad):
            t *= 0.5
            continue
        m, grad = candidate, candidate_grad
    return m, norm(m, grad)


def _grassmann_sets(gen, sets, n, p, spread):
    g = Grassmann()
    centre = g.projx(torch.randn(sets, 1, n, p, generator=gen, dtype=torch.float64))
    u = g.proju(centre, torch.randn(sets, POINTS, n, p, generator=gen, dtype=torch.float64))
    return g.expmap(centre, spread * u / np.sqrt(n * p))


def _cases():
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand(SETS, POINTS, generator=gen, dtype=torch.float64) + 0.1
    n, p = 7, 3
    grass = _grassmann_sets(gen, SETS, n, p, 0.6)
    sphere_centre = torch.nn.functional.normalize(
        torch.randn(SETS, 1, 5, generator=gen, dtype=torch.float64), dim=-1
    )
    sphere = torch.nn.functional.normalize(
        sphere_centre + 0.4 * torch.randn(SETS, POINTS, 5, generator=gen, dtype=torch.float64),
        dim=-1,
    )
    a = 0.4 * torch.randn(SETS, POINTS, 4, 4, generator=gen, dtype=torch.float64)
    spd = torch.linalg.matrix_exp(a + a.transpose(-1, -2))
    ball_centre = 0.15 * torch.randn(SETS, 1, 3, generator=gen, dtype=torch.float64)
    ball_tangent = 0.3 * torch.randn(SETS, POINTS, 3, generator=gen, dtype=torch.float64)
    ball = PoincareBall().expmap(ball_centre, ball_tangent)
    return {
        "grassmann": (Grassmann(), grass, weights, _grassmann_maps(n, p)),
        "sphere": (
            Sphere(),
            sphere,
            weights,
            (_sphere_log, _sphere_exp, lambda x, u: np.linalg.norm(u)),
        ),
        "spd": (SymmetricPositiveDefinite(), spd, weights, (_spd_log, _spd_exp, _spd_norm)),
        "poincare": (PoincareBall(), ball, weights, (_ball_log, _ball_exp, _ball_norm)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_matches_float64_fixed_point_reference(name, device):
    manifold, points, weights, (log, exp, norm) = CASES[name]
    mean, grad_norm, _ = karcher_mean(
        manifold, points.to(device), weights.to(device), return_info=True
    )
    assert mean.shape == points.shape[:1] + points.shape[2:]
    assert torch.all(grad_norm <= TOL64)
    pts, w = points.numpy(), weights.numpy()
    for s in range(SETS):
        ref, ref_grad = _reference_mean(pts[s], w[s], log, exp, norm, init=pts[s, 0])
        assert ref_grad < 1e-12  # the reference's own stopping criterion (1e-13)
        ours = mean[s].cpu().numpy()
        if name == "grassmann":
            gap = np.linalg.norm(ours @ ours.T - ref @ ref.T)
        else:
            gap = np.linalg.norm(ours - ref)
        assert gap < (TOL64 + 1e-13) / MU, f"set {s}: |mean - reference| = {gap:.2e}"
        # first-order optimality with the reference logarithm: sum_i w_i Log_mean(x_i) = 0
        grad = sum(wi * log(ours, x) for wi, x in zip(w[s] / w[s].sum(), pts[s]))
        # the reference logarithm agrees with ours to rounding, so its gradient is below TOL too
        assert norm(ours, grad) < TOL64 + _rounding(torch.float64, POINTS)


def test_euclidean_mean_is_weighted_average(device):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 3, generator=gen, dtype=torch.float64).to(device)
    w = torch.rand(4, 6, generator=gen, dtype=torch.float64).to(device)
    mean = karcher_mean(Euclidean(ndim=1), x, w)
    torch.testing.assert_close(
        mean,
        (w[..., None] * x).sum(1) / w.sum(1, keepdim=True),
        atol=_rounding(x.dtype, x.abs().max()),
        rtol=0,
    )


def test_manifolds_without_a_pairwise_geometry_use_the_generic_pieces(device):
    # Euclidean(ndim=2) has no pairwise geometry (EuclideanGeometry pairs vectors): the Karcher mean
    # still runs on the manifold's own maps
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 2, 2, generator=gen, dtype=torch.float64).to(device)
    mean = karcher_mean(Euclidean(ndim=2), x)
    torch.testing.assert_close(mean, x.mean(1), atol=_rounding(x.dtype, x.abs().max()), rtol=0)


def test_batch_equals_loop_and_leading_dims(device):
    manifold, points, weights, _ = CASES["spd"]
    pts = points[:6].reshape(2, 3, POINTS, 4, 4).to(device)
    w = weights[:6].reshape(2, 3, POINTS).to(device)
    batched = karcher_mean(manifold, pts, w)
    assert batched.shape == (2, 3, 4, 4)
    for i in range(2):
        for j in range(3):
            single = karcher_mean(manifold, pts[i, j], w[i, j])
            # each is within TOL / MU of the same minimiser
            torch.testing.assert_close(batched[i, j], single, atol=2 * TOL64 / MU, rtol=0)
    # shared weights broadcast over the batch
    shared = karcher_mean(manifold, pts, w[0, 0])
    torch.testing.assert_close(
        shared[1, 2], karcher_mean(manifold, pts[1, 2], w[0, 0]), atol=2 * TOL64 / MU, rtol=0
    )


def test_grassmann_mean_ignores_bases_and_converged_sets_stay(device):
    g = Grassmann()
    _, points, weights, _ = CASES["grassmann"]
    points, weights = points.to(device), weights.to(device)
    gen = torch.Generator().manual_seed(2)
    r = torch.linalg.qr(torch.randn(SETS, POINTS, 3, 3, generator=gen, dtype=torch.float64))[0]
    r = r.to(device)
    a = karcher_mean(g, points, weights)
    b = karcher_mean(g, points @ r, weights)
    assert g.projection_distance(a, b).max() < 2 * TOL64 / MU
    # a set of identical points is its own mean: zero iterations, unchanged
    same = points[:2, :1].expand(2, POINTS, 7, 3)
    mean, grad_norm, iterations = karcher_mean(g, same, return_info=True)
    assert torch.all(iterations == 0) and torch.all(grad_norm <= TOL64)
    torch.testing.assert_close(
        g.projector(mean), g.projector(points[:2, 0]), atol=_rounding(torch.float64, 7), rtol=0
    )


def test_per_set_stopping(device):
    g = Grassmann()
    _, points, _, _ = CASES["grassmann"]
    points = points.to(device)
    tight = points[:1]
    loose = points[1:2, :1].expand(1, POINTS, 7, 3)  # already converged at the warm start
    _, _, iterations = karcher_mean(g, torch.cat([tight, loose]), return_info=True)
    assert iterations[0] > 0 and iterations[1] == 0


def test_widely_spread_float32_sets_converge_and_stay_on_the_manifold(device):
    g = Grassmann()
    gen = torch.Generator().manual_seed(6)
    points = g.projx(torch.randn(16, 30, 10, 3, generator=gen)).to(
        device
    )  # uniform: no concentration
    mean, grad_norm, _ = karcher_mean(g, points, return_info=True, max_iter=200)
    assert torch.all(grad_norm <= TOL32)
    # a Householder QR factor is orthonormal to a small multiple of n eps (Higham 2002, Thm. 19.4)
    ok, reason = g.check_point_on_manifold(
        mean, explain=True, atol=4 * 10 * torch.finfo(torch.float32).eps, rtol=0
    )
    assert ok, reason


def test_float32(device):
    for name in ("grassmann", "sphere", "spd", "poincare"):
        manifold, points, weights, _ = CASES[name]
        points, weights = points.to(device), weights.to(device)
        mean32 = karcher_mean(manifold, points[:8].float(), weights[:8].float())
        mean64 = karcher_mean(manifold, points[:8], weights[:8])
        assert mean32.dtype == torch.float32
        if name == "grassmann":
            gap = (
                (
                    mean32.double() @ mean32.double().transpose(-1, -2)
                    - mean64 @ mean64.transpose(-1, -2)
                )
                .abs()
                .max()
            )
        else:
            gap = (mean32.double() - mean64).abs().max()
        # the float32 mean stops at TOL32, the float64 one at TOL64
        assert gap < (TOL32 + TOL64) / MU + _rounding(torch.float32, 16), name


# ----------------------------------------------------------------------------- gradients
def _gradcheck(manifold, to_manifold, raw, weights):
    raw = raw.clone().requires_grad_(True)
    weights = weights.clone().requires_grad_(True)

    def fn(a, w):
        mean = karcher_mean(manifold, to_manifold(a), w)
        return mean @ mean.transpose(-1, -2) if isinstance(manifold, Grassmann) else mean

    return torch.autograd.gradcheck(fn, (raw, weights), atol=1e-6, rtol=1e-5)


def test_gradcheck_all_manifolds(device):
    gen = torch.Generator().manual_seed(3)
    w = torch.rand(2, 4, generator=gen, dtype=torch.float64).to(device) + 0.5
    raw = 0.3 * torch.randn(2, 4, 5, 2, generator=gen, dtype=torch.float64).to(device)
    raw = raw + torch.eye(5, 2, dtype=torch.float64, device=device)
    assert _gradcheck(Grassmann(), qr_positive, raw, w)
    raw = 0.3 * torch.randn(2, 4, 4, generator=gen, dtype=torch.float64).to(device)
    raw = raw + torch.tensor([1.0, 0, 0, 0], dtype=torch.float64, device=device)
    assert _gradcheck(Sphere(), lambda a: a / a.norm(dim=-1, keepdim=True), raw, w)
    raw = 0.15 * torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64).to(device)
    raw = raw + torch.eye(3, dtype=torch.float64, device=device)
    assert _gradcheck(SymmetricPositiveDefinite(), lambda a: a @ a.transpose(-1, -2), raw, w)
    raw = 0.2 * torch.randn(2, 4, 3, generator=gen, dtype=torch.float64).to(device)
    assert _gradcheck(PoincareBall(), lambda a: a, raw, w)


def test_gradient_of_a_mean_agrees_with_finite_differences_of_the_reference(device):
    """d/dt of a scalar of the Grassmann mean along a path, implicit backward vs the NumPy reference."""
    g = Grassmann()
    _, points, weights, (log, exp, norm) = CASES["grassmann"]
    x, w = points[0].to(device), weights[0].to(device)
    gen = torch.Generator().manual_seed(4)
    direction = g.proju(x, torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device))
    c = torch.linspace(-1, 1, 7 * 7, dtype=torch.float64, device=device).reshape(7, 7)
    c = c + c.T

    def scalar_ref(t):
        moved = [exp(xi, t * di) for xi, di in zip(x.cpu().numpy(), direction.cpu().numpy())]
        m, _ = _reference_mean(moved, w.cpu().numpy(), log, exp, norm, init=moved[0])
        return float(np.sum(c.cpu().numpy() * (m @ m.T)))

    t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    moved = g.expmap(x, t * direction)
    mean = karcher_mean(g, moved, w)
    value = (c * g.projector(mean)).sum()
    (analytic,) = torch.autograd.grad(value, t)
    h = 1e-5
    numeric = (scalar_ref(h) - scalar_ref(-h)) / (2 * h)
    # central differences: truncation h^2 |f'''| and the reference means' error 1e-13 / MU
    # divided by 2 h, both below 1e-6
    assert abs(analytic.item() - numeric) < 1e-6 * max(1.0, abs(numeric))


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_value_errors(device):
    g = Grassmann()
    _, points, weights, _ = CASES["grassmann"]
    points, weights = points.to(device), weights.to(device)
    with pytest.raises(ValueError, match="sum to zero"):
        karcher_mean(g, points[:2], torch.zeros(2, POINTS, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="non-negative"):
        karcher_mean(g, points[:2], -weights[:2])
    with pytest.raises(ValueError, match="weights must have shape"):
        karcher_mean(g, points[:2], weights[:2, :3])
    with pytest.raises(ValueError, match="do not broadcast"):
        karcher_mean(g, points[:2], weights[:3])
    with pytest.raises(ValueError, match="not on the manifold"):
        karcher_mean(g, points[:2] * 1.1)
    with pytest.raises(ValueError, match="point shape"):
        karcher_mean(g, torch.zeros(3, 2, 5, device=device))
    with pytest.raises(ValueError, match=r"\(\.\.\., N, \*point_shape\)"):
        karcher_mean(g, torch.zeros(5, 2, device=device))
    with pytest.raises(ValueError, match="has no logmap"):
        karcher_mean(geoopt.Stiefel(), geoopt.Stiefel().random(2, 3, 5, 2, device=device))
    # with checks off, off-manifold points are the caller's responsibility
    karcher_mean(g, points[:2], check=False)


def test_non_convergence_warns_with_gradient_norm(device):
    g = Grassmann()
    _, points, _, _ = CASES["grassmann"]
    points = points.to(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        karcher_mean(g, points[:3], max_iter=1, tol=1e-15)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert messages and "gradient norm" in messages[0]


def test_works_with_geoopt_sphere_exact_and_manifold_tensors(device):
    manifold, points, weights, _ = CASES["sphere"]
    points, weights = points.to(device), weights.to(device)
    exact = geoopt.SphereExact()
    a = karcher_mean(exact, geoopt.ManifoldTensor(points[:4], manifold=exact), weights[:4])
    b = karcher_mean(manifold, points[:4], weights[:4])
    torch.testing.assert_close(a.as_subclass(torch.Tensor), b, atol=1e-12, rtol=0)


def test_grassmann_closed_form_backward_equals_dense_jacobian_backward(monkeypatch, device):
    # the Grassmann geometry's CG solve on the closed-form Hessian against the generic dense
    # Jacobian of the base class
    g = Grassmann()
    _, points, weights, _ = CASES["grassmann"]
    x = points[:5].to(device).requires_grad_(True)
    w = weights[:5].to(device).requires_grad_(True)
    generator = torch.Generator().manual_seed(5)
    cotangent = torch.randn(5, 7, 7, dtype=torch.float64, generator=generator).to(device)

    def gradients():
        mean = karcher_mean(g, x, w)
        return torch.autograd.grad((cotangent * g.projector(mean)).sum(), (x, w))

    closed = gradients()
    monkeypatch.setattr(
        GrassmannGeometry, "karcher_adjoint", ManifoldGeometry.karcher_adjoint, raising=True
    )
    dense = gradients()
    for a, b in zip(closed, dense):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_float32_grassmann_output_is_orthonormal_to_rounding(device):
    g = Grassmann()
    gen = torch.Generator().manual_seed(7)
    points = g.projx(torch.randn(32, 8, 32, 3, generator=gen)).to(device)
    same = points[:, :1].expand(
        32, 8, 32, 3
    )  # converged at the warm start: returned without a step
    for pts in (points, same):
        mean = karcher_mean(g, pts)
        gram = mean.transpose(-1, -2) @ mean
        # QR and one Newton-Schulz step: orthonormal to a small multiple of p eps
        assert (gram - torch.eye(3, device=device)).abs().max() <= 4 * 3 * torch.finfo(
            torch.float32
        ).eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta", [1e-2, 1e-3, 1e-4, 1e-5])
def test_grassmann_weighted_mean_of_two_points_near_the_cut_locus(dtype, delta, device):
    # Two subspaces with principal angles (0.3, 0.9, pi/2 - delta): the mean with weights
    # (0.3, 0.7) is the geodesic point at 0.7 of the way, angles 0.7 theta from the first.
    # (With the previous, solve-based logarithm this fails at delta = 1e-4 in float64, and in
    # float32 with another rotation it raised "became NaN".)
    gen = torch.Generator().manual_seed(0)
    n, p = 9, 3
    theta = torch.tensor([0.3, 0.9, math.pi / 2 - delta], dtype=torch.float64, device=device)

    def at(angles):
        return torch.cat(
            [
                torch.diag(angles.cos()),
                torch.diag(angles.sin()),
                angles.new_zeros(n - 2 * p, p),
            ]
        )

    q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0].to(device)
    points = torch.stack([q @ at(0 * theta), q @ at(theta)]).to(dtype)
    mean = karcher_mean(Grassmann(), points, torch.tensor([0.3, 0.7], dtype=dtype, device=device))
    expected = q @ at(0.7 * theta)
    error = (Grassmann.projector(mean.double()) - Grassmann.projector(expected)).abs().max().item()
    # the mean lies at angles 0.7 theta and 0.3 theta from the points, inside the convexity radius:
    # the Hessian there is at least 0.3 * 1.1 cot(1.1) + 0.7 * 0.48 cot(0.48) > 0.5, so the stopping
    # tolerance moves the mean by at most 2 TOL, plus the rounding of the points in dtype
    tol = 2 * tolerance("karcher_tol", dtype) + _rounding(dtype, 1)
    assert error < tol
