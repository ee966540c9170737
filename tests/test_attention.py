"""Tests of GeodesicAttention / geodesic_attention against independent references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manifoldnn.layers import GeodesicAttention, geodesic_attention
from manifoldnn.linalg import symmetric_vectorize
from manifoldnn.manifolds import (
    Euclidean,
    Grassmann,
    PoincareBall,
    Sphere,
    SymmetricPositiveDefinite,
    geometry_for,
    karcher_mean,
)

E, S, G, P, B = (
    Euclidean(ndim=1),
    Sphere(),
    Grassmann(),
    SymmetricPositiveDefinite(),
    PoincareBall(),
)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def spd(*shape, dtype=torch.float64):
    a = torch.randn(*shape, dtype=dtype)
    return a @ a.transpose(-1, -2) / shape[-1] + 0.5 * torch.eye(shape[-1], dtype=dtype)


def tokens(manifold, batch, length, dtype=torch.float64):
    if manifold is G:
        return G.random(*batch, length, 6, 2, dtype=dtype)
    if manifold is P:
        return spd(*batch, length, 3, 3, dtype=dtype)
    x = torch.randn(*batch, length, 4, dtype=dtype)
    if manifold is S:
        return unit(x)
    if manifold is B:
        return B.expmap0(0.4 * x)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euclidean_equals_sdpa_with_distance_scores(dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, dtype=dtype) for n in (5, 7, 7))
    tau = 0.8
    bias = (-k.pow(2).sum(-1) / tau).unsqueeze(-2)  # -|k|^2/tau; -|q|^2/tau cancels
    # first-order rounding bound of a softmax-weighted average: eps * max|score| * max|v|
    # (a fixed 1e-6 in float32 sat below it and failed on some CPUs' SDPA kernels)
    scores = 2 * q @ k.transpose(-1, -2) / tau + bias
    tol = torch.finfo(dtype).eps * scores.abs().max().item() * v.abs().max().item()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=2 / tau)
    out = geodesic_attention(E, q, k, v, tau=tau)[0]
    assert (out - ref).abs().max() < tol
    # the chunked path (forced by return_weights) agrees, and its weights are softmax(-d^2/tau)
    out2, w = geodesic_attention(E, q, k, v, tau=tau, need_weights=True, chunk_size=3)
    d2 = torch.cdist(q.double(), k.double()).pow(2)
    assert torch.allclose(w.double(), torch.softmax(-d2 / tau, -1), atol=tol * 10)
    assert (out2 - ref).abs().max() < tol * 10


def test_module_with_maps_matches_sdpa_on_mapped_tokens():
    torch.manual_seed(1)
    layer = GeodesicAttention(E, 6, 4, num_heads=3, tau=0.5).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    out = layer(x)[0]
    assert out.shape == (2, 9, 3, 4)
    q, k, v = (m(x).transpose(-3, -2) for m in (layer.query_map, layer.key_map, layer.value_map))
    mask = (-k.pow(2).sum(-1) / 0.5).unsqueeze(-2)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=2 / 0.5)
    assert torch.allclose(out, ref.transpose(-3, -2), atol=1e-12)


def test_grassmann_projection_scores_and_extrinsic_output():
    torch.manual_seed(2)
    q, k, v = (G.random(2, n, 6, 2, dtype=torch.float64) for n in (5, 7, 7))
    _, w = geodesic_attention(G, q, k, v, tau=0.3, distance="projection", need_weights=True)
    d = G.projection_distance(q.unsqueeze(-3), k.unsqueeze(-4))
    assert torch.allclose(w, torch.softmax(-d.pow(2) / 0.3, -1), atol=1e-13)
    out = geodesic_attention(G, q, k, v, tau=0.3, distance="projection")[0]  # SDPA path
    mean = torch.einsum("bij,bjnm->binm", w, v @ v.transpose(-1, -2)).numpy()
    _, vecs = np.linalg.eigh(mean)
    ref = torch.from_numpy(vecs[..., -2:])
    assert torch.allclose(G.projector(out), G.projector(ref), atol=1e-10)


def test_pairwise_distances_match_manifold_distances():
    torch.manual_seed(3)
    for manifold, distances in (
        (
            G,
            {
                "geodesic": G.dist,
                "projection": G.projection_distance,
                "chordal": G.chordal_distance,
            },
        ),
        (P, {"affine": P.dist}),
        (B, {"geodesic": B.dist}),
    ):
        q, k = tokens(manifold, (2,), 4), tokens(manifold, (2,), 3)
        nd = manifold.ndim
        for name, fn in distances.items():
            got = geometry_for(manifold).pairwise_sq_dist(q, k, name)
            ref = fn(q.unsqueeze(-nd - 1), k.unsqueeze(-nd - 2)).pow(2)
            assert torch.allclose(got, ref.reshape(got.shape), atol=1e-10), (manifold, name)


def test_sphere_geodesic_distance_accurate_near_zero_and_pi():
    torch.manual_seed(4)
    q = unit(torch.randn(3, 5, dtype=torch.float64))
    u = torch.randn(3, 5, dtype=torch.float64)
    u = unit(u - (u * q).sum(-1, keepdim=True) * q)
    for t in (1e-7, 1e-3, 1.0, math.pi - 1e-6):
        k = math.cos(t) * q + math.sin(t) * u
        d2 = geometry_for(S).pairwise_sq_dist(q, k, "geodesic").diagonal()
        assert torch.allclose(d2.sqrt(), torch.full_like(d2, t), rtol=1e-8, atol=0), t


def test_gdlnet_score():
    torch.manual_seed(5)
    q, k = (
        unit(torch.randn(4, 3, dtype=torch.float64)),
        unit(torch.randn(6, 3, dtype=torch.float64)),
    )
    _, w = geodesic_attention(S, q, k, k, tau=0.5, score="gdlnet", need_weights=True)
    theta = torch.acos((q @ k.T).clamp(-1, 1))
    ref = torch.softmax(1 / (1 + torch.log1p(theta**2)) / 0.5, -1)
    assert torch.allclose(w, ref, atol=1e-10)


@pytest.mark.parametrize("manifold", [S, G, P, B], ids=["sphere", "grassmann", "spd", "ball"])
def test_karcher_aggregation_is_weighted_karcher_mean(manifold):
    torch.manual_seed(6)
    q, k, v = tokens(manifold, (), 3), tokens(manifold, (), 5), tokens(manifold, (), 5)
    out, w = geodesic_attention(
        manifold, q, k, v, tau=1.0, aggregation="karcher", need_weights=True
    )
    for i in range(3):
        ref = karcher_mean(manifold, v, w[i])
        if manifold is G:
            assert torch.allclose(G.projector(out[i]), G.projector(ref), atol=1e-8)
        else:
            assert torch.allclose(out[i], ref, atol=1e-8)
        # first-order optimality sum_j w_j Log_m(v_j) = 0 at the output (independent check)
        m = out[i].unsqueeze(0).expand_as(v)
        grad = (w[i].reshape((-1,) + (1,) * manifold.ndim) * manifold.logmap(m, v)).sum(0)
        assert grad.abs().max() < 1e-6


# (manifold, distance, aggregation): each geometry's distances with the aggregations they take;
# the chunked softmax and the gradient checks run over all of them
PATHS = [
    pytest.param(E, "euclidean", "extrinsic", id="euclidean"),
    pytest.param(S, "geodesic", "extrinsic", id="sphere-geodesic-extrinsic"),
    pytest.param(S, "geodesic", "tangent", id="sphere-geodesic-tangent"),
    pytest.param(S, "chordal", "extrinsic", id="sphere-chordal-extrinsic"),
    pytest.param(G, "geodesic", "extrinsic", id="grassmann-geodesic-extrinsic"),
    pytest.param(G, "geodesic", "tangent", id="grassmann-geodesic-tangent", marks=pytest.mark.slow),
    pytest.param(G, "projection", "extrinsic", id="grassmann-projection-extrinsic"),
    pytest.param(G, "projection", "tangent", id="grassmann-projection-tangent"),
    pytest.param(P, "affine", "tangent", id="spd-affine-tangent"),
    pytest.param(B, "geodesic", "extrinsic", id="ball-geodesic-extrinsic"),
    pytest.param(B, "geodesic", "tangent", id="ball-geodesic-tangent"),
]


@pytest.mark.parametrize("manifold,distance,aggregation", PATHS)
def test_chunked_online_softmax_equals_full_weights(manifold, distance, aggregation):
    torch.manual_seed(7)
    q, k, v = tokens(manifold, (2,), 4), tokens(manifold, (2,), 7), tokens(manifold, (2,), 7)
    kw = dict(tau=0.7, distance=distance, aggregation=aggregation)
    full, _ = geodesic_attention(manifold, q, k, v, need_weights=True, **kw)
    for chunk in (1, 3, 100):
        out = geodesic_attention(manifold, q, k, v, chunk_size=chunk, **kw)[0]
        assert torch.allclose(out, full, atol=1e-10), chunk


@pytest.mark.parametrize(
    "manifold,distance",
    [(E, "euclidean"), (S, "chordal"), (S, "geodesic"), (G, "projection"), (P, "log_euclidean")],
)
def test_key_padding_and_causal_masks(manifold, distance):
    torch.manual_seed(8)
    q, k, v = tokens(manifold, (2,), 6), tokens(manifold, (2,), 6), tokens(manifold, (2,), 6)
    pad = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    kw = dict(tau=0.6, distance=distance)
    out = geodesic_attention(manifold, q, k, v, key_padding_mask=pad, **kw)[0]
    _, w = geodesic_attention(manifold, q, k, v, key_padding_mask=pad, need_weights=True, **kw)
    assert torch.all(w[0, :, 4:] == 0) and torch.all(w[1] > 0)
    v2, k2 = v.clone(), k.clone()
    v2[0, 4:], k2[0, 4:] = tokens(manifold, (), 2), tokens(manifold, (), 2)
    out2 = geodesic_attention(manifold, q, k2, v2, key_padding_mask=pad, **kw)[0]
    assert torch.allclose(out, out2, atol=1e-9)
    # causal: output i does not depend on keys/values j > i
    c1 = geodesic_attention(manifold, q, k, v, is_causal=True, **kw)[0]
    k3, v3 = k.clone(), v.clone()
    k3[:, 3:], v3[:, 3:] = tokens(manifold, (2,), 3), tokens(manifold, (2,), 3)
    c2 = geodesic_attention(manifold, q, k3, v3, is_causal=True, **kw)[0]
    assert torch.allclose(c1[:, :3], c2[:, :3], atol=1e-9)
    assert not torch.allclose(c1[:, 3:], c2[:, 3:], atol=1e-6)
    _, wc = geodesic_attention(manifold, q, k, v, is_causal=True, need_weights=True, **kw)
    assert torch.all(wc.triu(1) == 0)


def test_all_keys_masked_raises():
    q = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="masks every key"):
        geodesic_attention(E, q, q, q, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))


def test_bad_arguments_raise():
    q = unit(torch.randn(3, 4))
    with pytest.raises(ValueError, match="distance"):
        geodesic_attention(S, q, q, q, distance="projection")
    with pytest.raises(ValueError, match="aggregation"):
        geodesic_attention(S, q, q, q, aggregation="sum")
    with pytest.raises(ValueError, match="tau"):
        geodesic_attention(S, q, q, q, tau=0.0)
    with pytest.raises(ValueError, match="same length"):
        geodesic_attention(S, q, q, q[:2])
    with pytest.raises(ValueError, match="geoopt manifold"):
        GeodesicAttention(torch.nn.Identity(), 4)


@pytest.mark.parametrize("manifold,distance,aggregation", PATHS)
def test_gradcheck(manifold, distance, aggregation):
    torch.manual_seed(9)
    q, k, v = tokens(manifold, (), 3), tokens(manifold, (), 4), tokens(manifold, (), 4)
    tau = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)

    def f(q, k, v, tau):
        if manifold is P:  # perturb within symmetric matrices
            q, k, v = (0.5 * (t + t.transpose(-1, -2)) for t in (q, k, v))
        out = geodesic_attention(
            manifold, q, k, v, tau=tau, distance=distance, aggregation=aggregation, chunk_size=2
        )[0]
        if manifold is G:  # basis-invariant output
            out = G.projector(out)
        return out

    inputs = [t.clone().requires_grad_(True) for t in (q, k, v)] + [tau]
    if manifold in (G, P):  # perturbations must stay meaningful: differentiate in an ambient chart
        assert torch.autograd.gradcheck(f, inputs, atol=1e-6, rtol=1e-5)
    else:
        assert torch.autograd.gradcheck(f, inputs, atol=1e-7)


def test_entropy_invariant_scaling():
    torch.manual_seed(10)
    layer = GeodesicAttention(S, 4, project=False, tau=0.5, train_length=8).double()
    x = unit(torch.randn(2, 32, 4, dtype=torch.float64))
    out = layer(x)[0].squeeze(-2)
    ref = geodesic_attention(S, x, x, x, tau=layer.tau, scale=math.log(32) / math.log(8))[0]
    assert torch.allclose(out, ref, atol=1e-12)
    plain = geodesic_attention(S, x, x, x, tau=layer.tau)[0]
    assert not torch.allclose(out, plain, atol=1e-3)


@pytest.mark.parametrize("manifold", [S, G, P, B], ids=["sphere", "grassmann", "spd", "ball"])
def test_multihead_maps_keep_points_on_manifold(manifold):
    torch.manual_seed(11)
    n = {S: 4, G: 6, P: 3, B: 4}[manifold]
    layer = GeodesicAttention(manifold, n, n - 1, num_heads=2, aggregation="tangent").double()
    x = tokens(manifold, (2,), 5)
    out = layer(x)[0]
    assert out.shape[:3] == (2, 5, 2)
    ok, reason = manifold.check_point_on_manifold(out, explain=True, atol=1e-8, rtol=1e-8)
    assert ok, reason
    out.sum().backward()
    assert layer.log_tau.grad is not None and torch.isfinite(layer.log_tau.grad)


def test_learnable_tau_gets_gradient_on_sdpa_path():
    layer = GeodesicAttention(G, 6, 4, num_heads=2).double()
    x = G.random(3, 5, 6, 2, dtype=torch.float64)
    G.projector(layer(x)[0]).pow(2).sum().backward()
    assert layer.log_tau.grad is not None and layer.log_tau.grad != 0


def test_symmetric_vectorize_is_isometric():
    a, b = spd(5, 4, 4), spd(5, 4, 4)
    ref = (a * b).sum((-2, -1))
    packed = (symmetric_vectorize(a) * symmetric_vectorize(b)).sum(-1)
    assert torch.allclose(packed, ref, atol=1e-12)
    # to float64 precision: sqrt(2) is taken in the input's dtype, not rounded through float32
    torch.testing.assert_close(packed, ref, rtol=1e-13, atol=1e-13)


def test_benchmark_smoke():
    """The benchmark's methods compute the attention they claim: each Grassmann method's output
    (float32, chunked, as timed) is the float64 dense softmax-then-extrinsic-mean of its
    definition, to a Davis-Kahan bound; the backward worker reports what it measured."""
    import argparse

    from benchmarks import attention as bench

    args = argparse.Namespace(
        length=32, n=4, p=2, seed=0, chunk=8, repeats=1, geodesic_max=64, method="projection"
    )
    agreement = bench.worker_agreement(args)
    assert set(agreement) == {"projection", "geodesic"}
    # float32 rounding: squared distances (sums of n p products) err by about 2 n p eps, so the
    # logits -d^2 / tau by 2 n p eps / tau and the weights relatively by twice that plus the
    # softmax normalisation (L eps); the mean projector (n x n, entries <= 1) then errs by at most n
    # times the weights' error plus its own sums, and its top-p eigenspace moves by at most sqrt(2)
    # ||E||_F / gap (Davis & Kahan 1970). The float32 input bases are orthonormal to a few eps too.
    eps = torch.finfo(torch.float32).eps
    n, p, tau, length = args.n, args.p, 0.5, args.length
    error = n * (4 * n * p / tau + 4 * n * p + length) * eps
    for method, row in agreement.items():
        assert row["min_eigengap"] > 0, method
        bound = math.sqrt(2) * error / row["min_eigengap"]
        assert row["max_projector_difference"] <= bound, (method, row, bound)
    backward = bench.worker_backward(args)
    assert set(backward) == {"seconds", "peak_extra_mib"}


@pytest.mark.parametrize("manifold", [E, S, G, P, B], ids=["euc", "sphere", "grass", "spd", "ball"])
@pytest.mark.parametrize("aggregation", ["extrinsic", "tangent"])
def test_float32_forward_finite_and_on_manifold(manifold, aggregation):
    torch.manual_seed(12)
    n = {E: 4, S: 4, G: 6, P: 3, B: 4}[manifold]
    layer = GeodesicAttention(manifold, n, n, num_heads=2, aggregation=aggregation)
    x = tokens(manifold, (2,), 7, dtype=torch.float32)
    out = layer(x, key_padding_mask=torch.tensor([[False] * 5 + [True] * 2, [False] * 7]))[0]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    ok, reason = manifold.check_point_on_manifold(out, explain=True, atol=1e-4, rtol=1e-4)
    assert ok, reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_online_softmax_with_masked_chunks_and_tiny_temperature(dtype):
    torch.manual_seed(13)
    q, k = tokens(S, (2,), 5, dtype=dtype), tokens(S, (2,), 12, dtype=dtype)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[0, :4] = True  # the first chunk of sequence 0 is fully padded
    kw = dict(tau=1e-3, key_padding_mask=pad, aggregation="tangent")
    full, _ = geodesic_attention(S, q, k, k, need_weights=True, **kw)
    chunked = geodesic_attention(S, q, k, k, chunk_size=4, **kw)[0]
    assert torch.isfinite(chunked).all()
    assert torch.allclose(chunked, full, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_chunked_backward_with_checkpointing_matches_unchunked():
    torch.manual_seed(14)
    q, k = tokens(S, (), 6), tokens(S, (), 9)
    grads = []
    for chunk in (3, 100):
        qq, kk = q.clone().requires_grad_(), k.clone().requires_grad_()
        out = geodesic_attention(S, qq, kk, kk, tau=0.4, aggregation="tangent", chunk_size=chunk)[0]
        out.pow(3).sum().backward()
        grads.append((qq.grad, kk.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)


# ------------------------------------------------------ torch.nn.MultiheadAttention's call
MASK_CASES = {
    # name: (manifold, distance, aggregation): the SDPA path, the chunked path, the Karcher path
    "euclidean-sdpa": (E, None, "extrinsic"),
    "sphere-chunked": (S, "geodesic", "tangent"),
    "grassmann-sdpa": (G, "projection", "extrinsic"),
    "spd-karcher": (P, None, "karcher"),
}


def causal_bool(lq, lk, device=None):
    return torch.ones(lq, lk, dtype=torch.bool, device=device).triu(1)


def mask_case_tokens(case, dtype, device, length=6):
    manifold, distance, aggregation = MASK_CASES[case]
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    x = tokens(manifold, (2,), length, dtype).to(device)
    torch.random.set_rng_state(gen_state)
    kw = {"tau": 0.7, "distance": distance, "aggregation": aggregation, "chunk_size": 4}
    return manifold, x, kw


def comparable(manifold, out):
    """Grassmann outputs are bases, equal up to the choice of basis: compare projectors."""
    return out @ out.transpose(-1, -2) if manifold is G else out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_is_causal_equals_the_explicit_masks(case, dtype, device):
    manifold, x, kw = mask_case_tokens(case, dtype, device)
    lq = x.shape[1]
    causal, _ = geodesic_attention(manifold, x, x, x, is_causal=True, **kw)
    as_bool, _ = geodesic_attention(manifold, x, x, x, attn_mask=causal_bool(lq, lq, device), **kw)
    additive = torch.zeros(lq, lq, dtype=dtype, device=device).masked_fill(
        causal_bool(lq, lq, device), -math.inf
    )
    as_float, _ = geodesic_attention(manifold, x, x, x, attn_mask=additive, **kw)
    both, _ = geodesic_attention(
        manifold, x, x, x, attn_mask=causal_bool(lq, lq, device), is_causal=True, **kw
    )
    # the same logits through the same path, or SDPA's fused causal kernel against its masked one:
    # a softmax average of O(1) values, a few eps per key
    tol = 8 * lq * torch.finfo(dtype).eps
    for other in (as_bool, as_float, both):
        torch.testing.assert_close(
            comparable(manifold, other), comparable(manifold, causal), atol=tol, rtol=0
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_need_weights_rows_sum_to_one_and_respect_the_masks(case, dtype, device):
    manifold, x, kw = mask_case_tokens(case, dtype, device)
    lq = x.shape[1]
    float_mask = 0.3 * torch.randn(lq, lq, dtype=dtype, device=device)
    pad = torch.zeros(2, lq, dtype=torch.bool, device=device)
    pad[0, -1] = True
    out, weights = geodesic_attention(
        manifold, x, x, x, need_weights=True, is_causal=True, attn_mask=float_mask,
        key_padding_mask=pad, **kw,
    )  # fmt: skip
    assert weights.shape == (2, lq, lq)
    ones = torch.ones(2, lq, dtype=dtype, device=device)
    torch.testing.assert_close(weights.sum(-1), ones, atol=4 * lq * torch.finfo(dtype).eps, rtol=0)
    assert (weights.masked_select(causal_bool(lq, lq, device)) == 0).all()
    assert (weights[0, :, -1] == 0).all()
    # the float mask is added to the logits: the weights are softmax(logits + mask)
    _, plain = geodesic_attention(manifold, x, x, x, need_weights=True, **kw)
    logits = torch.log(plain) + float_mask
    logits = logits.masked_fill(causal_bool(lq, lq, device), -math.inf)
    logits[0, :, -1] = -math.inf
    expected = torch.softmax(logits, -1)
    torch.testing.assert_close(weights, expected, atol=16 * torch.finfo(dtype).eps, rtol=0)


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_is_causal_reads_no_later_token(case, device):
    manifold, x, kw = mask_case_tokens(case, torch.float64, device, length=7)
    base, _ = geodesic_attention(manifold, x, x, x, is_causal=True, **kw)
    for t in (0, 3, 5):
        other = x.clone()
        other[:, t + 1 :] = tokens(manifold, (2,), 7 - t - 1).to(device)
        out, _ = geodesic_attention(manifold, x, other, other, is_causal=True, **kw)
        torch.testing.assert_close(
            comparable(manifold, out[:, : t + 1]),
            comparable(manifold, base[:, : t + 1]),
            atol=1e-12,
            rtol=0,
        )


def test_module_masks_follow_multihead_attention(device):
    torch.manual_seed(3)
    layer = GeodesicAttention(S, 5, 4, num_heads=3, distance="geodesic", device=device).double()
    x = tokens(S, (2,), 6).to(device)[..., :4]
    x = unit(torch.cat([x, x[..., :1]], -1))
    lq, h = 6, 3
    causal, weights = layer(x, need_weights=True, is_causal=True)
    assert weights.shape == (2, lq, lq)
    _, per_head = layer(x, need_weights=True, is_causal=True, average_attn_weights=False)
    assert per_head.shape == (2, h, lq, lq)
    torch.testing.assert_close(per_head.mean(1), weights)
    shared, _ = layer(x, attn_mask=causal_bool(lq, lq, device))
    batched, _ = layer(x, attn_mask=causal_bool(lq, lq, device).expand(2, lq, lq))
    stacked, _ = layer(x, attn_mask=causal_bool(lq, lq, device).expand(2 * h, lq, lq))
    per_head_mask, _ = layer(x, attn_mask=causal_bool(lq, lq, device).expand(2, h, lq, lq))
    for other in (shared, batched, stacked, per_head_mask):
        torch.testing.assert_close(other, causal, atol=1e-13, rtol=0)
    # positional arguments in MultiheadAttention's order
    positional, none = layer(x, x, x, None, False, causal_bool(lq, lq, device))
    assert none is None
    torch.testing.assert_close(positional, causal, atol=1e-13, rtol=0)


@pytest.mark.parametrize("manifold", [E, S, G, P], ids=["euc", "sphere", "grass", "spd"])
def test_output_map_gives_one_point_on_the_manifold(manifold, device):
    torch.manual_seed(4)
    x = tokens(manifold, (2,), 5).to(device)
    size = x.shape[2]
    layer = GeodesicAttention(
        manifold, size, size - 1 if size > 3 else size, num_heads=2, out_size=2, device=device
    ).double()
    out, _ = layer(x)
    assert out.shape[:3] == (2, 5, 2)  # (batch, L_q, out_size, ...): one point per token
    ok, reason = manifold.check_point_on_manifold(out, explain=True, atol=1e-8, rtol=1e-8)
    assert ok, reason
    out.pow(2).sum().backward()
    assert layer.head_weight_logits.grad is not None


def test_renamed_arguments_warn_and_still_work():
    torch.manual_seed(5)
    x = tokens(S, (2,), 6)
    new, weights = geodesic_attention(S, x, x, x, is_causal=True, need_weights=True)
    with pytest.warns(FutureWarning, match="is_causal"):
        old = geodesic_attention(S, x, x, x, causal=True, need_weights=True)
    with pytest.warns(FutureWarning, match="need_weights"):
        old_weights = geodesic_attention(S, x, x, x, is_causal=True, return_weights=True)[1]
    torch.testing.assert_close(old[0], new)
    torch.testing.assert_close(old_weights, weights)
    layer = GeodesicAttention(S, 4, num_heads=2).double()
    with pytest.warns(FutureWarning, match="is_causal"):
        old_out, _ = layer(x, causal=True)
    torch.testing.assert_close(old_out, layer(x, is_causal=True)[0])
    from manifoldnn.layers import ManifoldLinear

    with pytest.warns(FutureWarning, match="num_heads"):
        linear = ManifoldLinear(S, 4, 3, heads=2)
    assert linear.num_heads == 2
