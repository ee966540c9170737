"""Hyperbolic layers against their closed forms: the Euclidean limits as the curvature goes to 0,
the MLR's hyperplanes through gyrovector left cancellation, the Lorentz layer's isometries."""

import math

import geoopt
import pytest
import torch
from geoopt.manifolds.stereographic import math as stereographic

from manifoldnn.layers import HyperbolicMLR, LorentzLinear, PoincareLinear
from manifoldnn.manifolds.lorentz import lorentz_distance, minkowski_inner


def _ball(n, d, c, seed, dtype, device, radius=0.7):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    r = radius * torch.rand(n, 1, generator=generator, dtype=torch.float64) / math.sqrt(c)
    return (x / x.norm(dim=-1, keepdim=True) * r).to(device, dtype)


def test_poincare_linear_maps_into_the_ball(dtype, device):
    layer = PoincareLinear(4, 3, c=2.0, device=device, dtype=dtype)
    with torch.no_grad():
        layer.bias.normal_()
    y = layer(_ball(10, 4, 2.0, seed=0, dtype=dtype, device=device))
    assert y.shape == (10, 3) and y.dtype == dtype
    assert bool((y.norm(dim=-1) < 1 / math.sqrt(2.0)).all())
    assert layer(torch.zeros(4, device=device, dtype=dtype)).shape == (3,)


def test_poincare_linear_tends_to_a_euclidean_layer_as_the_curvature_vanishes(device):
    """As c -> 0: y = 2 (<z_k, x> - r_k |z_k|) (HNN++ eqs. 8-10 to first order), with relative
    corrections of order c (|x|^2 + r^2 + v^2)."""
    c = 1e-8
    layer = PoincareLinear(5, 4, c=c, device=device, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x.to(device)
    weight, bias = layer.weight.detach(), layer.bias.detach()
    expected = 2 * (x @ weight.T - bias * weight.norm(dim=-1))
    scale = float(expected.abs().max()) + float(x.abs().max()) + float(bias.abs().max())
    eps = torch.finfo(torch.float64).eps
    bound = (16 * c * (1 + scale**2) + 64 * eps / math.sqrt(c)) * scale
    torch.testing.assert_close(layer(x).detach(), expected, atol=bound, rtol=0)


def _mlr(c, dtype, device, seed=2):
    mlr = HyperbolicMLR(3, 4, c=c, device=device, dtype=dtype)
    with torch.no_grad():
        mlr.offset.copy_(_ball(4, 3, c, seed=seed, dtype=dtype, device=device, radius=0.5))
        mlr.normal.normal_()
    return mlr


def test_mlr_logits_along_the_normal_are_the_closed_form_distance(device):
    """-p + (p + s a/|a|) = s a/|a| (left cancellation), so the logit is
    lambda_p |a| (2 / sqrt c) artanh(sqrt c s), and zero on the hyperplane p + (a-orthogonal t)."""
    dtype, c = torch.float64, 1.5
    mlr = _mlr(c, dtype, device)
    k = torch.tensor(-c, dtype=dtype, device=device)
    p = mlr.offset.detach()
    a = ((1 - c * p.pow(2).sum(-1, keepdim=True)) * mlr.normal).detach()
    unit = a / a.norm(dim=-1, keepdim=True)
    s = 0.3 / math.sqrt(c)
    logits = mlr(stereographic.mobius_add(p, s * unit, k=k)).detach()  # row j: point for class j
    lam = 2 / (1 - c * p.pow(2).sum(-1))
    expected = lam * a.norm(dim=-1) * 2 / math.sqrt(c) * math.atanh(math.sqrt(c) * s)
    eps = torch.finfo(dtype).eps
    bound = 256 * eps * float(expected.abs().max())
    torch.testing.assert_close(logits.diagonal(), expected, atol=bound, rtol=0)
    # a point of the hyperplane of class j: p_j + t with t orthogonal to a_j
    t = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=dtype).to(device)
    t = (
        0.4
        / math.sqrt(c)
        * torch.nn.functional.normalize(t - (t * unit).sum(-1, keepdim=True) * unit, dim=-1)
    )
    on_plane = mlr(stereographic.mobius_add(p, t, k=k)).detach().diagonal()
    torch.testing.assert_close(on_plane, torch.zeros_like(on_plane), atol=bound, rtol=0)


def test_mlr_tends_to_logistic_regression_as_the_curvature_vanishes(device):
    """As c -> 0 the logits are 4 (<a'_k, x> - <a'_k, p_k>) (Ganea et al. 2018, Sec. 3.1)."""
    c = 1e-8
    mlr = HyperbolicMLR(3, 4, c=c, device=device, dtype=torch.float64)
    with torch.no_grad():
        mlr.offset.copy_(torch.randn(4, 3, dtype=torch.float64))
        mlr.normal.normal_()
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x = x.to(device)
    a, p = mlr.normal.detach(), mlr.offset.detach()
    expected = 4 * (x @ a.T - (a * p).sum(-1))
    scale = float(expected.abs().max()) + float(x.abs().max()) + float(p.abs().max())
    eps = torch.finfo(torch.float64).eps
    bound = (16 * c * (1 + scale**2) + 64 * eps / math.sqrt(c)) * scale
    torch.testing.assert_close(mlr(x).detach(), expected, atol=bound, rtol=0)


def test_mlr_trains_with_riemannian_adam(device, train_classifier):
    """Two classes on either side of a geodesic through the origin: a few steps separate them."""
    generator = torch.Generator().manual_seed(5)
    x = geoopt.PoincareBall().expmap0(0.5 * torch.randn(64, 2, generator=generator)).to(device)
    labels = (x[:, 0] > 0).long()
    mlr = HyperbolicMLR(2, 2, device=device)
    train_classifier(mlr, x, labels, steps=60, lr=0.05)
    assert float((mlr(x).argmax(-1) == labels).float().mean()) >= 0.95
    assert geoopt.PoincareBall().check_point_on_manifold(mlr.offset.detach().cpu())


def test_lorentz_linear_is_on_the_hyperboloid_and_a_rotation_is_an_isometry(dtype, device):
    generator = torch.Generator().manual_seed(6)
    space = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    x = torch.cat([(1 + space.pow(2).sum(-1, keepdim=True)).sqrt(), space], -1).to(device, dtype)
    layer = LorentzLinear(4, 6, device=device, dtype=dtype)
    y = layer(x).detach()
    eps = torch.finfo(dtype).eps
    square = minkowski_inner(y, y)
    bound = 8 * eps * float(y[..., 0].max()) ** 2
    torch.testing.assert_close(square, torch.full_like(square, -1.0), atol=bound, rtol=0)
    rotation = LorentzLinear(4, 4, bias=False, device=device, dtype=dtype)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    with torch.no_grad():
        rotation.linear.weight.copy_(torch.cat([torch.zeros(3, 1, dtype=torch.float64), q], 1))
    z = rotation(x).detach()
    before = lorentz_distance(x.unsqueeze(1), x.unsqueeze(0))
    after = lorentz_distance(z.unsqueeze(1), z.unsqueeze(0))
    bound = 64 * eps * float(x.abs().max()) ** 2
    torch.testing.assert_close(after, before, atol=bound, rtol=0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PoincareLinear(0, 2), "in_size"),
        (lambda: HyperbolicMLR(2, 2, c=0.0), "c"),
        (lambda: LorentzLinear(3, 1), "out_size"),
    ],
)
def test_bad_sizes_name_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_wrong_input_width_is_reported():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        PoincareLinear(4, 2)(torch.zeros(3, 5))
