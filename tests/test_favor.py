"""Tests of FAVOR+ geodesic attention (manifoldnn.layers.favor) against independent references:
exact kernel sums from ``exp(x @ y.T)``, exact attention (``geodesic_attention``), the unstabilised
features of Performer's Lemma 1, and the attention on unpadded or truncated sequences."""

import math

import pytest
import torch

from manifoldnn.layers import (
    FavorAttention,
    GeodesicAttention,
    favor_attention,
    favor_kernel_sums,
    geodesic_attention,
    orthogonal_random_features,
    positive_random_features,
)
from manifoldnn.manifolds import (
    Euclidean,
    Grassmann,
    Sphere,
    SymmetricPositiveDefinite,
    geometry_for,
)

E, S, G, P = Euclidean(ndim=1), Sphere(), Grassmann(), SymmetricPositiveDefinite()
DTYPES = [torch.float32, torch.float64]
# (manifold, distance, tau): tau large enough that the kernel's features have norms of order one
CASES = {
    "euclidean": (E, "euclidean", 8.0),
    "sphere": (S, "chordal", 4.0),
    "grassmann": (G, "projection", 4.0),
    "spd": (P, "log_euclidean", 16.0),
}


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def tokens(manifold, batch, length, dtype=torch.float64, generator=None, device="cpu"):
    """Points drawn on the CPU (the same on every device), then moved to ``device``."""
    if manifold is G:
        a = torch.randn(*batch, length, 5, 2, dtype=dtype, generator=generator)
        return torch.linalg.qr(a).Q.to(device)
    if manifold is P:
        a = 0.3 * torch.randn(*batch, length, 3, 3, dtype=dtype, generator=generator)
        return torch.linalg.matrix_exp(a + a.transpose(-1, -2)).to(device)
    x = torch.randn(*batch, length, 4, dtype=dtype, generator=generator)
    return (unit(x) if manifold is S else 0.5 * x).to(device)


def draws(count, m, dim, dtype, seed=0, device="cpu"):
    """Drawn by a CPU generator (the same on every device), returned on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    return orthogonal_random_features(
        m, dim, batch_shape=(count,), generator=gen, device=device, dtype=dtype
    )


def comparable(manifold, x):
    """Grassmann bases are compared as projectors (a basis is defined up to rotation)."""
    return x @ x.transpose(-1, -2) if manifold is G else x


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def rounding_bound(dtype, *sizes):
    """First-order bound of the relative rounding error of sums and products of the given lengths
    with positive terms (each contributes at most ``n eps``), with a factor 8 for the exponentials
    and the final division. An exponent ``w . x`` of length F contributes ``F |w| |x|``, passed as
    ``F * 10`` where ``|w| |x|`` stays below 10."""
    return 8 * sum(sizes) * torch.finfo(dtype).eps


# ------------------------------------------------------------------ random features
@pytest.mark.parametrize("dtype", DTYPES)
def test_orthogonal_random_features_blocks_are_orthogonal(dtype, device):
    w = draws(3, 10, 4, dtype, device=device)  # blocks of 4, 4 and 2 rows
    assert w.shape == (3, 10, 4) and w.dtype == dtype and w.device.type == device.type
    eps = torch.finfo(dtype).eps
    for start, stop in ((0, 4), (4, 8), (8, 10)):
        block = w[:, start:stop]
        gram = block @ block.transpose(-1, -2)
        norms = block.norm(dim=-1)
        off = gram - torch.diag_embed(gram.diagonal(dim1=-2, dim2=-1))
        assert off.abs().max() <= 16 * 4 * eps * norms.max() ** 2


def test_orthogonal_random_features_rows_are_standard_gaussian(device):
    # every row must be N(0, I): E|w|^2 = F with variance 2F, E w = 0 with variance 1 per entry
    count, m, f = 400, 16, 8
    w = draws(count, m, f, torch.float64, device=device).reshape(-1, f)
    n = w.shape[0]
    sq = w.pow(2).sum(-1)
    assert abs(sq.mean().item() - f) < 5 * math.sqrt(2 * f / n)
    assert w.mean(0).abs().max().item() < 5 / math.sqrt(n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_positive_features_estimate_the_exponential_kernel_without_bias(dtype, device):
    # E[prf(x) . prf(y)] = exp(x . y) (Lemma 1), checked within 6 standard errors over draws
    gen = torch.Generator().manual_seed(1)
    x, y = 0.5 * torch.randn(5, 3, generator=gen), 0.5 * torch.randn(7, 3, generator=gen)
    x, y = x.to(device, dtype), y.to(device, dtype)
    w = draws(4000, 6, 3, dtype, device=device)
    est = positive_random_features(x, w) @ positive_random_features(y, w).transpose(-1, -2)
    exact = torch.exp(x @ y.T)
    stderr = est.std(0) / math.sqrt(est.shape[0])
    assert ((est.mean(0) - exact).abs() <= 6 * stderr).all()


# ------------------------------------------------------------------ kernel sums
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_sums_are_unbiased(dtype, causal, device):
    # small norms keep the estimator light-tailed (relative variance (exp|x + y|^2 - 1) / m of
    # order one), so the sample standard error over draws is a reliable yardstick
    gen = torch.Generator().manual_seed(2)
    x = (0.3 * torch.randn(9, 4, generator=gen)).to(device, dtype)
    y = (0.3 * torch.randn(9, 4, generator=gen)).to(device, dtype)
    v = torch.randn(9, 3, generator=gen).to(device, dtype)
    mask = torch.tensor(
        [False, False, True, False, False, False, True, False, False], device=device
    )
    w = draws(3000, 8, 4, dtype, seed=3, device=device)
    num, den, log_scale = favor_kernel_sums(
        x, y, v, w, causal=causal, key_padding_mask=mask, chunk_size=4
    )
    num, den = num * log_scale.exp().unsqueeze(-1), den * log_scale.exp()
    kernel = torch.exp(x @ y.T).masked_fill(mask, 0.0)
    if causal:
        kernel = kernel.tril()
    for est, exact in ((num, kernel @ v), (den, kernel.sum(-1))):
        stderr = est.std(0) / math.sqrt(est.shape[0])
        assert ((est.mean(0) - exact).abs() <= 6 * stderr + rounding_bound(dtype, 8, 9)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_stabilised_sums_equal_unstabilised_features(dtype, device):
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(2, 11, 5, generator=gen), torch.randn(2, 11, 5, generator=gen)
    v = torch.randn(2, 11, 3, generator=gen)
    x, y, v = x.to(device, dtype), y.to(device, dtype), v.to(device, dtype)
    w = draws(1, 32, 5, dtype, device=device)[0]
    phi_q, phi_k = positive_random_features(x, w), positive_random_features(y, w)
    kernel = phi_q @ phi_k.transpose(-1, -2)
    tol = rounding_bound(dtype, 32, 11, 5 * 10)
    for causal in (False, True):
        k = kernel.tril() if causal else kernel
        num, den, log_scale = favor_kernel_sums(x, y, v, w, causal=causal, chunk_size=3)
        ratio = num / den.unsqueeze(-1)
        assert relative_error(ratio, (k @ v) / k.sum(-1, keepdim=True)) < tol
        assert relative_error(den * log_scale.exp(), k.sum(-1)) < tol


# ------------------------------------------------------------------ every geometry
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_each_geometry_matches_its_kernel_and_converges_to_exact(case, dtype, device):
    manifold, distance, tau = CASES[case]
    gen = torch.Generator().manual_seed(5)
    q = tokens(manifold, (2,), 7, dtype, gen, device)
    k = tokens(manifold, (2,), 9, dtype, gen, device)
    v = tokens(manifold, (2,), 9, dtype, gen, device)
    exact = geodesic_attention(manifold, q, k, v, tau=tau, distance=distance)[0]
    # oracle 1: the unstabilised Lemma-1 features on the geometry's own features
    from manifoldnn.manifolds import geometry_for

    geometry = geometry_for(manifold)
    phi, psi = geometry.sdpa_features(q, k, distance)
    w = draws(1, 64, phi.shape[-1], dtype, device=device)[0]
    out = favor_attention(manifold, q, k, v, tau=tau, distance=distance, features=w)[0]
    x, y = phi / math.sqrt(tau), psi / math.sqrt(tau)
    kernel = positive_random_features(x, w) @ positive_random_features(y, w).transpose(-1, -2)
    mean = kernel @ geometry.value_features(v) / kernel.sum(-1, keepdim=True)
    reference = geometry.aggregate(mean, v.shape[-geometry.point_ndim :])
    out, reference, exact = (comparable(manifold, t) for t in (out, reference, exact))
    assert relative_error(out, reference) < rounding_bound(dtype, 64, 9, phi.shape[-1])
    # oracle 2: exact attention; asymptotically the error falls like 1/sqrt(m) (256x features: 16x
    # smaller). The estimator is heavy-tailed (relative variance (exp|x + y|^2 - 1) / m), so the
    # rate sets in only once m is well above exp|x + y|^2; 1/4 leaves room for that slower start
    if dtype is torch.float64:
        errors = []
        for m in (256, 65536):
            ws = draws(8, m, phi.shape[-1], dtype, seed=m, device=device)
            e = [
                relative_error(
                    comparable(
                        manifold,
                        favor_attention(manifold, q, k, v, tau=tau, distance=distance, features=wi)[
                            0
                        ],
                    ),
                    exact,
                )
                for wi in ws
            ]
            errors.append(sum(e) / len(e))
        assert errors[1] < errors[0] / 4


def test_error_decreases_with_the_number_of_features(device):
    gen = torch.Generator().manual_seed(6)
    x = unit(torch.randn(64, 8, dtype=torch.float64, generator=gen)).to(device)
    exact = geodesic_attention(S, x, x, x, tau=4.0, distance="chordal")[0]
    means = []
    for m in (16, 64, 256, 1024):
        ws = draws(8, m, 8, torch.float64, seed=m, device=device)
        errs = [
            relative_error(
                favor_attention(S, x, x, x, tau=4.0, distance="chordal", features=w)[0], exact
            )
            for w in ws
        ]
        means.append(sum(errs) / len(errs))
    assert all(b < a for a, b in zip(means, means[1:]))
    assert means[-1] < means[0] / 4  # the 1/sqrt(m) rate predicts 1/8


# ------------------------------------------------------------------ causality
@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_is_strictly_causal(dtype, device):
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 23, 4, generator=gen).to(device, dtype) for _ in range(3))
    w = draws(1, 16, 5, dtype, device=device)[0]
    base = favor_attention(E, q, k, v, tau=4.0, features=w, is_causal=True, chunk_size=5)[0]
    for t in (0, 6, 12, 21):
        later = slice(t + 1, None)
        # later keys with huge norms: a stabiliser over all keys would underflow the past
        k2, v2, q2 = k.clone(), v.clone(), q.clone()
        k2[:, later] = 40.0 * torch.randn_like(k2[:, later])
        v2[:, later] = torch.randn_like(v2[:, later])
        q2[:, later] = 40.0 * torch.randn_like(q2[:, later])
        out = favor_attention(E, q2, k2, v2, tau=4.0, features=w, is_causal=True, chunk_size=5)[0]
        assert torch.equal(out[:, : t + 1], base[:, : t + 1])
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_equals_attention_on_each_prefix(dtype, device):
    gen = torch.Generator().manual_seed(8)
    x = unit(torch.randn(1, 17, 6, generator=gen)).to(device, dtype)
    w = draws(1, 32, 6, dtype, device=device)[0]
    causal = favor_attention(S, x, x, x, tau=2.0, distance="chordal", features=w, is_causal=True)[0]
    tol = rounding_bound(dtype, 32, 17, 6 * 10)
    for t in range(17):
        prefix = x[:, : t + 1]
        full = favor_attention(S, x[:, t : t + 1], prefix, prefix, tau=2.0, distance="chordal",
                               features=w)[0]  # fmt: skip
        assert relative_error(causal[:, t], full[:, 0]) < tol
    for chunk in (1, 4, 64):
        other = favor_attention(S, x, x, x, tau=2.0, distance="chordal", features=w, is_causal=True,
                                chunk_size=chunk)[0]  # fmt: skip
        assert relative_error(other, causal) < tol


# ------------------------------------------------------------------ padding
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_mask_equals_removing_the_keys(dtype, causal, device):
    gen = torch.Generator().manual_seed(9)
    x = tokens(G, (), 12, dtype, gen, device)
    w = draws(1, 48, 15, dtype, device=device)[0]
    mask = torch.zeros(12, dtype=torch.bool, device=device)
    mask[[3, 7, 8]] = True
    keep = ~mask
    out = favor_attention(G, x, x, x, tau=2.0, features=w, key_padding_mask=mask, is_causal=causal)[
        0
    ]
    tol = rounding_bound(dtype, 48, 12, 15 * 10)
    proj = out @ out.transpose(-1, -2)
    if not causal:
        ref = favor_attention(G, x, x[keep], x[keep], tau=2.0, features=w)[0]
        assert relative_error(proj, ref @ ref.transpose(-1, -2)) < tol
    else:
        for t in range(12):
            seen = keep[: t + 1]
            keys = x[: t + 1][seen]
            ref = favor_attention(G, x[t : t + 1], keys, keys, tau=2.0, features=w)[0][0]
            assert relative_error(proj[t], ref @ ref.T) < tol


def test_causal_fully_padded_prefix_is_finite(device):
    x = tokens(S, (), 6, device=device)
    mask = torch.tensor([True, True, False, False, False, False], device=device)
    out = favor_attention(S, x, x, x, tau=2.0, distance="chordal", num_features=8,
                          key_padding_mask=mask, is_causal=True)[0]  # fmt: skip
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------ gradients, compile
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", ["sphere", "euclidean"])
def test_gradcheck(case, causal, device):
    manifold, distance, _ = CASES[case]
    gen = torch.Generator().manual_seed(10)
    q, k, v = (
        tokens(manifold, (), 5, torch.float64, gen, device).requires_grad_() for _ in range(3)
    )
    tau = torch.tensor(2.0, dtype=torch.float64, device=device, requires_grad=True)
    w = draws(1, 8, q.shape[-1] + (manifold is E), torch.float64, device=device)[0]

    def fn(q, k, v, tau):
        return favor_attention(manifold, q, k, v, tau=tau, distance=distance, features=w,
                               is_causal=causal, chunk_size=2)[0]  # fmt: skip

    assert torch.autograd.gradcheck(fn, (q, k, v, tau))


@pytest.mark.parametrize("causal", [False, True])
def test_no_graph_breaks(causal, device):
    torch._dynamo.reset()
    x = tokens(S, (2,), 10, torch.float32, device=device)
    w = draws(1, 16, 4, torch.float32, device=device)[0]

    def fn(x):
        return favor_attention(S, x, x, x, tau=2.0, distance="chordal", features=w,
                               is_causal=causal, chunk_size=4, validate=False)[0]  # fmt: skip

    explanation = torch._dynamo.explain(fn)(x)
    assert explanation.graph_break_count == 0
    layer = FavorAttention(G, 5, 4, num_heads=2, num_features=16, validate=False, device=device)
    layer = layer.eval()
    y = tokens(G, (2,), 10, torch.float32, device=device)
    explanation = torch._dynamo.explain(lambda y: layer(y, is_causal=causal)[0])(y)
    assert explanation.graph_break_count == 0


# ------------------------------------------------------------------ the module
@pytest.mark.parametrize("dtype", DTYPES)
def test_module_shapes_heads_and_functional_equality(dtype, device):
    layer = FavorAttention(S, 6, 4, num_heads=3, num_features=32, distance="chordal", tau=2.0,
                           device=device, dtype=dtype)  # fmt: skip
    assert layer.features.shape == (3, 32, 4) and layer.features.dtype == dtype
    assert layer.features.device.type == device.type
    assert "features" in layer.state_dict()
    x = tokens(S, (2,), 9, dtype, device=device)[..., :3]
    x = unit(torch.cat([x, x], -1))
    out = layer(x)[0]
    assert out.shape == (2, 9, 3, 4)
    q, k, v = (getattr(layer, f"{n}_map")(x) for n in ("query", "key", "value"))  # (2, 9, 3, 4)
    for h in range(3):
        ref = favor_attention(S, q[:, :, h], k[:, :, h], v[:, :, h], tau=layer.tau,
                              distance="chordal", features=layer.features[h])[0]  # fmt: skip
        assert relative_error(out[:, :, h], ref) < rounding_bound(dtype, 32, 9, 40)
    out.sum().backward()
    assert layer.log_tau.grad is not None and torch.isfinite(layer.log_tau.grad)


def test_module_approaches_geodesic_attention_with_the_same_weights(device):
    torch.manual_seed(11)
    exact_layer = GeodesicAttention(G, 6, 5, num_heads=2, tau=3.0, dtype=torch.float64).to(device)
    x = tokens(G, (1,), 20)
    x = torch.linalg.qr(torch.cat([x, torch.randn(1, 20, 1, 2, dtype=torch.float64)], -2)).Q
    x = x.to(device)
    exact = exact_layer(x)[0]
    errors = []
    for m in (16, 1024):
        layer = FavorAttention(G, 6, 5, num_heads=2, num_features=m, tau=3.0, device=device,
                               dtype=torch.float64)  # fmt: skip
        layer.load_state_dict(exact_layer.state_dict(), strict=False)
        e = []
        for _ in range(6):
            layer.redraw_features()
            out = layer(x)[0]
            e.append(relative_error(out @ out.transpose(-1, -2), exact @ exact.transpose(-1, -2)))
        errors.append(sum(e) / len(e))
    assert errors[1] < errors[0] / 4


def test_module_redraws_every_interval_in_training_only(device):
    layer = FavorAttention(E, 4, num_features=8, redraw_interval=2, device=device)
    x = tokens(E, (1,), 5, torch.float32, device=device)
    seen = [layer.features.clone()]
    for _ in range(4):
        layer(x)
        seen.append(layer.features.clone())
    # forwards 1, 2 use the first draw; the 3rd forward redraws first, the 4th reuses it
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2])
    assert not torch.equal(seen[2], seen[3]) and torch.equal(seen[3], seen[4])
    layer.eval()
    for _ in range(3):
        layer(x)
    assert torch.equal(layer.features, seen[4])
    layer.redraw_features(generator=torch.Generator().manual_seed(0))
    assert not torch.equal(layer.features, seen[4])


def test_entropy_invariant_scale_is_passed(device):
    layer = FavorAttention(S, 4, num_features=16, distance="chordal", train_length=8, tau=2.0,
                           device=device)  # fmt: skip
    x = tokens(S, (1,), 32, torch.float32, device=device)
    q, k, v = (getattr(layer, f"{n}_map")(x)[:, :, 0] for n in ("query", "key", "value"))
    ref = favor_attention(S, q, k, v, tau=layer.tau, distance="chordal", features=layer.features[0],
                          scale=math.log(32) / math.log(8))[0]  # fmt: skip
    assert relative_error(layer(x)[0][:, :, 0], ref) < rounding_bound(torch.float32, 16, 32, 40)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    x = tokens(S, (1,), 16, torch.float64)
    w = draws(1, 32, 4, torch.float64)[0]
    cpu = favor_attention(S, x, x, x, tau=2.0, distance="chordal", features=w, is_causal=True)[0]
    gpu = favor_attention(S, x.cuda(), x.cuda(), x.cuda(), tau=2.0, distance="chordal",
                          features=w.cuda(), is_causal=True)[0]  # fmt: skip
    assert relative_error(gpu.cpu(), cpu) < rounding_bound(torch.float64, 32, 16, 40)


# ------------------------------------------------------------------ bad input
def test_bad_input_names_the_argument():
    x = tokens(S, (), 5)
    with pytest.raises(ValueError, match="num_features"):
        favor_attention(S, x, x, x, tau=1.0, distance="chordal", num_features=0)
    with pytest.raises(ValueError, match="distance"):
        favor_attention(S, x, x, x, tau=1.0, distance="geodesic")
    with pytest.raises(ValueError, match="distance"):
        favor_attention(G, tokens(G, (), 5), tokens(G, (), 5), tokens(G, (), 5), tau=1.0,
                        distance="geodesic")  # fmt: skip
    with pytest.raises(ValueError, match="features"):
        favor_attention(S, x, x, x, tau=1.0, distance="chordal", features=torch.randn(8, 3))
    with pytest.raises(ValueError, match="key_padding_mask"):
        favor_attention(S, x, x, x, tau=1.0, distance="chordal", key_padding_mask=torch.zeros(5))
    with pytest.raises(ValueError, match="tau"):
        favor_attention(S, x, x, x, tau=-1.0, distance="chordal")
    with pytest.raises(ValueError, match="chunk_size"):
        favor_attention(S, x, x, x, tau=1.0, distance="chordal", is_causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="num_features"):
        FavorAttention(S, 4, distance="chordal", num_features=0)
    with pytest.raises(ValueError, match="distance"):
        FavorAttention(S, 4)  # the sphere's default distance is geodesic: no features
    with pytest.raises(ValueError, match="redraw_interval"):
        FavorAttention(E, 4, redraw_interval=0)
    with pytest.raises(ValueError, match="num_features"):
        orthogonal_random_features(0, 4)
    with pytest.raises(ValueError, match="NaN"):
        favor_attention(S, x * math.nan, x, x, tau=1.0, distance="chordal")


# ------------------------------------------------------ torch.nn.MultiheadAttention's call
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_masks_weights_and_causality(case, dtype, device):
    manifold, distance, tau = CASES[case]
    gen = torch.Generator().manual_seed(21)
    x = tokens(manifold, (2,), 9, dtype, gen).to(device)
    width = geometry_for(manifold).sdpa_features(x[:, :1], x[:, :1], distance)[0].shape[-1]
    w = draws(1, 32, width, dtype, seed=3)[0].to(device)
    kw = {"tau": tau, "distance": distance, "features": w}
    lq = x.shape[1]
    causal_mask = torch.ones(lq, lq, dtype=torch.bool, device=device).triu(1)
    linear, none = favor_attention(manifold, x, x, x, is_causal=True, **kw)
    assert none is None
    masked, weights = favor_attention(
        manifold, x, x, x, attn_mask=causal_mask, need_weights=True, **kw
    )
    # the causal prefix sums and the masked kernel estimate the same ratio with the same features;
    # they differ by the rounding of their sums (the stabilising shifts cancel)
    tol = rounding_bound(dtype, 32, lq, width * 10)
    assert relative_error(comparable(manifold, masked), comparable(manifold, linear)) < tol
    ones = torch.ones(2, lq, dtype=dtype, device=device)
    torch.testing.assert_close(weights.sum(-1), ones, atol=4 * lq * torch.finfo(dtype).eps, rtol=0)
    assert (weights.masked_select(causal_mask) == 0).all()
    # no output reads a later token
    other = x.clone()
    other[:, 5:] = tokens(manifold, (2,), lq - 5, dtype, gen).to(device)
    out, _ = favor_attention(manifold, x, other, other, is_causal=True, **kw)
    torch.testing.assert_close(
        comparable(manifold, out[:, :5]), comparable(manifold, linear[:, :5]), atol=0, rtol=0
    )


def test_module_output_map_and_renamed_causal(device):
    torch.manual_seed(22)
    layer = FavorAttention(G, 5, 4, num_heads=2, num_features=16, out_size=3, device=device)
    layer = layer.double().eval()
    x = tokens(G, (2,), 8).to(device)
    out, weights = layer(x, need_weights=True)
    assert out.shape == (2, 8, 3, 2) and weights.shape == (2, 8, 8)
    ok, reason = G.check_point_on_manifold(out, explain=True, atol=1e-10, rtol=1e-10)
    assert ok, reason
    with pytest.warns(FutureWarning, match="is_causal"):
        old, _ = layer(x, causal=True)
    torch.testing.assert_close(old, layer(x, is_causal=True)[0])
