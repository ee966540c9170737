"""The hyperboloid: accurate maps, checks in any dtype, the ball isometry, and the Karcher mean on
geoopt's default ``Lorentz()`` and ``PoincareBall()`` (float32 curvature) with float64 points."""

import warnings

import geoopt
import pytest
import torch

from manifoldnn.layers import geodesic_attention
from manifoldnn.linalg import tolerance
from manifoldnn.manifolds import Lorentz, LorentzGeometry, geometry_for, karcher_mean
from manifoldnn.manifolds.lorentz import (
    ball_to_hyperboloid,
    hyperboloid_to_ball,
    lorentz_distance,
    lorentz_expmap,
    lorentz_logmap,
    minkowski_inner,
)


def _points(shape, dim, scale, dtype, device, seed, k=1.0):
    generator = torch.Generator().manual_seed(seed)
    space = scale * torch.randn(*shape, dim, generator=generator, dtype=torch.float64)
    x0 = (k + space.pow(2).sum(-1, keepdim=True)).sqrt()
    return torch.cat([x0, space], -1).to(device, dtype)


@pytest.mark.parametrize("k", [1.0, 0.5])
def test_maps_are_accurate_at_short_distances(k, device):
    """Exp then Log returns a tangent vector of length 1e-9 to relative rounding, and the
    distance is its length (geoopt's clamps leave errors near 1e-8 there)."""
    dtype = torch.float64
    eps = torch.finfo(dtype).eps
    x = _points((4,), 3, 1.0, dtype, device, seed=0, k=k)
    noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    u = noise + minkowski_inner(x, noise, keepdim=True) / k * x  # tangent at x
    u = 1e-9 * u / minkowski_inner(u, u, keepdim=True).sqrt()
    y = lorentz_expmap(x, u, k)
    back = lorentz_logmap(x, y, k)
    # the points have entries of size |x_0| <= 4: y - x carries an error of a few eps |x_0|
    scale = float(x.abs().max())
    torch.testing.assert_close(back, u, atol=16 * eps * scale, rtol=0)
    distance = lorentz_distance(x, y, k)
    torch.testing.assert_close(
        distance, torch.full_like(distance, 1e-9), atol=16 * eps * scale, rtol=0
    )


def test_distance_equals_the_arcosh_form_away_from_zero(device):
    dtype = torch.float64
    x, y = (_points((6,), 4, 1.0, dtype, device, seed=s) for s in (2, 3))
    reference = torch.acosh(-minkowski_inner(x, y))
    # arcosh's condition number at z is z / sqrt(z^2 - 1), below 10 for these distances
    got = lorentz_distance(x, y)
    assert bool((reference > 0.2).all())
    torch.testing.assert_close(got, reference, atol=0, rtol=64 * torch.finfo(dtype).eps)


def test_ball_and_hyperboloid_are_isometric(dtype, device):
    ball = geoopt.PoincareBall(c=2.0)
    generator = torch.Generator().manual_seed(4)
    p = ball.expmap0(0.4 * torch.randn(5, 3, generator=generator, dtype=dtype).to(device))
    q = ball.expmap0(0.4 * torch.randn(5, 3, generator=generator, dtype=dtype).to(device))
    k = 0.5  # the ball of curvature -c is the hyperboloid of k = 1 / c
    x, y = ball_to_hyperboloid(p, k), ball_to_hyperboloid(q, k)
    eps = torch.finfo(dtype).eps
    square = minkowski_inner(x, x)
    torch.testing.assert_close(square, torch.full_like(square, -k), atol=64 * eps, rtol=0)
    torch.testing.assert_close(hyperboloid_to_ball(x, k), p, atol=16 * eps, rtol=0)
    # the ball's distance (Nickel & Kiela 2017, eq. 1, at curvature -c); geoopt's own clamps its
    # artanh argument and is off by about 1e-7 in float64
    c = 1 / k
    ratio = (p - q).pow(2).sum(-1) / ((1 - c * p.pow(2).sum(-1)) * (1 - c * q.pow(2).sum(-1)))
    reference = torch.acosh(1 + 2 * c * ratio) / c**0.5
    # arcosh's condition number z / sqrt(z^2 - 1) is below 4 here
    assert bool((reference > 0.5).all())
    torch.testing.assert_close(lorentz_distance(x, y, k), reference, atol=256 * eps, rtol=0)


def test_checks_accept_either_dtype_with_a_float32_k(dtype, device):
    manifold = Lorentz()
    assert manifold.k.dtype == torch.float32
    x = _points((3,), 2, 1.0, dtype, device, seed=5)
    assert manifold.check_point_on_manifold(x)
    ok, reason = manifold.check_point_on_manifold(2 * x, explain=True)
    assert not ok and "upper sheet" in reason
    geometry = geometry_for(geoopt.Lorentz())  # geoopt's own class gets the same geometry
    assert isinstance(geometry, LorentzGeometry)
    assert geometry.check_point_on_manifold(x)[0]
    assert not geometry.check_point_on_manifold(-x)[0]  # the lower sheet


@pytest.mark.parametrize("manifold", [geoopt.Lorentz(), geoopt.PoincareBall(), Lorentz()], ids=repr)
def test_karcher_mean_of_float64_points_with_the_default_float32_curvature(manifold, device):
    """Five sets of six points spread over a few units of distance: each set's gradient norm
    reaches the float64 tolerance within the default iterations, without a warning."""
    dtype = torch.float64
    points = _points((5, 6), 4, 1.0, dtype, device, seed=6)
    if isinstance(manifold, geoopt.PoincareBall):
        points = hyperboloid_to_ball(points)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        mean, grad_norm, iterations = karcher_mean(manifold, points, return_info=True)
    assert mean.dtype == dtype and mean.shape == (5, points.shape[-1])
    tol = tolerance("karcher_tol", dtype)
    assert bool((grad_norm <= tol).all()), grad_norm
    assert bool((iterations <= 100).all())
    # the optimality condition recomputed from the hyperboloid's logarithms
    lifted = points if points.shape[-1] == 5 else ball_to_hyperboloid(points)
    centre = mean if mean.shape[-1] == 5 else ball_to_hyperboloid(mean)
    gradient = lorentz_logmap(centre.unsqueeze(1), lifted).mean(1)
    # the ball's tangent norm is the hyperboloid's (an isometry); rounding of the lift adds
    # a few eps per coordinate of size cosh(distance) <= 20
    norm = minkowski_inner(gradient, gradient).clamp_min(0).sqrt()
    assert bool((norm <= tol + 64 * 20 * torch.finfo(dtype).eps).all()), norm


def test_karcher_warm_start_is_the_midpoint_of_two_points(dtype, device):
    """The Lorentzian centroid (and the ball's Einstein midpoint) of two points with equal weights
    is their geodesic midpoint: ``karcher_mean`` with ``max_iter=0`` returns it."""
    eps = torch.finfo(dtype).eps
    pair = _points((3, 2), 3, 1.0, dtype, device, seed=7)
    for manifold, points in ((Lorentz(), pair), (geoopt.PoincareBall(), hyperboloid_to_ball(pair))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            start = karcher_mean(manifold, points, max_iter=0)
        a = manifold.dist(start, points[:, 0])
        b = manifold.dist(start, points[:, 1])
        half = 0.5 * manifold.dist(points[:, 0], points[:, 1])
        # distances up to about 6: their rounding is a few hundred eps
        torch.testing.assert_close(a, half, atol=512 * eps, rtol=0)
        torch.testing.assert_close(b, half, atol=512 * eps, rtol=0)


def test_attention_on_geoopt_lorentz_returns_each_query_at_a_tiny_temperature(device):
    lorentz = geoopt.Lorentz()
    x = _points((2, 5), 3, 1.0, torch.float64, device, seed=8)
    out, _ = geodesic_attention(lorentz, x, x, x, tau=1e-4, aggregation="tangent")
    torch.testing.assert_close(out, x, atol=1e-8, rtol=0)
    out, _ = geodesic_attention(lorentz, x, x, x, tau=1e-4)  # the Lorentzian centroid
    torch.testing.assert_close(out, x, atol=1e-8, rtol=0)
