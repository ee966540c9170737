"""Tests of FairnessMetric: closed forms, the attention it induces, and the first-order claim."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifoldnn.fairness import AssociationBias, FairnessMetric, LinearBias
from manifoldnn.layers import GeodesicAttention, geodesic_attention
from manifoldnn.manifolds import Euclidean, Grassmann, Sphere, geometry_for

S, E = Sphere(), Euclidean(ndim=1)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def sphere_exp(x, u):
    n = u.norm(dim=-1, keepdim=True)
    return torch.cos(n) * x + torch.sin(n) * u / n


def tangent_frame(q, a):
    """Unit tangent vectors at q along the Riemannian gradient of <a, x> and orthogonal to it."""
    g = a - (a @ q) * q
    along = g / g.norm()
    other = torch.randn_like(q)
    other = other - (other @ q) * q - (other @ along) * along
    return g, along, other / other.norm()


def test_alpha_zero_reproduces_base_attention_exactly(device):
    torch.manual_seed(0)
    q, k = (
        unit(torch.randn(2, 5, 6, dtype=torch.float64, device=device)),
        unit(torch.randn(2, 9, 6, device=device)),
    )
    k = k.double()
    metric = FairnessMetric(
        S, [LinearBias(torch.randn(6, dtype=torch.float64, device=device))], alpha=0.0
    )
    for aggregation in ("extrinsic", "tangent"):
        base, _ = geodesic_attention(S, q, k, k, tau=0.4, aggregation=aggregation)
        fair, _ = geodesic_attention(S, q, k, k, tau=0.4, aggregation=aggregation, metric=metric)
        assert torch.equal(base, fair)
    x, y = (
        torch.randn(3, 7, 5, dtype=torch.float64, device=device),
        torch.randn(3, 8, 5, dtype=torch.float64, device=device),
    )
    metric = FairnessMetric(
        E, [LinearBias(torch.randn(5, dtype=torch.float64, device=device))], alpha=0.0
    )
    base, _ = geodesic_attention(E, x, y, y, tau=0.7)
    assert torch.allclose(
        base, geodesic_attention(E, x, y, y, tau=0.7, metric=metric)[0], atol=1e-14
    )


# the device fixture is the same for every example
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 10_000),
    alpha=st.floats(0.05, 5.0),
    t=st.floats(0.05, 1.5),
)
def test_stretch_only_along_bias_gradient_on_sphere(seed, alpha, t, device):
    gen = torch.Generator().manual_seed(seed)
    q = unit(torch.randn(5, generator=gen, dtype=torch.float64)).to(device)
    a = torch.randn(5, generator=gen, dtype=torch.float64).to(device)
    g, along, other = tangent_frame(q, a)
    keys = torch.stack([sphere_exp(q, t * along), sphere_exp(q, t * other)])
    metric = FairnessMetric(S, [LinearBias(a)], alpha=alpha)
    base = geometry_for(S).pairwise_sq_dist(q[None], keys, "geodesic")[0]
    fair = metric.sq_dist(q[None], keys)[0]
    # along g: + alpha <g, Log_q k>^2 = alpha |g|^2 t^2 exactly; orthogonal to g: unchanged
    assert torch.allclose(fair[0] - base[0], alpha * g.pow(2).sum() * t**2, rtol=1e-9)
    assert abs(float(fair[1] - base[1])) < 1e-12
    # attention: the key along g loses weight, the ratio changes by exactly the extra logit
    # (tau = 1 and alpha <= 5 keep both weights above float64 underflow)
    _, w = geodesic_attention(S, q[None], keys, keys, tau=1.0, metric=metric, need_weights=True)
    _, w0 = geodesic_attention(S, q[None], keys, keys, tau=1.0, need_weights=True)
    assert w[0, 0] < w0[0, 0]
    log_ratio_change = (w[0, 0] / w[0, 1]).log() - (w0[0, 0] / w0[0, 1]).log()
    expected = -alpha * g.pow(2).sum() * t**2
    assert torch.allclose(log_ratio_change, expected, rtol=1e-8, atol=1e-10)


def test_euclidean_sdpa_fair_path_matches_explicit_formula(device):
    torch.manual_seed(1)
    dirs = torch.randn(2, 4, dtype=torch.float64, device=device)
    metric = FairnessMetric(E, [LinearBias(dirs[0]), LinearBias(dirs[1])], alpha=0.7)
    q, k, v = (torch.randn(2, n, 4, dtype=torch.float64, device=device) for n in (5, 6, 6))
    pad = torch.tensor([[False] * 5 + [True], [False] * 6], device=device)
    out, _ = geodesic_attention(E, q, k, v, tau=0.5, metric=metric, key_padding_mask=pad)  # SDPA
    diff = k.unsqueeze(-3) - q.unsqueeze(-2)
    d2 = diff.pow(2).sum(-1) + 0.7 * (diff @ dirs.T).pow(2).sum(-1)
    logits = (-d2 / 0.5).masked_fill(pad.unsqueeze(-2), -math.inf)
    ref = torch.softmax(logits, -1) @ v
    assert torch.allclose(out, ref, atol=1e-12)
    out2 = geodesic_attention(
        E, q, k, v, tau=0.5, metric=metric, key_padding_mask=pad, need_weights=True
    )[0]
    assert torch.allclose(out2, ref, atol=1e-12)


@pytest.mark.slow
def test_first_order_distance_against_minimal_path_length_on_sphere(device):
    r"""d_fair from the formula vs the length of the shortest path under G_fair on S^2.

    For the linear bias :math:`b(x) = \langle a, x\rangle`, :math:`G_{fair}(x)(u, u) = |u|^2 +
    \alpha \langle a, u\rangle^2` for tangent u: the restriction to the sphere of the constant
    ambient metric :math:`M = I + \alpha a a^\top`. Hence, exactly,

    * every path from q to k is at least the M-length of the chord, :math:`|k - q|_M`, and an
      inscribed polyline is never longer than the path (M is a norm);
    * the shortest path is at most :math:`L = \int_0^\theta \sqrt{1 + \alpha c(s)^2}\, ds`, the
      M-length of the base geodesic :math:`\gamma(s)`, with :math:`c(s) = \langle a,
      \gamma'(s)\rangle = -\sin s \langle a, q\rangle + \cos s\, c_0`;
    * the formula is that integral with the metric frozen at q, :math:`\theta \sqrt{1 + \alpha
      c_0^2}`, and since :math:`|\partial_x \sqrt{1 + \alpha x^2}| \le \alpha |x| \le \alpha |a|`
      and :math:`|c(s) - c_0| \le |\langle a, q\rangle| s + |c_0| s^2 / 2`,

      .. math:: |L - d_{formula}| \le B = \alpha |a| \big(|\langle a, q\rangle| \theta^2 / 2
                + |c_0| \theta^3 / 6\big),

      first order in alpha and one order of theta above the stretch :math:`\approx \alpha c_0^2
      \theta / 2`: the formula is exact to first order in alpha, with a relative error O(theta).

    The discretised minimal path (LBFGS over 47 points on the sphere) must then lie in
    :math:`[|k - q|_M, L]` and the formula within :math:`B + L - |k - q|_M` of it.
    """
    torch.manual_seed(2)
    eps = torch.finfo(torch.float64).eps
    a = torch.tensor([0.3, 1.0, -0.4], dtype=torch.float64, device=device)
    q = unit(torch.tensor([1.0, 0.2, 0.1], dtype=torch.float64, device=device))
    g, along, other = tangent_frame(q, a)
    direction = unit(0.8 * along + 0.6 * other)
    c0, aq = float(a @ direction), float(a @ q)
    nodes, weights = (torch.from_numpy(v).to(device) for v in np.polynomial.legendre.leggauss(32))
    for alpha, dist in ((0.2, 0.2), (0.1, 0.2), (0.2, 0.1)):
        metric = FairnessMetric(S, [LinearBias(a)], alpha=alpha)
        k = sphere_exp(q, dist * direction)
        formula = float(metric.sq_dist(q[None], k[None])[0, 0].sqrt())
        # L by 32-point Gauss-Legendre on the analytic integrand (error far below eps * L), with
        # the metric's own quadratic form along the base geodesic
        s = (nodes + 1) * dist / 2
        curve = torch.cos(s)[:, None] * q + torch.sin(s)[:, None] * direction
        velocity = -torch.sin(s)[:, None] * q + torch.cos(s)[:, None] * direction
        base_length = (
            float((weights * metric.quadratic_form(curve, velocity).sqrt()).sum()) * dist / 2
        )
        chord = k - q
        chord_length = math.sqrt(float(chord @ chord + alpha * (a @ chord) ** 2))
        bound = alpha * float(a.norm()) * (abs(aq) * dist**2 / 2 + abs(c0) * dist**3 / 6)
        assert abs(base_length - formula) <= bound
        assert chord_length > dist  # the metric really stretched this pair

        steps = 48
        t = torch.linspace(0, 1, steps + 1, dtype=torch.float64, device=device)[1:-1, None]
        start = unit((1 - t) * q + t * k)  # the base geodesic (same curve, other speed)
        inner = start.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([inner], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16)

        def length(points, metric=metric, k=k):
            path = torch.cat([q[None], unit(points), k[None]])
            mid = unit(0.5 * (path[1:] + path[:-1]))
            step = path[1:] - path[:-1]
            step = step - (step * mid).sum(-1, keepdim=True) * mid
            return metric.quadratic_form(mid, step).clamp_min(0).sqrt().sum()

        def closure(inner=inner, opt=opt, length=length):
            opt.zero_grad()
            value = length(inner)
            value.backward()
            return value

        base_path = float(length(start.detach()))
        opt.step(closure)
        shortest = float(length(inner.detach()))
        # rounding of a sum of 48 segment lengths: a few eps per segment
        rounding = 4 * steps * eps * base_length
        assert chord_length - rounding <= shortest <= base_path + rounding
        assert base_path <= base_length + rounding  # an inscribed polyline
        assert abs(formula - shortest) <= bound + (base_length - chord_length) + rounding


def test_locality_kernel_weights_the_stretch(device):
    torch.manual_seed(3)
    a = torch.randn(4, dtype=torch.float64, device=device)
    centre = unit(torch.randn(1, 4, dtype=torch.float64, device=device))
    metric = FairnessMetric(S, [LinearBias(a)], alpha=2.0, centres=centre, bandwidth=0.3)
    q = unit(torch.randn(6, 4, dtype=torch.float64, device=device))
    k = unit(torch.randn(5, 4, dtype=torch.float64, device=device))
    theta2 = geometry_for(S).pairwise_sq_dist(q, centre, "geodesic")
    w = torch.exp(-theta2 / (2 * 0.3**2))
    unlocal = FairnessMetric(S, [LinearBias(a)], alpha=2.0)
    assert torch.allclose(metric.extra_sq(q, k), w * unlocal.extra_sq(q, k), atol=1e-13)


def test_association_bias_gradient_closed_form(device):
    torch.manual_seed(4)
    A, B = (
        torch.randn(3, 5, dtype=torch.float64, device=device),
        torch.randn(4, 5, dtype=torch.float64, device=device),
    )
    bias = AssociationBias(A, B)
    x = torch.randn(5, dtype=torch.float64, device=device)
    ref = (unit(A) @ unit(x)).mean() - (unit(B) @ unit(x)).mean()
    assert torch.allclose(bias(x), ref, atol=1e-14)
    metric = FairnessMetric(S, [bias], alpha=1.0)
    c = unit(A).mean(0) - unit(B).mean(0)
    n = x.norm()
    closed = c / n - (c @ x) * x / n**3
    assert torch.allclose(metric.euclidean_gradients(x)[0], closed, atol=1e-13)


def test_negative_alpha_must_keep_metric_positive_definite(device):
    a = unit(torch.randn(4, dtype=torch.float64, device=device)) * 2.0
    q = unit(torch.randn(3, 4, dtype=torch.float64, device=device))
    metric = FairnessMetric(S, [LinearBias(a)], alpha=-0.9)
    with pytest.raises(ValueError, match="indefinite"):
        metric.extra_sq(q, q)
    ok = FairnessMetric(S, [LinearBias(a / 4)], alpha=-0.9)
    assert torch.all(ok.sq_dist(q, q).diagonal() < 1e-20)


def test_gradcheck_fair_attention_on_sphere(device):
    torch.manual_seed(5)
    a = torch.randn(4, dtype=torch.float64, device=device)
    metric = FairnessMetric(S, [LinearBias(a)], alpha=1.5)
    q, k = (
        unit(torch.randn(3, 4, dtype=torch.float64, device=device)),
        unit(torch.randn(5, 4, dtype=torch.float64, device=device)),
    )

    def f(q, k):
        return geodesic_attention(
            S, unit(q), unit(k), unit(k), tau=0.5, metric=metric, chunk_size=2
        )[0]

    assert torch.autograd.gradcheck(f, (q.requires_grad_(), k.requires_grad_()), atol=1e-7)


def test_fair_metric_on_grassmann_module(device):
    torch.manual_seed(6)
    G = Grassmann()
    c = torch.randn(6, 6, dtype=torch.float64, device=device)
    c = c + c.T

    def bias(y):  # b(Y) = tr(Y^T C Y), a smooth function of the subspace
        return (y * (c @ y)).sum((-2, -1))

    metric = FairnessMetric(G, [bias], alpha=0.5)
    layer = GeodesicAttention(G, 6, 6, num_heads=2, metric=metric, aggregation="tangent")
    x = G.random(2, 4, 6, 2, dtype=torch.float64, device=device)
    out, _ = layer.to(device, torch.float64)(x)
    ok, reason = G.check_point_on_manifold(out, explain=True, atol=1e-8, rtol=1e-8)
    assert ok, reason
    # the fair squared distance adds alpha (db[Log_q k])^2, with db[U] = 2 tr(U^T C Y)
    y, z = x[0, :1], x[0, 1:]
    log = G.logmap(y.expand_as(z), z)
    extra = 0.5 * (2 * (log * (c @ y)).sum((-2, -1))).pow(2)
    assert torch.allclose(metric.extra_sq(y, z)[0], extra, atol=1e-10)
