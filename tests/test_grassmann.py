"""Grassmann manifold: oracle tests against pymanopt and scipy, identities, gradients, checks."""

import numpy as np
import pytest
import scipy.linalg
import torch
from pymanopt.manifolds import Grassmann as PymanoptGrassmann

from manifoldnn.manifolds import Grassmann

N, P, BATCH = 9, 3, 6
G = Grassmann()


def _tangent(y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return scale * G.proju(y, torch.randn_like(y))


@pytest.fixture
def pair(device):
    """Two batches of points, drawn on the CPU (the same on every device) and moved to ``device``."""
    gen = torch.Generator().manual_seed(0)
    x = G.projx(torch.randn(BATCH, N, P, generator=gen, dtype=torch.float64))
    y = G.projx(torch.randn(BATCH, N, P, generator=gen, dtype=torch.float64))
    return x.to(device), y.to(device)


def _proj(y):
    return y @ y.transpose(-1, -2)


# ---------------------------------------------------------------- oracle: pymanopt, scipy
def test_logmap_matches_pymanopt(pair, device):
    x, y = pair
    ref = PymanoptGrassmann(N, P, k=BATCH).log(x.cpu().numpy(), y.cpu().numpy())
    np.testing.assert_allclose(G.logmap(x, y).cpu().numpy(), ref, atol=1e-10)


def test_expmap_matches_pymanopt(pair, device):
    x, _ = pair
    torch.manual_seed(1)
    u = _tangent(x, 0.7)
    ref = PymanoptGrassmann(N, P, k=BATCH).exp(x.cpu().numpy(), u.cpu().numpy())
    ours = G.expmap(x, u)
    np.testing.assert_allclose(_proj(ours).cpu().numpy(), ref @ ref.transpose(0, 2, 1), atol=1e-10)
    np.testing.assert_allclose(
        (ours.transpose(-1, -2) @ ours).cpu().numpy(),
        np.broadcast_to(np.eye(P), (BATCH, P, P)),
        atol=1e-12,
    )


def test_dist_matches_pymanopt_and_scipy(pair, device):
    x, y = pair
    ours = G.dist(x, y).cpu().numpy()
    manopt = PymanoptGrassmann(N, P)
    for i in range(BATCH):
        assert abs(ours[i] - manopt.dist(x[i].cpu().numpy(), y[i].cpu().numpy())) < 1e-10
        angles = scipy.linalg.subspace_angles(x[i].cpu().numpy(), y[i].cpu().numpy())
        np.testing.assert_allclose(
            G.principal_angles(x[i], y[i]).cpu().numpy(), np.sort(angles), atol=1e-12
        )


def test_proju_and_transp_match_pymanopt(pair, device):
    x, y = pair
    torch.manual_seed(2)
    v = torch.randn_like(x)
    manopt = PymanoptGrassmann(N, P, k=BATCH)
    np.testing.assert_allclose(
        G.proju(x, v).cpu().numpy(), manopt.projection(x.cpu().numpy(), v.cpu().numpy()), atol=1e-12
    )
    u = G.proju(x, v)
    np.testing.assert_allclose(
        G.transp(x, y, u).cpu().numpy(),
        manopt.transport(x.cpu().numpy(), y.cpu().numpy(), u.cpu().numpy()),
        atol=1e-12,
    )


def _haar_statistic(samples: np.ndarray) -> float:
    """Mean squared Frobenius norm of e^T Y for the first P axes: E = P * P / N under Haar measure."""
    return float((samples[:, :P, :] ** 2).sum(axis=(1, 2)).mean())


def test_random_is_haar_like_pymanopt(device):
    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002 (pymanopt samples from the global NumPy generator)
    count = 4000
    ours = G.random(count, N, P, dtype=torch.float64, device=device).cpu().numpy()
    theirs = PymanoptGrassmann(N, P, k=count).random_point()
    expected = P * P / N
    # the statistic is a mean of `count` i.i.d. values in [0, P]; 5 standard errors of slack
    slack = 5 * np.sqrt(P * P / count)
    assert abs(_haar_statistic(ours) - expected) < slack
    assert abs(_haar_statistic(theirs) - expected) < slack
    # the mean projector of a uniform subspace is (P / N) I
    mean_projector = np.einsum("bip,bjp->ij", ours, ours) / count
    np.testing.assert_allclose(mean_projector, np.eye(N) * P / N, atol=0.05)
    np.testing.assert_allclose(
        ours.transpose(0, 2, 1) @ ours, np.broadcast_to(np.eye(P), (count, P, P)), atol=1e-12
    )


# ---------------------------------------------------------------- identities
def test_exp_log_inverse(pair, device):
    x, y = pair
    back = G.expmap(x, G.logmap(x, y))
    torch.testing.assert_close(_proj(back), _proj(y), atol=1e-10, rtol=0)
    torch.manual_seed(4)
    u = _tangent(x)
    u = u / u.flatten(1).norm(dim=1)[:, None, None]  # every principal angle < 1 < pi/2
    torch.testing.assert_close(G.logmap(x, G.expmap(x, u)), u, atol=1e-10, rtol=0)


def test_dist_is_norm_of_log_and_symmetric(pair, device):
    x, y = pair
    log = G.logmap(x, y)
    torch.testing.assert_close(G.dist(x, y), G.norm(x, log), atol=1e-10, rtol=0)
    torch.testing.assert_close(G.dist(x, y), G.dist(y, x), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        G.dist(x, y), G.principal_angles(x, y).norm(dim=-1), atol=1e-12, rtol=0
    )


def test_invariance_to_choice_of_basis(pair, device):
    x, y = pair
    torch.manual_seed(5)
    r = torch.linalg.qr(torch.randn(BATCH, P, P, dtype=torch.float64, device=device))[0]
    assert torch.all(G.dist(x, x @ r) == 0)
    assert torch.all(G.projection_distance(x, x @ r) == 0)
    torch.testing.assert_close(G.dist(x @ r, y), G.dist(x, y), atol=1e-12, rtol=0)
    torch.testing.assert_close(G.logmap(x, y @ r), G.logmap(x, y), atol=1e-10, rtol=0)
    # changing the base basis rotates the tangent vector accordingly
    torch.testing.assert_close(G.logmap(x @ r, y), G.logmap(x, y) @ r, atol=1e-10, rtol=0)
    torch.testing.assert_close(
        G.chordal_distance(x @ r, y), G.chordal_distance(x, y), atol=1e-12, rtol=0
    )


def test_distances_against_closed_forms(pair, device):
    x, y = pair
    explicit = (_proj(x) - _proj(y)).flatten(1).norm(dim=1) / np.sqrt(2)
    torch.testing.assert_close(G.projection_distance(x, y), explicit, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        G.projection_distance(x, y),
        torch.sin(G.principal_angles(x, y)).norm(dim=-1),
        atol=1e-12,
        rtol=0,
    )
    for i in range(BATCH):
        rotation, _ = scipy.linalg.orthogonal_procrustes(x[i].cpu().numpy(), y[i].cpu().numpy())
        procrustes = np.linalg.norm(x[i].cpu().numpy() @ rotation - y[i].cpu().numpy())
        assert abs(G.chordal_distance(x[i], y[i]).item() - procrustes) < 1e-12


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-6), (torch.float32, 2e-2)])
def test_distance_accurate_near_zero(dtype, rel, device):
    torch.manual_seed(6)
    x = G.random(BATCH, 30, 4, dtype=dtype, device=device)
    u = G.proju(x, torch.randn_like(x))
    u = u / u.flatten(1).norm(dim=1)[:, None, None]
    scales = [1e-9, 1e-6, 1e-3, 1e-1] if dtype == torch.float64 else [1e-4, 1e-2, 1e-1]
    for t in scales:
        d = G.dist(x, G.expmap(x, t * u))
        torch.testing.assert_close(d, torch.full_like(d, t), rtol=rel, atol=0)
        pd = G.projection_distance(x, G.expmap(x, t * u))
        assert torch.all(pd > 0) and torch.all((pd / t - 1).abs() < rel + t * t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_finite_gradient_at_coincident_points(dtype, device):
    torch.manual_seed(7)
    y = G.random(BATCH, 12, 3, dtype=dtype, device=device)
    r = torch.linalg.qr(torch.randn(BATCH, 3, 3, dtype=dtype, device=device))[0]
    for fn in (G.dist, G.projection_distance, G.chordal_distance):
        x = y.clone().requires_grad_(True)
        value = fn(x, y @ r)
        value.sum().backward()
        assert torch.all(value == 0)
        assert torch.isfinite(x.grad).all() and torch.all(x.grad == 0)


# ---------------------------------------------------------------- retraction, transport, projx
def test_retraction_and_transport_stay_on_manifold(pair, device):
    x, y = pair
    torch.manual_seed(8)
    u, v = _tangent(x), _tangent(x)
    for new in (G.retr(x, u), G.expmap(x, u)):
        ok, reason = G.check_point_on_manifold(new, explain=True, atol=1e-10)
        assert ok, reason
    new_x, new_v = G.retr_transp(x, u, v)
    assert torch.allclose(new_x, G.retr(x, u))
    assert (new_x.transpose(-1, -2) @ new_v).abs().max() < 1e-12
    new_x, new_v = G.expmap_transp(x, u, v)
    assert (new_x.transpose(-1, -2) @ new_v).abs().max() < 1e-12
    assert (y.transpose(-1, -2) @ G.transp(x, y, v)).abs().max() < 1e-12
    # retraction is first-order: d(retr(x, t u), expmap(x, t u)) = O(t^2)
    t = 1e-4
    assert G.dist(G.retr(x, t * u), G.expmap(x, t * u)).max() < 100 * t * t


def test_projx_keeps_valid_points_and_orthonormalises(pair, device):
    x, _ = pair
    torch.testing.assert_close(G.projx(x), x, atol=1e-14, rtol=0)
    torch.manual_seed(9)
    a = torch.randn(BATCH, N, P, dtype=torch.float64, device=device)
    q = G.projx(a)
    ok, reason = G.check_point_on_manifold(q, explain=True, atol=1e-12)
    assert ok, reason
    assert G.projection_distance(q, torch.linalg.qr(a)[0]).max() == 0


def test_inner_keepdim_and_broadcasting(pair, device):
    x, _ = pair
    u = _tangent(x)
    assert G.inner(x, u).shape == (BATCH,)
    assert G.inner(x, u, keepdim=True).shape == (BATCH, 1, 1)
    torch.testing.assert_close(G.inner(x, u), (u * u).sum((-1, -2)))
    y = G.random(4, 1, N, P, dtype=torch.float64, device=device)
    z = G.random(1, 5, N, P, dtype=torch.float64, device=device)
    assert G.dist(y, z).shape == (4, 5)
    assert G.logmap(y, z).shape == (4, 5, N, P)
    torch.testing.assert_close(G.dist(y, z)[2, 3], G.dist(y[2, 0], z[0, 3]))


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta", [1e-2, 1e-3, 1e-4, 1e-5])
def test_logmap_closed_form_near_the_cut_locus(dtype, delta, device):
    """Log_X(Y) = Q [0; diag(theta); 0] R1 for X = Q [I; 0] R1, Y = Q [cos T; sin T; 0] R2, with a
    principal angle pi/2 - delta: finite and accurate to the rounding of X^T Y, about eps / delta
    (solving with X^T Y, the previous logarithm gave NaN in float32 for 7 of 50 such pairs at
    delta = 1e-4)."""
    n, p = 25, 2
    theta = torch.tensor([0.7, np.pi / 2 - delta], dtype=torch.float64, device=device)
    zeros = torch.zeros(n - 2 * p, p, dtype=torch.float64, device=device)
    gen = torch.Generator().manual_seed(3)
    worst = 0.0
    for _ in range(50):
        q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64).to(device))[0]
        r1, r2 = torch.linalg.qr(
            torch.randn(2, p, p, generator=gen, dtype=torch.float64).to(device)
        )[0]
        x = q @ torch.eye(n, p, dtype=torch.float64, device=device) @ r1
        y = q @ torch.cat([torch.diag(theta.cos()), torch.diag(theta.sin()), zeros]) @ r2
        exact = (
            q
            @ torch.cat(
                [torch.zeros(p, p, dtype=torch.float64, device=device), torch.diag(theta), zeros]
            )
            @ r1
        )
        log = G.logmap(x.to(dtype), y.to(dtype))
        assert torch.isfinite(log).all()
        worst = max(worst, (log.double() - exact).abs().max().item())
    assert worst <= 4 * torch.finfo(dtype).eps / delta


def test_gradcheck_dist_logmap_expmap(device):
    torch.manual_seed(10)
    x = G.random(2, 5, 2, dtype=torch.float64, device=device)
    y = G.random(2, 5, 2, dtype=torch.float64, device=device)
    u = G.proju(x, torch.randn_like(x))

    def on(a):  # map an unconstrained matrix onto the manifold smoothly
        return G.projx(a)

    a = x.clone().requires_grad_(True)
    b = y.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: G.dist(on(a), on(b)), (a, b))
    assert torch.autograd.gradcheck(lambda a, b: G.logmap(on(a), on(b)), (a, b))
    assert torch.autograd.gradcheck(lambda a, b: G.projection_distance(on(a), on(b)), (a, b))
    assert torch.autograd.gradcheck(lambda a, b: G.chordal_distance(on(a), on(b)), (a, b))
    v = u.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, v: G.expmap(on(a), v), (a, v))
    # exp at zero velocity and log of a point to itself: the spectral backward has no 1/gap terms
    zero = torch.zeros_like(u, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: G.expmap(x, v), (zero,))
    assert torch.autograd.gradcheck(lambda a: G.logmap(x, on(a)), (x.clone().requires_grad_(True),))


# ---------------------------------------------------------------- checks and errors
def test_checks_give_reasons(device):
    x = torch.randn(N, P, dtype=torch.float64, device=device)
    ok, reason = G.check_point_on_manifold(x, explain=True)
    assert not ok and "X^T X" in reason
    y = G.random(N, P, dtype=torch.float64, device=device)
    ok, reason = G.check_vector_on_tangent(
        y, torch.randn(N, P, dtype=torch.float64, device=device), explain=True
    )
    assert not ok and "X^T U" in reason
    assert G.check_vector_on_tangent(
        y, G.proju(y, torch.randn(N, P, dtype=torch.float64, device=device))
    )
    with pytest.raises(ValueError, match="p <= n"):
        G.random(2, 3)
    ok, reason = G.check_point(torch.zeros(2, 3, device=device), explain=True)
    assert not ok and "p <= n" in reason


def test_origin_float32_and_dtype_preserved(device):
    o = G.origin(2, 5, 3, device=device)
    assert o.shape == (2, 5, 3) and G.check_point_on_manifold(o)
    x = G.random(3, 7, 2, device=device)
    assert x.dtype == torch.float32
    y = G.random(3, 7, 2, device=device)
    for out in (G.logmap(x, y), G.expmap(x, G.proju(x, y)), G.dist(x, y), G.principal_angles(x, y)):
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_squared_distance_hessian_matches_autograd(device):
    """Closed-form Hessian of 1/2 d^2(., X) equals minus the derivative of Log_.(X) along retractions."""
    torch.manual_seed(11)
    n, p = 7, 3
    y, x = (
        G.random(n, p, dtype=torch.float64, device=device),
        G.random(n, p, dtype=torch.float64, device=device),
    )
    dim = n * p
    xi = torch.zeros(n, p, dtype=torch.float64, device=device, requires_grad=True)
    field = G.proju(y, G.logmap(G.retr(y, G.proju(y, xi)), x))
    basis = torch.eye(dim, dtype=torch.float64, device=device).reshape(dim, n, p)
    autograd_rows = torch.stack(
        [torch.autograd.grad(field, xi, grad_outputs=e, retain_graph=True)[0] for e in basis]
    )
    log = G.logmap(y, x)
    closed_form = torch.stack([G.squared_distance_hessian(y, log, G.proju(y, e)) for e in basis])
    torch.testing.assert_close(closed_form, -autograd_rows, atol=1e-11, rtol=0)
    # its spectrum: s cot s at s = theta_k +- theta_l, theta_l (n - 2p times), and 1 (p times)
    theta = G.principal_angles(y, x)
    expected = [1.0] * p + [float(t / torch.tan(t)) for t in theta] * (n - 2 * p)
    for k in range(p):
        for l in range(k + 1, p):
            for s in (theta[k] + theta[l], theta[k] - theta[l]):
                expected.append(float(s / torch.tan(s)))
    eigenvalues = torch.linalg.eigvalsh(closed_form.reshape(dim, dim))
    nonzero = eigenvalues[eigenvalues.abs() > 1e-9]
    np.testing.assert_allclose(np.sort(nonzero.cpu().numpy()), np.sort(expected), atol=1e-10)


# ------------------------------------------------- weighted sum of logarithms (Karcher direction)
def test_weighted_logmap_sum_matches_pymanopt_batched(device):
    gen = torch.Generator().manual_seed(3)
    count = 7
    x = G.projx(torch.randn(BATCH, N, P, generator=gen, dtype=torch.float64).to(device))
    tangent = G.proju(
        x[:, None], torch.randn(BATCH, count, N, P, generator=gen, dtype=torch.float64).to(device)
    )
    y = G.projx(G.expmap(x[:, None], 0.4 * tangent) @ torch.linalg.qr(
        torch.randn(BATCH, count, P, P, generator=gen, dtype=torch.float64).to(device))[0])  # fmt: skip
    w = torch.rand(BATCH, count, generator=gen, dtype=torch.float64).to(device)
    manopt = PymanoptGrassmann(N, P)
    ref = np.stack(
        [
            sum(
                w[b, i].item() * manopt.log(x[b].cpu().numpy(), y[b, i].cpu().numpy())
                for i in range(count)
            )
            for b in range(BATCH)
        ]
    )
    ours = G.weighted_logmap_sum(x, y, w)
    np.testing.assert_allclose(ours.cpu().numpy(), ref, atol=1e-10)
    # broadcasting: one base point and one weight vector for a (2, BATCH) batch of sets
    both = G.weighted_logmap_sum(x[0], torch.stack([y, y]), w[0])
    assert both.shape == (2, BATCH, N, P)
    expected = (w[0][:, None, None] * G.logmap(x[0], y)).sum(-3)
    torch.testing.assert_close(both[1], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("angle_max", [1e-9, 1e-3, 0.7, np.pi / 2 - 1e-3])
def test_weighted_logmap_sum_closed_form_from_zero_to_the_cut_locus(angle_max, device):
    # X = [I; 0], Y = [cos T; sin T; 0] R: Log_X(Y) = [0; T; 0] exactly, for any rotation R
    theta = torch.linspace(0.0, angle_max, P, dtype=torch.float64, device=device)
    x = torch.eye(2 * P + 1, P, dtype=torch.float64, device=device)
    y = torch.cat([torch.diag(theta.cos()), torch.diag(theta.sin()), torch.zeros_like(x[:1])], 0)
    rotation = torch.linalg.qr(torch.randn(P, P, dtype=torch.float64, device=device))[0]
    exact = torch.cat([torch.zeros_like(x[:P]), torch.diag(theta), torch.zeros_like(x[:1])], 0)
    ours = G.weighted_logmap_sum(
        x, (y @ rotation)[None], torch.ones(1, dtype=torch.float64, device=device)
    )
    # rounding of X^T Y alone limits the accuracy to about eps / cos(theta_max)
    tol = 4 * torch.finfo(torch.float64).eps / np.cos(angle_max)
    torch.testing.assert_close(ours, exact, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_weighted_logmap_sum_equals_sum_of_logmaps_and_gradcheck(dtype, atol, device):
    gen = torch.Generator().manual_seed(4)
    x = G.projx(torch.randn(3, N, P, generator=gen, dtype=torch.float64).to(device))
    steps = 0.3 * torch.randn(3, 5, N, P, generator=gen, dtype=torch.float64).to(device)
    y = G.expmap(x[:, None], G.proju(x[:, None], steps))
    w = torch.rand(3, 5, generator=gen, dtype=torch.float64).to(device)
    x, y, w = x.to(dtype), y.to(dtype), w.to(dtype)
    expected = (w[..., None, None] * G.logmap(x[:, None], y)).sum(-3)
    torch.testing.assert_close(G.weighted_logmap_sum(x, y, w), expected, atol=atol, rtol=0)
    if dtype == torch.float64:  # with autograd recording, the differentiable form is used
        y = y.requires_grad_()
        assert torch.autograd.gradcheck(lambda b: G.weighted_logmap_sum(x, b, w), (y,))
