"""Geodesic attention on every SPD metric: SPD attention in the spirit of GyroAtt (Riemannian
attention whose values are aggregated by a weighted Fréchet mean on the chosen metric)."""

import pytest
import torch

from manifoldnn.layers import GeodesicAttention, geodesic_attention
from manifoldnn.linalg import tolerance
from manifoldnn.manifolds import SPD_METRICS, geometry_for, karcher_mean, spd_manifold

ROUNDING = 64


def _tokens(batch, length, n, seed, dtype=torch.float64, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, length, n, 3 * n, generator=generator, dtype=torch.float64)
    x = a @ a.transpose(-1, -2) / (3 * n) + 0.1 * torch.eye(n, dtype=torch.float64)
    return x.to(dtype=dtype, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_geodesic_attention_runs_on_every_spd_metric(metric, dtype, device):
    torch.manual_seed(0)
    attention = GeodesicAttention(
        spd_manifold(metric), 5, head_size=3, num_heads=2, device=device, dtype=dtype
    )
    x = _tokens(2, 4, 5, seed=1, dtype=dtype, device=device).requires_grad_()
    out, _ = attention(x)
    assert out.shape == (2, 4, 2, 3, 3) and out.dtype == dtype
    assert bool((torch.linalg.eigvalsh(out.detach().double()) > 0).all())
    out.diagonal(dim1=-2, dim2=-1).sum().backward()
    assert bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("metric", list(SPD_METRICS))
def test_karcher_aggregation_is_the_weighted_frechet_mean_of_the_values(metric, device):
    manifold = spd_manifold(metric)
    x = _tokens(1, 5, 3, seed=2, device=device)
    out, weights = geodesic_attention(
        manifold, x[:, :2], x, x, tau=2.0, aggregation="karcher", need_weights=True
    )
    expected = karcher_mean(manifold, x.unsqueeze(1).expand(1, 2, 5, 3, 3), weights)
    bound = tolerance("karcher_tol", torch.float64) + ROUNDING * 9 * torch.finfo(torch.float64).eps
    distance = geometry_for(manifold).dist(out, expected)
    assert bool((distance <= bound).all()), distance


@pytest.mark.parametrize("metric", ["log_euclidean", "log_cholesky"])
def test_flat_metrics_extrinsic_aggregation_is_the_frechet_mean(metric, device):
    manifold = spd_manifold(metric)
    x = _tokens(1, 5, 3, seed=3, device=device)
    extrinsic, _ = geodesic_attention(manifold, x[:, :2], x, x, tau=2.0)
    karcher, _ = geodesic_attention(manifold, x[:, :2], x, x, tau=2.0, aggregation="karcher")
    bound = tolerance("karcher_tol", torch.float64) + ROUNDING * 9 * torch.finfo(torch.float64).eps
    assert bool((geometry_for(manifold).dist(extrinsic, karcher) <= bound).all())
