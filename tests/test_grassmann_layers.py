"""Tests of the Grassmann network layers against closed forms, numpy/scipy references and gradcheck."""

from __future__ import annotations

import math

import geoopt
import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifoldnn import layers
from manifoldnn.linalg import eigh_top, orthonormality_error, symmetric_vectorize
from manifoldnn.manifolds import Grassmann, karcher_mean
from manifoldnn.models import GrNet, ProjectorClassifier

DTYPES = [torch.float32, torch.float64]
ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def random_basis(*shape: int, dtype=torch.float64, seed: int = 0, device=None) -> torch.Tensor:
    """Orthonormal bases drawn on the CPU in float64 (the same on every device), then cast."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(*shape, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gaussian)[0].to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------- FRMap


@pytest.mark.parametrize("dtype", DTYPES)
def test_frmap_matches_matrix_product_and_has_orthonormal_rows(dtype, device):
    torch.manual_seed(0)
    layer = layers.FRMap(9, 5, channels=3).to(device, dtype)
    layer.reset_parameters()  # re-draw W in the target precision
    assert isinstance(layer.weight, geoopt.ManifoldParameter)
    w = layer.matrix.detach()
    assert w.shape == (3, 5, 9)
    eye = torch.eye(5, dtype=dtype, device=device)
    assert torch.allclose(w @ w.transpose(-1, -2), eye.expand(3, 5, 5), atol=ATOL[dtype] * 10)
    y = random_basis(4, 3, 9, 2, dtype=dtype, device=device)
    out = layer(y)
    reference = np.einsum("coi,bcip->bcop", w.double().cpu().numpy(), y.double().cpu().numpy())
    assert out.shape == (4, 3, 5, 2)
    assert out.dtype == dtype
    np.testing.assert_allclose(
        out.detach().to(device, torch.float64).cpu().numpy(), reference, atol=ATOL[dtype] * 10
    )


def test_frmap_broadcasts_channel_and_batch_dimensions(device):
    torch.manual_seed(1)
    layer = layers.FRMap(8, 4, channels=3).to(device, torch.float64)
    y = random_basis(2, 5, 8, 2, device=device)
    fanned = layer(y.unsqueeze(-3))  # (2, 5, 1, 8, 2) -> (2, 5, 3, 4, 2)
    assert fanned.shape == (2, 5, 3, 4, 2)
    for c in range(3):
        assert torch.allclose(fanned[:, :, c], layer.matrix[c] @ y)
    single = layers.FRMap(8, 4).to(device, torch.float64)
    assert single(y).shape == (2, 5, 4, 2)
    assert torch.allclose(single(y), single.matrix[0] @ y)


def test_frmap_errors(device):
    with pytest.raises(ValueError, match="out_size must be <= in_size"):
        layers.FRMap(4, 5)
    layer = layers.FRMap(6, 4, channels=2).to(device)
    with pytest.raises(ValueError, match="in_size=6"):
        layer(torch.randn(2, 5, 2, device=device))
    with pytest.raises(ValueError, match="channel axis"):
        layer(torch.randn(3, 6, 2, device=device))
    with pytest.raises(ValueError, match="p <= out_size"):
        layer(torch.randn(2, 6, 5, device=device))


def test_frmap_gradcheck(device):
    torch.manual_seed(2)
    layer = layers.FRMap(6, 4, channels=2).to(device, torch.float64)
    layer.reset_parameters()
    y = random_basis(3, 2, 6, 2, device=device).requires_grad_()
    weight = layer.weight.detach().clone().requires_grad_()

    def f(y, weight):
        return weight.transpose(-1, -2) @ y

    assert torch.autograd.gradcheck(f, (y, weight))
    assert torch.autograd.gradcheck(layer, (y,))


# ----------------------------------------------------------------------------------- ReOrth


@pytest.mark.parametrize("dtype", DTYPES)
def test_reorth_is_gram_schmidt_and_fixes_valid_bases(dtype, device):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 7, 3, generator=generator, dtype=torch.float64).to(device, dtype)
    q = layers.ReOrth()(x)
    assert orthonormality_error(q) < ATOL[dtype] * 10
    r = q.transpose(-1, -2) @ x  # must be upper triangular with a positive diagonal
    assert torch.allclose(torch.tril(r, -1), torch.zeros_like(r), atol=ATOL[dtype] * 10)
    assert (torch.diagonal(r, dim1=-2, dim2=-1) > 0).all()
    # Same span as x: projector equals X (X^T X)^{-1} X^T.
    xd = x.double()
    reference = xd @ torch.linalg.solve(xd.transpose(-1, -2) @ xd, xd.transpose(-1, -2))
    assert torch.allclose(
        (q @ q.transpose(-1, -2)).to(device, torch.float64), reference, atol=ATOL[dtype] * 100
    )
    # Against scipy's QR with the same sign convention.
    qs, rs = scipy.linalg.qr(xd[0, 0].cpu().numpy(), mode="economic")
    qs = qs * np.sign(np.diag(rs))
    np.testing.assert_allclose(q[0, 0].double().cpu().numpy(), qs, atol=ATOL[dtype] * 100)
    # A valid basis comes back unchanged.
    assert torch.allclose(layers.ReOrth()(q), q, atol=ATOL[dtype] * 10)


def test_reorth_gradcheck_and_errors(device):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 3, generator=generator, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(layers.ReOrth(), (x,))
    with pytest.raises(ValueError, match="p <= n"):
        layers.ReOrth()(torch.randn(3, 4, device=device))


# ----------------------------------------------------------------------------------- ProjMap


@pytest.mark.parametrize("dtype", DTYPES)
def test_projmap_closed_form_and_basis_invariance(dtype, device):
    y = random_basis(3, 6, 2, dtype=dtype, seed=5, device=device)
    p = layers.ProjMap()(y)
    assert p.shape == (3, 6, 6)
    np.testing.assert_allclose(
        p.double().cpu().numpy(),
        np.einsum("bip,bjp->bij", *[y.double().cpu().numpy()] * 2),
        atol=ATOL[dtype],
    )
    assert torch.allclose(p @ p, p, atol=ATOL[dtype] * 10)  # idempotent
    rotation = random_basis(2, 2, dtype=dtype, seed=6, device=device)
    assert torch.allclose(layers.ProjMap()(y @ rotation), p, atol=ATOL[dtype] * 10)
    assert torch.allclose(
        torch.diagonal(p, dim1=-2, dim2=-1).sum(-1),
        torch.full((3,), 2.0, dtype=dtype, device=device),
    )
    x = torch.randn(2, 5, 2, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(layers.ProjMap(), (x,))
    with pytest.raises(ValueError, match="p <= n"):
        layers.ProjMap()(torch.randn(2, 3, device=device))


# ----------------------------------------------------------------------------- SubspaceEmbedding


@pytest.mark.parametrize("dtype", DTYPES)
def test_subspace_embedding_matches_svd(dtype, device):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(3, 2, 12, 20, generator=generator, dtype=torch.float64).to(device)
    y = layers.SubspaceEmbedding(4)(x.to(dtype))
    assert y.shape == (3, 2, 12, 4)
    assert orthonormality_error(y) < ATOL[dtype] * 10
    for index in np.ndindex(3, 2):
        u = np.linalg.svd(x[index].cpu().numpy())[0][:, :4]
        reference = u @ u.T
        projector = (y[index] @ y[index].T).to(device, torch.float64).cpu().numpy()
        np.testing.assert_allclose(projector, reference, atol=ATOL[dtype] * 100)
    # Centred variant: principal subspace of the centred data.
    yc = layers.SubspaceEmbedding(4, center=True)(x.to(dtype))
    xc = x[0, 0].cpu().numpy() - x[0, 0].cpu().numpy().mean(axis=1, keepdims=True)
    u = np.linalg.svd(xc)[0][:, :4]
    np.testing.assert_allclose(
        (yc[0, 0] @ yc[0, 0].T).to(device, torch.float64).cpu().numpy(),
        u @ u.T,
        atol=ATOL[dtype] * 100,
    )


def test_subspace_embedding_invariant_to_mixing_the_vectors_and_gradcheck(device):
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(2, 6, 3, generator=generator, dtype=torch.float64).to(
        device
    )  # rank 3: span is exact
    mixing = torch.randn(3, 3, generator=generator, dtype=torch.float64).to(device)
    p1 = layers.ProjMap()(layers.SubspaceEmbedding(3)(x))
    p2 = layers.ProjMap()(layers.SubspaceEmbedding(3)(x @ mixing))
    assert torch.allclose(p1, p2, atol=1e-10)
    x = torch.randn(2, 6, 9, generator=generator, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(layers.SubspaceEmbedding(2), (x,))
    with pytest.raises(ValueError, match="ambient dimension"):
        layers.SubspaceEmbedding(7)(torch.randn(6, 9, device=device))
    with pytest.raises(ValueError, match="number of vectors"):
        layers.SubspaceEmbedding(4)(torch.randn(6, 3, device=device))


# ----------------------------------------------------------------------------------- OrthMap


def test_eigh_top_gradcheck_on_distinct_eigenvalues(device):
    generator = torch.Generator().manual_seed(9)
    a = torch.randn(3, 6, 6, generator=generator, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: eigh_top(a, 3), (a,))
    values, vectors = eigh_top(a.detach(), 3)
    reference = np.linalg.eigvalsh(((a + a.transpose(-1, -2)) / 2).detach().cpu().numpy())[
        ..., ::-1
    ]
    np.testing.assert_allclose(values.cpu().numpy(), reference[..., :3], atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_orthmap_on_projector_with_repeated_eigenvalues(dtype, device):
    y = random_basis(2, 7, 3, dtype=dtype, seed=10, device=device)
    projector = layers.ProjMap()(y)  # eigenvalue 1 three times, 0 four times
    out = layers.OrthMap(3)(projector)
    assert out.shape == (2, 7, 3)
    assert orthonormality_error(out) < ATOL[dtype] * 10
    assert torch.allclose(layers.ProjMap()(out), projector, atol=ATOL[dtype] * 10)
    # Backward through the eigenvectors themselves (not basis invariant) stays finite.
    a = projector.clone().requires_grad_()
    target = torch.randn(2, 7, 3, dtype=dtype, generator=torch.Generator().manual_seed(11)).to(
        device
    )
    (layers.OrthMap(3)(a) * target).sum().backward()
    assert torch.isfinite(a.grad).all()
    # and a span-dependent loss has a finite gradient too.
    b = projector.clone().requires_grad_()
    layers.ProjMap()(layers.OrthMap(3)(b)).square().sum().backward()
    assert torch.isfinite(b.grad).all()


def test_orthmap_gradcheck_with_repeated_top_eigenvalues(device):
    """The subspace of a matrix whose top eigenvalue is repeated is smooth in the matrix: gradcheck
    of the projector of OrthMap passes there, with exact ties inside the top block."""
    q = random_basis(6, 6, seed=12, device=device)
    a = (q * torch.tensor([3.0, 3.0, 3.0, 1.0, 0.5, 0.0], dtype=torch.float64, device=device)) @ q.T
    a.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: layers.ProjMap()(layers.OrthMap(3)(a)), (a,))
    # Analytic first-order check: dP = sum_{i in top, j not} (u_i^T E u_j)/(l_i - l_j)(u_i u_j^T + u_j u_i^T).
    generator = torch.Generator().manual_seed(13)
    direction = torch.randn(6, 6, generator=generator, dtype=torch.float64).to(device)
    direction = (direction + direction.T) / 2
    (grad,) = torch.autograd.grad((layers.ProjMap()(layers.OrthMap(3)(a)) * direction).sum(), a)
    values = torch.tensor([3.0, 3.0, 3.0, 1.0, 0.5, 0.0], dtype=torch.float64, device=device)
    expected = torch.zeros(6, 6, dtype=torch.float64, device=device)
    for i in range(3):
        for j in range(3, 6):
            outer = torch.outer(q[:, i], q[:, j])
            d_p_coeff = (q[:, i] @ direction @ q[:, j] * 2) / (values[i] - values[j])
            expected += d_p_coeff * (outer + outer.T) / 2
    assert torch.allclose(grad, expected, atol=1e-10)


# the device fixture is the same for every example
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(n=st.integers(2, 9), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_property_reorth_projmap_orthmap_round_trip(n, data, seed, device):
    """For any full-rank X (n, p): ReOrth(X) is orthonormal and spans X, ReOrth is idempotent, and
    OrthMap(p) of the projector returns the same subspace."""
    p = data.draw(st.integers(1, n))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, n, p, generator=generator, dtype=torch.float64).to(device)
    y = layers.ReOrth()(x)
    assert orthonormality_error(y) < 1e-12
    assert torch.allclose(layers.ReOrth()(y), y, atol=1e-12)
    projector = layers.ProjMap()(y)
    assert torch.allclose(projector @ x, x, atol=1e-9)  # x lies in span(y)
    assert torch.allclose(layers.ProjMap()(layers.OrthMap(p)(projector)), projector, atol=1e-10)


def test_orthmap_errors(device):
    with pytest.raises(ValueError, match="square"):
        layers.OrthMap(2)(torch.randn(4, 3, device=device))
    with pytest.raises(ValueError, match="exceeds"):
        layers.OrthMap(5)(torch.eye(4, device=device))


# ------------------------------------------------------------------------------- ProjPooling


def test_projpooling_across_and_within(device):
    y = random_basis(2, 4, 6, 2, seed=14, device=device)
    p = layers.ProjMap()(y)
    assert torch.allclose(layers.ProjPooling("across")(p), p.mean(1))
    pooled = layers.ProjPooling("across", kernel_size=2)(p)
    assert pooled.shape == (2, 2, 6, 6)
    assert torch.allclose(pooled[:, 1], (p[:, 2] + p[:, 3]) / 2)
    within = layers.ProjPooling("within", kernel_size=3)(p)
    assert within.shape == (2, 4, 2, 2)
    # Equivalent form: average groups of neighbouring rows of Y, then take Y~ Y~^T.
    y_rows = y.reshape(2, 4, 2, 3, 2).mean(-2)
    assert torch.allclose(within, y_rows @ y_rows.transpose(-1, -2))
    with pytest.raises(ValueError, match="divisible"):
        layers.ProjPooling("across", kernel_size=3)(p)
    with pytest.raises(ValueError, match="divisible"):
        layers.ProjPooling("within", kernel_size=4)(p)
    with pytest.raises(ValueError, match="channel axis"):
        layers.ProjPooling("across")(p[0, 0])
    with pytest.raises(ValueError, match="mode"):
        layers.ProjPooling("max")


# ------------------------------------------------------------------------------- KarcherPool


def test_karcherpool_agrees_with_karcher_mean(device):
    y = random_basis(3, 4, 7, 2, seed=15, device=device)
    grassmann = Grassmann()
    pooled = layers.KarcherPool()(y)
    assert pooled.shape == (3, 7, 2)
    reference = karcher_mean(grassmann, y)
    assert torch.allclose(layers.ProjMap()(pooled), layers.ProjMap()(reference), atol=1e-8)
    # First-order optimality: the Riemannian gradient sum_i Log_m(y_i) vanishes.
    logs = grassmann.logmap(pooled.unsqueeze(1), y).sum(1)
    assert logs.abs().max() < 1e-7
    grouped = layers.KarcherPool(group_size=2)(y)
    assert grouped.shape == (3, 2, 7, 2)
    assert torch.allclose(
        layers.ProjMap()(grouped[:, 1]),
        layers.ProjMap()(karcher_mean(grassmann, y[:, 2:])),
        atol=1e-8,
    )
    # Pooling a different axis: (B, S, C, n, p) over S.
    stacked = torch.stack([y, y.flip(1)], dim=2)  # (3, 4, 2, 7, 2)
    over_set = layers.KarcherPool(dim=-4)(stacked)
    assert over_set.shape == (3, 2, 7, 2)
    assert torch.allclose(layers.ProjMap()(over_set[:, 0]), layers.ProjMap()(reference), atol=1e-8)


def test_karcherpool_learnable_weights_and_gradients(device):
    y = random_basis(2, 4, 6, 2, seed=16, device=device)
    pool = layers.KarcherPool(group_size=2, learn_weights=True, size=4).to(device, torch.float64)
    assert torch.allclose(
        layers.ProjMap()(pool(y)), layers.ProjMap()(layers.KarcherPool(group_size=2)(y)), atol=1e-8
    )
    with torch.no_grad():
        pool.weight_logits.copy_(torch.tensor([[0.0, 1.0], [2.0, -1.0]]))
    weights = torch.softmax(pool.weight_logits.detach(), -1)
    expected = karcher_mean(Grassmann(), y.reshape(2, 2, 2, 6, 2), weights)
    assert torch.allclose(layers.ProjMap()(pool(y)), layers.ProjMap()(expected), atol=1e-8)
    layers.ProjMap()(pool(y)).square().mul(
        torch.arange(36.0, dtype=torch.float64, device=device).reshape(6, 6)
    ).sum().backward()
    assert pool.weight_logits.grad is not None
    assert torch.isfinite(pool.weight_logits.grad).all() and pool.weight_logits.grad.abs().sum() > 0
    x = torch.randn(3, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(17)).to(
        device
    )
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: layers.ProjMap()(layers.KarcherPool()(layers.ReOrth()(x))), (x,)
    )
    with pytest.raises(ValueError, match="divisible"):
        layers.KarcherPool(group_size=3)(y)
    with pytest.raises(ValueError, match="size"):
        layers.KarcherPool(learn_weights=True)


# ------------------------------------------------------------------------- GrNet and its head


def test_symmetric_vectorize_is_an_isometry_and_classifier_shapes(device):
    generator = torch.Generator().manual_seed(18)
    a, b = torch.randn(2, 3, 5, 5, generator=generator, dtype=torch.float64).to(device)
    a, b = a + a.transpose(-1, -2), b + b.transpose(-1, -2)
    inner = (symmetric_vectorize(a) * symmetric_vectorize(b)).sum(-1)
    assert torch.allclose(inner, torch.einsum("bij,bji->b", a, b))
    head = ProjectorClassifier(5, 4, channels=3).to(device)
    assert head(torch.randn(2, 7, 3, 5, 5, device=device)).shape == (2, 7, 4)
    with pytest.raises(ValueError, match="expects"):
        head(torch.randn(2, 5, 5, device=device))
    with pytest.raises(ValueError, match="not increase"):
        GrNet(8, 2, 3, out_sizes=(6, 7))
    with pytest.raises(ValueError, match="rank must be <= every"):
        GrNet(8, 5, 3, out_sizes=(6, 4))
    with pytest.raises(ValueError, match="divisible"):
        GrNet(12, 2, 3, channels=3, pool_size=2)


def test_grnet_gradcheck(device):
    torch.manual_seed(19)
    model = GrNet(6, 2, 3, out_sizes=(5, 4), channels=2, pool_size=2).to(device, torch.float64)
    for module in model.modules():
        if isinstance(module, layers.FRMap):
            module.reset_parameters()
    x = torch.randn(3, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))


def test_grnet_in_channels_routing_gradcheck_and_errors(device):
    """in_channels=K: input channel k feeds FRMap channels k C/K .. (k+1) C/K - 1; with K identical
    inputs the model equals the single-input GrNet with the same weights."""
    torch.manual_seed(22)
    multi = GrNet(6, 2, 3, out_sizes=(5, 4), channels=4, pool_size=2, in_channels=2).to(
        device, torch.float64
    )
    single = GrNet(6, 2, 3, out_sizes=(5, 4), channels=4, pool_size=2).to(device, torch.float64)
    for module in list(multi.modules()) + list(single.modules()):
        if isinstance(module, layers.FRMap):
            module.reset_parameters()
    single.load_state_dict(multi.state_dict())
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64, device=device)
    seen = []
    multi.first[0].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    out = multi(x)
    assert out.shape == (3, 3)
    embedded = layers.SubspaceEmbedding(2)(x)
    assert torch.allclose(seen[0], embedded.repeat_interleave(2, dim=-3))
    assert not torch.allclose(multi(x.flip(-3)), out)
    same = x[:, :1].expand(3, 2, 6, 5)
    assert torch.allclose(multi(same), single(x[:, 0]), atol=1e-12)
    assert multi(torch.randn(4, 3, 2, 6, 5, dtype=torch.float64, device=device)).shape == (4, 3, 3)
    x.requires_grad_()
    assert torch.autograd.gradcheck(multi, (x,))
    with pytest.raises(ValueError, match="in_channels=2 expects"):
        multi(torch.randn(3, 6, 5, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="in_channels=2 expects"):
        multi(torch.randn(3, 3, 6, 5, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="divisible by in_channels"):
        GrNet(6, 2, 3, out_sizes=(5, 4), channels=4, pool_size=2, in_channels=3)


@pytest.mark.parametrize("pooling", ["projection", "karcher"])
def test_grnet_200_riemannian_adam_steps_stay_on_the_manifold(pooling, device):
    """Train in float32 for 200 steps; every Stiefel weight and every basis-valued activation is
    orthonormal to 1e-6 and the classifier learns the class subspaces."""
    torch.manual_seed(20)
    generator = torch.Generator().manual_seed(21)
    planes = torch.linalg.qr(torch.randn(3, 8, 2, generator=generator).to(device))[0]
    labels = torch.randint(0, 3, (60,), generator=generator).to(device)
    features = planes[labels] @ torch.randn(60, 2, 6, generator=generator).to(device)
    features = features + 0.3 * torch.randn(60, 8, 6, generator=generator).to(device)
    model = GrNet(8, 2, 3, out_sizes=(6, 4), channels=4, pool_size=2, pooling=pooling).to(device)
    activations: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(
            module, (layers.ReOrth, layers.OrthMap, layers.KarcherPool, layers.SubspaceEmbedding)
        ):
            module.register_forward_hook(
                lambda m, i, out, name=name: activations.__setitem__(name, out.detach())
            )
    optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=0.02)
    losses = []
    for step in range(200):
        index = torch.arange(step % 4 * 15, step % 4 * 15 + 15, device=device)
        loss = torch.nn.functional.cross_entropy(model(features[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for module in model.modules():
        if isinstance(module, layers.FRMap):
            w = module.matrix.detach()
            eye = torch.eye(w.shape[-2], device=device)
            assert (w @ w.transpose(-1, -2) - eye).abs().max() < 1e-6
    model(features)
    assert len(activations) >= 4
    for name, value in activations.items():
        assert orthonormality_error(value) < 1e-6, name
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    with torch.no_grad():
        assert (model(features).argmax(-1) == labels).float().mean() > 0.9


def test_benchmark_blocks_compute_the_same_function():
    """benchmarks/grassmann_layers.py times two implementations of one block: with shared weights in
    float64 they agree to rounding amplified by OrthMap's eigengap (Davis & Kahan 1970: the top-p
    eigenspace of the pooled projector moves by at most sqrt(2) ||E|| / gap for a perturbation E,
    here the O(n eps) rounding of QR and the products)."""
    from benchmarks.grassmann_layers import main as benchmark_main

    report = benchmark_main(["--batch", "4", "--repeats", "1", "--inner", "1"])
    assert {"fb", "step", "max_output_difference", "min_eigengap"} <= set(report)
    n, eps = 20, torch.finfo(torch.float64).eps  # the largest matrix size, --n 20
    assert report["min_eigengap"] > 0
    bound = math.sqrt(2) * 8 * n * eps / report["min_eigengap"] + 8 * n * eps
    assert report["max_output_difference"] <= bound


# ---------------------------------------------------------------- renamed arguments
def test_renamed_arguments_warn_and_still_work():
    from manifoldnn.models import MultiViewGrassmannNet

    with pytest.warns(FutureWarning, match="renamed"):
        frmap = layers.FRMap(in_dim=6, out_dim=4)
    assert (frmap.in_size, frmap.out_size) == (6, 4)
    for layer in (layers.OrthMap, layers.SubspaceEmbedding):
        with pytest.warns(FutureWarning, match="rank"):
            assert layer(p=3).rank == 3
    with pytest.warns(FutureWarning, match="renamed"):
        model = GrNet(in_dim=8, p=2, num_classes=3, dims=(6, 4))
    assert (model.in_size, model.rank, model.out_sizes) == (8, 2, (6, 4))
    with pytest.warns(FutureWarning, match="by keyword"):
        positional = GrNet(8, 2, 3, (6, 4), 2, 2)
    assert positional.out_sizes == (6, 4)
    with pytest.raises(TypeError, match="positional"):
        GrNet(8, 2, 3, (6, 4), 2, 2, "projection", True, False, False, 1, "extra")
    with pytest.warns(FutureWarning, match="in_size"):
        head = ProjectorClassifier(n=5, num_classes=2)
    assert head.in_size == 5
    with pytest.warns(FutureWarning, match="by keyword"):
        assert ProjectorClassifier(5, 2, 3).channels == 3
    with pytest.warns(FutureWarning, match="renamed"):
        net = MultiViewGrassmannNet(view_dims=[4, 3], n_clusters=2, ambient_dim=6, projected_dim=4)
    assert (net.view_sizes, net.in_size, net.out_size) == ([4, 3], 6, 4)
