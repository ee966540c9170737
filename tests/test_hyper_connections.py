"""Hyper-connections: the residual mixings hold their manifold, compose without amplifying, keep a
gradient at the published start, reduce to the pre-norm residual, compile, and reject bad input;
DeepNorm's published scales; the residual schemes of GPT and BDH."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch
from torch import nn

from manifoldnn.layers import (
    RESIDUAL_CONSTRAINTS,
    BirkhoffMixing,
    HyperConnections,
    OrthogonalMixing,
    SinkhornMixing,
    composite_gain,
    deepnorm_scales,
    sinkhorn_knopp,
)
from manifoldnn.models import BDH, GPT, BDHConfig, GPTConfig

EPS64 = torch.finfo(torch.float64).eps
CONSTRAINTS = list(RESIDUAL_CONSTRAINTS)


def _mlp(dim: int, device, dtype=torch.float64) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)).to(
        device=device, dtype=dtype
    )


def _contraction_iterations(logits: torch.Tensor) -> int:
    """Sinkhorn pairs after which Birkhoff's contraction, tanh(Delta / 4)^2 per pair, is below eps;
    Delta = max (L_ij + L_kl - L_il - L_kj) <= 2 (max L - min L)."""
    spread = float((logits.amax(dim=(-2, -1)) - logits.amin(dim=(-2, -1))).max())
    kappa = math.tanh(2.0 * spread / 4.0)
    return math.ceil(math.log(EPS64) / (2.0 * math.log(kappa))) + 2


@pytest.mark.parametrize("log_domain", [True, False], ids=["log", "exp"])
def test_sinkhorn_is_doubly_stochastic(log_domain, device):
    torch.manual_seed(0)
    n = 4
    logits = torch.randn(6, n, n, dtype=torch.float64, device=device)
    iters = _contraction_iterations(logits)
    p = sinkhorn_knopp(logits, iters, log_domain=log_domain)
    assert (p >= 0).all()
    # the rows were normalised last (a sum of n terms: n eps); the columns converge to within
    # the contraction's eps, plus the same rounding
    ones = torch.ones(6, n, dtype=torch.float64, device=device)
    torch.testing.assert_close(p.sum(-1), ones, atol=4 * n * EPS64, rtol=0)
    torch.testing.assert_close(p.sum(-2), ones, atol=8 * n * EPS64, rtol=0)


def test_sinkhorn_mixing_at_the_published_start_is_doubly_stochastic(device):
    # logits I: Delta = 2, contraction tanh(1/2)^2 ~ 0.21 per pair, 0.21^20 ~ 1e-14 after the
    # default 20 pairs; in float32, the rounding of n-term sums
    mixing = SinkhornMixing(4, device=device)
    h = mixing()
    eps = torch.finfo(h.dtype).eps
    tol = 4 * 4 * eps + math.tanh(0.5) ** 40
    assert (h >= 0).all()
    assert (h.sum(-1) - 1).abs().max() <= tol and (h.sum(-2) - 1).abs().max() <= tol


def _random_birkhoff(n: int, generator: torch.Generator, device) -> torch.Tensor:
    mixing = BirkhoffMixing(n, device=device, dtype=torch.float64)
    positive = torch.rand(n, n, generator=generator, dtype=torch.float64).to(device) + 0.05
    return mixing.matrix.manifold.projx(positive)


def test_composite_of_48_birkhoff_matrices_does_not_amplify(device):
    generator = torch.Generator().manual_seed(1)
    n, depth = 4, 48
    matrices = torch.stack([_random_birkhoff(n, generator, device) for _ in range(depth)])
    ones = torch.ones(depth, n, dtype=torch.float64, device=device)
    torch.testing.assert_close(matrices.sum(-1), ones, atol=4 * n * EPS64, rtol=0)
    # each product adds an n-term rounding to the sums: gain <= 1 + depth * 4 n eps
    gain = composite_gain(matrices)
    assert gain <= 1.0 + depth * 4 * n * EPS64


def test_composite_of_48_orthogonal_matrices_has_operator_norm_one(device):
    torch.manual_seed(2)
    n, depth = 4, 48
    matrices = []
    for _ in range(depth):
        mixing = OrthogonalMixing(n, device=device, dtype=torch.float64)
        with torch.no_grad():
            mixing.frame.skew_weight.normal_(std=1.0)
        matrices.append(mixing().detach())
    product = matrices[0]
    for matrix in matrices[1:]:
        product = matrix @ product
    singular = torch.linalg.svdvals(product)
    # each factor is orthogonal to a few n eps; the errors add up over the product
    assert (singular - 1).abs().max() <= depth * 8 * n * EPS64


def test_birkhoff_parameter_stays_on_the_polytope_under_riemannian_adam(device):
    torch.manual_seed(3)
    dim, n = 8, 4
    layer = HyperConnections(
        dim, n, _mlp(dim, device), constraint="birkhoff", device=device, dtype=torch.float64
    )
    start = layer.residual_matrix().detach().clone()
    optimizer = geoopt.optim.RiemannianAdam(layer.parameters(), lr=0.05)
    x = torch.randn(16, n, dim, dtype=torch.float64, device=device)
    target = torch.randn(16, n, dim, dtype=torch.float64, device=device)
    for _ in range(20):
        loss = (layer(x) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    h = layer.residual_matrix().detach()
    assert (h - start).abs().max() > 1e-3  # it did move
    assert (h >= 0).all()
    ones = torch.ones(n, dtype=torch.float64, device=device)
    # the projection ends with an exact affine correction: sums of n terms, rounded
    torch.testing.assert_close(h.sum(-1), ones, atol=4 * n * EPS64, rtol=0)
    torch.testing.assert_close(h.sum(-2), ones, atol=4 * n * EPS64, rtol=0)


def _residual_logit_gradient(scale: float, max_logit_range, device) -> torch.Tensor:
    torch.manual_seed(4)
    dim, n = 8, 4
    layer = HyperConnections(
        dim,
        n,
        _mlp(dim, device),
        constraint="sinkhorn",
        max_logit_range=max_logit_range,
        device=device,
        dtype=torch.float64,
    )
    with torch.no_grad():
        layer.mixing.logits.mul_(scale)
    x = torch.randn(5, n, dim, dtype=torch.float64, device=device)
    weights = torch.randn(5, n, dim, dtype=torch.float64, device=device)
    (layer(x) * weights).sum().backward()
    return layer.mixing.logits.grad


def test_gradient_reaches_the_residual_logits_at_the_published_start(device):
    grad = _residual_logit_gradient(1.0, 4.0, device)  # H~res = I, as published
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_the_range_guard_keeps_a_gradient_where_sinkhorn_collapses(device):
    # logits 160 I (the range reported against public implementations): SK is the identity to
    # e^-160 and its Jacobian vanishes with it; the guard brings the range to 4, whose limit has
    # entries >= e^-8 / n
    collapsed = _residual_logit_gradient(160.0, None, device)
    guarded = _residual_logit_gradient(160.0, 4.0, device)
    assert collapsed.abs().max() <= 1e3 * math.exp(-160.0)
    assert guarded.abs().max() >= 1e-6  # many orders of magnitude above, and non-zero


def test_one_stream_with_fixed_weights_is_the_prenorm_residual(device):
    torch.manual_seed(5)
    dim = 8
    branch = _mlp(dim, device)
    layer = HyperConnections(dim, 1, branch, constraint=None, dynamic=False, device=device)
    layer = layer.double()
    x = torch.randn(3, 7, dim, dtype=torch.float64, device=device)
    streams = HyperConnections.expand_streams(x, 1)
    out = HyperConnections.reduce_streams(layer(streams))
    # products with the exact coefficients 1: bit-identical
    assert torch.equal(out, x + branch(x))


def test_gpt_with_one_fixed_stream_equals_the_prenorm_gpt(device):
    torch.manual_seed(6)
    sizes = {"num_layers": 3, "dim": 16, "num_heads": 2}
    prenorm = GPT(GPTConfig(**sizes), device=device, dtype=torch.float64)
    hyper = GPT(
        GPTConfig(**sizes, residual="hyper", num_streams=1, hc_constraint=None, hc_dynamic=False),
        device=device,
        dtype=torch.float64,
    )
    missing = hyper.load_state_dict(prenorm.state_dict(), strict=False).missing_keys
    assert missing and all(".hyper_" in key for key in missing)
    idx = torch.randint(0, 256, (2, 12), device=device)
    torch.testing.assert_close(hyper(idx), prenorm(idx), atol=0, rtol=0)


def test_gpt_default_is_prenorm():
    assert GPTConfig().residual == "prenorm"
    assert BDHConfig().residual == "postnorm"


@pytest.mark.parametrize("num_layers", [1, 6, 12, 18, 100, 1000])
def test_deepnorm_scales_as_published(num_layers):
    alpha, beta = deepnorm_scales(num_layers)
    # DeepNet Table 1, decoder-only: alpha = (2M)^(1/4), beta = (8M)^(-1/4)
    assert alpha == pytest.approx((2 * num_layers) ** 0.25, rel=4 * EPS64)
    assert beta == pytest.approx((8 * num_layers) ** -0.25, rel=4 * EPS64)
    assert alpha**4 == pytest.approx(2 * num_layers, rel=16 * EPS64)


def test_gpt_deepnorm_scales_the_initial_value_ffn_and_output_weights():
    torch.manual_seed(7)
    config = GPTConfig(num_layers=8, dim=64, num_heads=4, residual="deepnorm")
    model = GPT(config)
    _, beta = deepnorm_scales(8)
    fc = torch.cat([p.flatten() for n, p in model.named_parameters() if n.endswith("fc.weight")])
    xavier = math.sqrt(2.0 / (64 + 4 * 64))
    # 8 x 16384 Gaussian draws: the sample std is within a few percent of beta * xavier
    assert fc.std().item() == pytest.approx(beta * xavier, rel=0.05)


@pytest.mark.parametrize("residual", ["postnorm", "deepnorm", "hyper"])
def test_gpt_residual_schemes_train_and_generate(residual):
    torch.manual_seed(8)
    model = GPT(GPTConfig(num_layers=2, dim=16, num_heads=2, residual=residual))
    idx = torch.randint(0, 256, (2, 10))
    logits = model(idx)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    last, _ = model.prefill(idx, 2)
    torch.testing.assert_close(last, logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "attention", [{"attention": "latent"}, {"num_kv_heads": 1}, {"attention": "delta"}], ids=str
)
@pytest.mark.parametrize("residual", ["deepnorm", "hyper"])
def test_gpt_residual_schemes_with_every_attention(residual, attention):
    torch.manual_seed(8)
    model = GPT(GPTConfig(num_layers=2, dim=16, num_heads=2, residual=residual, **attention))
    idx = torch.randint(0, 256, (2, 10))
    logits = model(idx)
    last, _ = model.prefill(idx, 2)
    torch.testing.assert_close(last, logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("residual", ["prenorm", "deepnorm", "hyper"])
def test_bdh_residual_schemes_agree_across_modes(residual):
    torch.manual_seed(9)
    config = BDHConfig(
        num_layers=2, dim=16, num_heads=2, num_neurons=16, dropout=0.0, residual=residual
    )
    model = BDH(config).eval()
    idx = torch.randint(0, 256, (1, 9))
    torch.testing.assert_close(
        model(idx, mode="parallel"), model(idx, mode="recurrent"), atol=1e-5, rtol=1e-5
    )


def _graph_breaks(fn, *args) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).graph_break_count


@pytest.mark.parametrize("constraint", CONSTRAINTS, ids=str)
def test_every_variant_compiles_without_graph_breaks(constraint):
    torch.manual_seed(10)
    dim, n = 8, 4
    layer = HyperConnections(dim, n, _mlp(dim, "cpu", torch.float32), constraint=constraint)
    x = torch.randn(2, 5, n, dim)
    assert _graph_breaks(layer, x) == 0
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("residual", ["postnorm", "deepnorm", "hyper"])
def test_gpt_residual_schemes_compile_without_graph_breaks(residual):
    model = GPT(GPTConfig(num_layers=2, dim=16, num_heads=2, residual=residual), validate=False)
    idx = torch.randint(0, 256, (2, 10))
    assert _graph_breaks(model, idx) == 0


def test_bad_input_names_the_argument():
    branch = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="dim"):
        HyperConnections(0, 4, branch)
    with pytest.raises(ValueError, match="num_streams"):
        HyperConnections(8, 0, branch)
    with pytest.raises(ValueError, match="constraint"):
        HyperConnections(8, 4, branch, constraint="stiefel")
    with pytest.raises(ValueError, match="branch"):
        HyperConnections(8, 4, nn.Linear(8, 6))(torch.randn(3, 4, 8))
    with pytest.raises(ValueError, match="streams"):
        HyperConnections(8, 4, branch)(torch.randn(3, 8))


@pytest.mark.parametrize("config", [GPTConfig, BDHConfig])
@pytest.mark.parametrize(
    "options, name",
    [
        (dict(residual="sandwich"), "residual"),
        (dict(residual="hyper", hc_constraint="simplex"), "hc_constraint"),
        (dict(residual="hyper", num_streams=0), "num_streams"),
        (dict(residual="hyper", hc_dynamic=1), "hc_dynamic"),
    ],
)
def test_residual_options_name_the_field(config, options, name):
    with pytest.raises(ValueError, match=name):
        config(**options)
