"""torch.compile: the public layers and losses trace without graph breaks and match eager mode.

``torch._dynamo.explain`` counts graph breaks (a host read of a tensor value, a data-dependent
shape or an unsupported call each cause one); the compiled function runs with the ``aot_eager``
backend (traced forward and backward graphs, no code generation), which checks the traced
program rather than a compiler's kernels.
"""

from __future__ import annotations

import geoopt
import pytest
import torch

from manifoldnn.fairness import FairnessMetric, LinearBias
from manifoldnn.layers import FavorAttention, GeodesicAttention, OrthogonalDirectSum
from manifoldnn.linalg import qr_positive
from manifoldnn.losses import InfoNCELoss, ProjectionMetricContrastiveLoss
from manifoldnn.manifolds import Grassmann, Sphere
from manifoldnn.models import GrNet

torch._dynamo.config.cache_size_limit = 64


def graph_breaks(fn, *args) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).graph_break_count


def assert_compiles_like_eager(fn, *args, atol=1e-5):
    assert graph_breaks(fn, *args) == 0
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    expected, got = fn(*args), compiled(*args)
    for e, g in zip(torch.atleast_1d(expected), torch.atleast_1d(got)):
        torch.testing.assert_close(g, e, atol=atol, rtol=atol)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def spd(*shape, n=3, device=None):
    a = torch.randn(*shape, n, n, device=device)
    return a @ a.transpose(-1, -2) + n * torch.eye(n, device=device)


def test_grnet_projection_pooling(device):
    torch.manual_seed(0)
    model = GrNet(12, 3, 4, out_sizes=(8, 6), channels=4, pool_size=2).eval().to(device)
    x = torch.randn(5, 12, 20, device=device)
    assert_compiles_like_eager(model, x)


def sphere_tokens(device):
    return unit(torch.randn(2, 7, 6, device=device))


def grassmann_tokens(device):
    return qr_positive(torch.randn(2, 7, 6, 2, device=device))


def spd_tokens(device):
    return spd(2, 7, device=device)


SPD = geoopt.SymmetricPositiveDefinite()
CASES = {
    # name: (manifold, distance, aggregation, tokens) -- the SDPA path, then the chunked path
    "euclidean-sdpa": (
        geoopt.Euclidean(ndim=1),
        None,
        "extrinsic",
        lambda device: torch.randn(2, 7, 6, device=device),
    ),
    "sphere-sdpa": (Sphere(), "chordal", "extrinsic", sphere_tokens),
    "grassmann-sdpa": (Grassmann(), "projection", "extrinsic", grassmann_tokens),
    "spd-sdpa": (SPD, "log_euclidean", "extrinsic", spd_tokens),
    "sphere-chunked": (Sphere(), "geodesic", "tangent", sphere_tokens),
    "grassmann-chunked": (Grassmann(), "projection", "tangent", grassmann_tokens),
    "spd-chunked": (SPD, "affine", "tangent", spd_tokens),
    "ball-chunked": (
        geoopt.PoincareBall(),
        None,
        "extrinsic",
        lambda device: 0.3 * sphere_tokens(device),
    ),
}


def attention_layer(case: str, device: torch.device):
    manifold, distance, aggregation, make = CASES[case]
    x = make(device)
    in_size = x.shape[2]
    layer = GeodesicAttention(
        manifold,
        in_size,
        in_size - 1 if in_size > 4 else in_size,
        num_heads=2,
        distance=distance,
        aggregation=aggregation,
        chunk_size=3,  # several key chunks on the chunked path
        device=device,
    )
    return layer, x


def slow_cases(cases, slow=("grassmann-chunked",)):
    """The cases, those in ``slow`` (tracing the Grassmann logarithm) marked slow."""
    return [pytest.param(c, marks=pytest.mark.slow) if c in slow else c for c in cases]


@pytest.mark.parametrize("case", slow_cases(sorted(CASES)))
def test_geodesic_attention(case, device):
    torch.manual_seed(1)
    layer, x = attention_layer(case, device)
    assert_compiles_like_eager(lambda y: layer(y)[0], x)


MASKS = {
    "is_causal": lambda length, device: {"is_causal": True},
    "bool_attn_mask": lambda length, device: {
        "attn_mask": torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    },
    "float_attn_mask": lambda length, device: {
        "attn_mask": -0.5 * torch.ones(length, length, device=device).triu(1)
    },
    "need_weights": lambda length, device: {"need_weights": True, "is_causal": True},
}


@pytest.mark.parametrize("masks", sorted(MASKS))
@pytest.mark.parametrize("case", slow_cases(["euclidean-sdpa", "grassmann-chunked"]))
def test_geodesic_attention_masks(case, masks, device):
    torch.manual_seed(1)
    layer, x = attention_layer(case, device)
    options = MASKS[masks](x.shape[1], device)
    assert_compiles_like_eager(lambda y: tuple(t for t in layer(y, **options) if t is not None), x)


@pytest.mark.parametrize("masks", sorted(MASKS))
def test_favor_attention_masks(masks, device):
    torch.manual_seed(1)
    layer = FavorAttention(Grassmann(), 6, 5, num_heads=2, num_features=16, out_size=4)
    layer = layer.eval().to(device)
    x = qr_positive(torch.randn(2, 7, 6, 2, device=device))
    options = MASKS[masks](7, device)
    assert_compiles_like_eager(lambda y: tuple(t for t in layer(y, **options) if t is not None), x)


def test_fairness_metric_on_the_sphere(device):
    torch.manual_seed(2)
    direction = unit(torch.randn(6, device=device))
    metric = FairnessMetric(Sphere(), [LinearBias(direction)], alpha=2.0)
    q, k = unit(torch.randn(5, 6, device=device)), unit(torch.randn(4, 6, device=device))
    assert_compiles_like_eager(metric.sq_dist, q, k)


def test_projection_metric_contrastive_loss(device):
    torch.manual_seed(3)
    views = qr_positive(torch.randn(3, 16, 8, 2, device=device))
    assert_compiles_like_eager(ProjectionMetricContrastiveLoss(temperature=0.5), views)


def test_info_nce_loss(device):
    torch.manual_seed(4)
    z_a, z_b = torch.randn(10, 5, device=device), torch.randn(10, 5, device=device)
    loss = InfoNCELoss(0.2, learnable_temperature=True).to(device)
    assert_compiles_like_eager(loss, z_a, z_b)


def test_orthogonal_direct_sum_vector_and_token_paths(device):
    torch.manual_seed(5)
    vector = OrthogonalDirectSum(4, 2, 3, 10, device=device)
    a, b = torch.randn(6, 4, device=device), torch.randn(6, 2, 3, device=device)
    assert_compiles_like_eager(vector, a, b)
    tokens = OrthogonalDirectSum(4, 2, 3, 10, num_tokens=3, device=device)
    ids = torch.randint(0, 3, (6, 2), device=device)
    assert_compiles_like_eager(tokens, a, ids)


def test_grnet_karcher_pooling_breaks_only_at_the_karcher_mean(device):
    """karcher_mean (iterative, per-set stopping) runs as one opaque call: every graph break is at
    that call, and the compiled model still equals eager."""
    torch.manual_seed(6)
    model = GrNet(12, 3, 4, out_sizes=(8, 6), channels=4, pool_size=2, pooling="karcher")
    model = model.eval().to(device)
    x = torch.randn(5, 12, 20, device=device)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.break_reasons
    for reason in explanation.break_reasons:
        assert "disable" in str(reason.reason)
        assert any(
            frame.name == "forward" and "grassmann" in frame.filename for frame in reason.user_stack
        )
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(model, backend="aot_eager")(x), model(x))
