"""FAVOR++ (optimal positive random features, Likhosherstov et al. 2022) beside FAVOR+: the
estimator's mean and variance against their formulas, the optimal parameter, the causal state."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldnn.layers import (
    FavorAttention,
    favor_attention,
    favor_kernel_sums,
    mean_squared_pair_norm,
    optimal_feature_parameter,
    orthogonal_random_features,
    positive_random_features,
)
from manifoldnn.manifolds import Sphere


def relative_second_moment(a: float, dim: int, pair_square: torch.Tensor) -> torch.Tensor:
    """E[f_A(w, x)^2 f_A(w, y)^2] / exp(x.y)^2 for one feature with w ~ N(0, I) (A < 1/8)."""
    prefactor = ((1 - 4 * a) ** 2 / (1 - 8 * a)) ** (dim / 2)
    return prefactor * torch.exp(pair_square / (1 - 8 * a))


def assert_unbiased_within_variance(x, y, w, a, pair_square):
    """The mean over the ``draws x m`` features of ``w (draws, m, dim)`` of the one-feature
    products f_A(w, x) f_A(w, y) is within 5 standard deviations sqrt(Var / n) of exp(x . y)."""
    draws, m, dim = w.shape
    phi_x = positive_random_features(x, w, feature_parameter=a)
    phi_y = positive_random_features(y, w, feature_parameter=a)
    estimate = (phi_x @ phi_y.transpose(-1, -2)).mean(0)
    exact = torch.exp(x @ y.T)
    variance = exact.pow(2) * (relative_second_moment(a, dim, pair_square) - 1)
    assert ((estimate - exact).abs() <= 5 * (variance / (draws * m)).sqrt()).all()


@pytest.mark.parametrize("which", ["favor+", "favor++", "a=-0.3"])
def test_features_are_unbiased_within_their_stated_variance(which, device):
    # planted pairs; i.i.d. Gaussian rows (the variance formula's assumption); the mean over
    # n = draws x m features of the one-feature products is within 5 standard deviations
    # sqrt(Var / n) of exp(x . y), Var = exp(x.y)^2 (R - 1) with R the relative second moment
    gen = torch.Generator().manual_seed(0)
    dim, draws, m = 4, 4000, 16
    x = (0.6 * torch.randn(3, dim, generator=gen, dtype=torch.float64)).to(device)
    y = (0.6 * torch.randn(5, dim, generator=gen, dtype=torch.float64)).to(device)
    pair_square = (x[:, None, :] + y[None, :, :]).pow(2).sum(-1)
    a = {
        "favor+": 0.0,
        "favor++": optimal_feature_parameter(pair_square.mean().item(), dim),
        "a=-0.3": -0.3,
    }[which]
    w = torch.randn(draws, m, dim, generator=gen, dtype=torch.float64).to(device)
    assert_unbiased_within_variance(x, y, w, a, pair_square)


def test_orthogonal_features_are_unbiased_too():
    # rows of orthogonal_random_features are marginally N(0, I), so the mean is unchanged; the
    # yardstick is the i.i.d. variance, an upper bound for coupled positive features at A = 0
    # (Choromanski et al. 2021, Theorem 2), taken here for A != 0 as well (A weights each row by
    # a function of its norm only, and the norms are drawn independently)
    gen = torch.Generator().manual_seed(1)
    dim, draws, m = 4, 4000, 8
    x = 0.6 * torch.randn(3, dim, generator=gen, dtype=torch.float64)
    y = 0.6 * torch.randn(5, dim, generator=gen, dtype=torch.float64)
    pair_square = (x[:, None, :] + y[None, :, :]).pow(2).sum(-1)
    a = optimal_feature_parameter(pair_square.mean().item(), dim)
    w = orthogonal_random_features(m, dim, batch_shape=(draws,), generator=gen, dtype=torch.float64)
    assert_unbiased_within_variance(x, y, w, a, pair_square)


@pytest.mark.parametrize("rho", [0.0, 0.5, 10.0, 200.0])
@pytest.mark.parametrize("dim", [4, 64])
def test_optimal_parameter_minimises_the_log_second_moment(rho, dim):
    def objective(a):
        return dim / 2 * math.log((1 - 4 * a) ** 2 / (1 - 8 * a)) + rho / (1 - 8 * a)

    a = optimal_feature_parameter(rho, dim)
    assert a <= 0.0 and (a == 0.0) == (rho == 0.0)
    step = 1e-4 * (1 - 8 * a)
    assert objective(a) <= min(objective(a - step), objective(a + step))
    # below FAVOR+ (A = 0) on every pair set with rho > 0
    assert objective(a) <= objective(0.0)
    tensor = optimal_feature_parameter(torch.tensor([rho], dtype=torch.float64), dim)
    torch.testing.assert_close(tensor, torch.tensor([a], dtype=torch.float64))


def test_mean_squared_pair_norm_is_the_mean_over_pairs(device):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64).to(device)
    y = torch.randn(2, 9, 5, generator=gen, dtype=torch.float64).to(device)
    brute = (x[:, :, None, :] + y[:, None, :, :]).pow(2).sum(-1).mean((-2, -1))
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(mean_squared_pair_norm(x, y), brute, rtol=64 * eps, atol=0)


@pytest.mark.parametrize("a", [0.0, -0.2])
def test_causal_state_continues_the_sequence(a, device):
    # one token a call (the recurrent form) equals the whole sequence at once, in float64
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 2, 11, 4, generator=gen, dtype=torch.float64).to(device)
    v = torch.randn(2, 11, 3, generator=gen, dtype=torch.float64).to(device)
    w = torch.randn(6, 4, generator=gen, dtype=torch.float64).to(device)
    whole = favor_kernel_sums(x, y, v, w, causal=True, chunk_size=4, feature_parameter=a)
    state, numerators, denominators, scales = None, [], [], []
    for t in range(11):
        num, den, scale, state = favor_kernel_sums(
            x[:, t : t + 1], y[:, t : t + 1], v[:, t : t + 1], w, causal=True,
            feature_parameter=a, state=state, return_state=True,
        )  # fmt: skip
        numerators.append(num), denominators.append(den), scales.append(scale)
    eps = torch.finfo(torch.float64).eps
    # the shifts differ between the two forms; the estimates and their ratio do not
    ratio = whole[0] / whole[1].unsqueeze(-1)
    stepped = torch.cat(numerators, -2) / torch.cat(denominators, -1).unsqueeze(-1)
    torch.testing.assert_close(stepped, ratio, rtol=64 * eps, atol=64 * eps)
    torch.testing.assert_close(
        torch.cat(denominators, -1) * torch.cat(scales, -1).exp(),
        whole[1] * whole[2].exp(),
        rtol=64 * eps,
        atol=0,
    )


def test_state_needs_causal():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="causal"):
        favor_kernel_sums(x, x, x, torch.randn(4, 3), return_state=True)


def test_favor_plus_plus_attention_on_the_sphere():
    gen = torch.Generator().manual_seed(4)
    x = torch.nn.functional.normalize(torch.randn(1, 30, 8, generator=gen), dim=-1)
    w = orthogonal_random_features(64, 8, generator=gen)
    out, _ = favor_attention(
        Sphere(), x, x, x, tau=1.0, distance="chordal", features=w, estimator="favor++"
    )
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="rho"):
        favor_attention(Sphere(), x, x, x, tau=1.0, distance="chordal", estimator="favor++",
                        is_causal=True)  # fmt: skip
    causal, _ = favor_attention(Sphere(), x, x, x, tau=1.0, distance="chordal", features=w,
                                estimator="favor++", is_causal=True, rho=2.0)  # fmt: skip
    assert torch.isfinite(causal).all()
    with pytest.raises(ValueError, match="estimator"):
        favor_attention(Sphere(), x, x, x, tau=1.0, distance="chordal", estimator="favor#")


def test_favor_attention_layer_with_favor_plus_plus():
    torch.manual_seed(5)
    sphere = Sphere()
    layer = FavorAttention(sphere, 6, 4, num_heads=2, num_features=16, distance="chordal",
                           estimator="favor++", tau=2.0, dtype=torch.float64)  # fmt: skip
    x = torch.nn.functional.normalize(torch.randn(3, 10, 6, dtype=torch.float64), dim=-1)
    # causal in training mode: the running rho moves, starting from 0
    layer.train()
    layer(x, is_causal=True)
    assert (layer.rho > 0).all()
    # causal in eval mode: nothing leaks from later tokens through A
    layer.eval()
    changed = x.clone()
    changed[:, 7] = torch.nn.functional.normalize(torch.randn(3, 6, dtype=torch.float64), dim=-1)
    before, after = layer(x, is_causal=True)[0], layer(changed, is_causal=True)[0]
    assert torch.equal(before[:, :7], after[:, :7])
    # non-causal: A from the call's own queries and keys
    out, _ = layer(x)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="estimator"):
        FavorAttention(sphere, 6, estimator="favor#")
