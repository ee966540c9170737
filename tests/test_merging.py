"""Subspace merging and the baselines: invariances, independent references, errors."""

import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from manifoldnn.merging import (
    dare_merge,
    diagonal_fisher,
    fisher_merge,
    input_grams,
    iso_c_merge,
    merge_factored,
    permutation_align,
    regmean_merge,
    rgsp_tefm_matrix,
    subspace_merge,
    subspace_merge_matrices,
    task_arithmetic,
    ties_merge,
    tsv_merge,
    weight_average,
)


def _trunk(name):
    """The merged parameters: everything but the 3-class head ``4.*``."""
    return not name.startswith("4.")


def _tolerance(dtype, matrix, factor=100):
    """Rounding bound of an SVD-based reconstruction: ``factor * eps * ||W||_2``."""
    return factor * torch.finfo(dtype).eps * float(torch.linalg.matrix_norm(matrix, ord=2).max())


def _mlp(dtype, seed, hidden=12, device=None):
    """A small MLP initialised on the CPU from ``seed`` (the same weights on every device)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(10, hidden), nn.Tanh(), nn.Linear(hidden, 7), nn.Tanh(), nn.Linear(7, 3)
    ).to(device, dtype)


def _finetuned(base, seed, scale=0.1):
    torch.manual_seed(seed)
    reference = next(base.parameters())
    model = _mlp(reference.dtype, 0, device=reference.device)
    model.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p) * p.abs().mean())
    return model


def _conv(dtype, seed, device=None):
    torch.manual_seed(seed)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 3))
    return conv.to(device, dtype)


# ----------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("count", [1, 2, 3])
def test_merge_of_copies_is_the_model(dtype, count, device):
    model = _mlp(dtype, 0, device=device)
    merged = subspace_merge([model] * count, rank=3)
    for name, value in model.state_dict().items():
        assert torch.allclose(
            merged[name],
            value,
            rtol=0,
            atol=_tolerance(
                dtype, value.reshape(value.shape[0], -1) if value.dim() > 1 else value[None]
            ),
        )


def test_equal_task_vectors_reduce_to_the_model(dtype, device):
    base = _mlp(dtype, 0, device=device)
    model = _finetuned(base, 1)
    x = torch.randn(50, 10, dtype=dtype, device=device)
    for merged in (
        subspace_merge([model, model], rank=4, base=base, include=_trunk),
        subspace_merge([model, model], rank=4, data=[x, x], include=_trunk),
        subspace_merge([model, model], rank=4, data="self", include=_trunk),
        subspace_merge([model] * 3, rank=4, base=base, data=[x] * 3, include=_trunk),
        task_arithmetic([model, model], base, scaling=0.5),
        regmean_merge([model, model], [x, x]),
    ):
        for name, value in merged.items():
            reference = model.state_dict()[name]
            bound = _tolerance(
                dtype,
                reference.reshape(reference.shape[0], -1)
                if reference.dim() > 1
                else reference[None],
                1000,
            )
            assert torch.allclose(value, reference, rtol=0, atol=bound), name


@pytest.mark.parametrize("mode", ["plain", "base", "self"])
def test_symmetric_in_the_order_of_models(dtype, mode, device):
    base = _mlp(dtype, 0, device=device)
    models = [_finetuned(base, seed) for seed in (1, 2, 3)]
    kwargs = {"plain": {}, "base": {"base": base}, "self": {"data": "self"}}[mode]
    first = subspace_merge(models, rank=4, include=_trunk, **kwargs)
    for order in ([2, 0, 1], [1, 2, 0]):
        other = subspace_merge([models[i] for i in order], rank=4, include=_trunk, **kwargs)
        for name in first:
            w = first[name]
            bound = _tolerance(dtype, w.reshape(w.shape[0], -1) if w.dim() > 1 else w[None], 1000)
            assert torch.allclose(first[name], other[name], rtol=0, atol=bound), name


def test_invariant_to_signs_and_rotations_of_singular_vectors(dtype, device):
    generator = torch.Generator().manual_seed(0)
    n_models, m, n, r = 3, 9, 7, 3
    base = torch.randn(m, n, generator=generator, dtype=dtype).to(device)
    weights = base + 0.3 * torch.randn(n_models, m, n, generator=generator, dtype=dtype).to(device)
    u, s, vh = torch.linalg.svd(weights, full_matrices=False)
    u, s, v = u[..., :r], s[..., :r], vh[..., :r, :].mT
    residual = weights - (u * s.unsqueeze(-2)) @ v.mT
    grams = torch.randn(n_models, 40, n, generator=generator, dtype=dtype).to(device)
    grams = grams.mT @ grams
    reference = merge_factored(u, s, v, residual)
    reference_data = merge_factored(u, s, v, residual, grams=grams)
    # any sign pattern on the pairs (u_i, v_i), and a rotation of the whole frames with the core
    signs = torch.tensor(
        [[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]], dtype=dtype, device=device
    )
    rotation = torch.linalg.qr(
        torch.randn(n_models, r, r, generator=generator, dtype=dtype).to(device)
    )[0]
    flipped = merge_factored(u * signs[:, None], s, v * signs[:, None], residual)
    core = rotation.mT @ torch.diag_embed(s) @ rotation
    rotated = merge_factored(u @ rotation, core, v @ rotation, residual, grams=grams)
    bound = _tolerance(dtype, weights, 1000)
    assert torch.allclose(flipped, reference, rtol=0, atol=bound)
    assert torch.allclose(rotated, reference_data, rtol=0, atol=bound)


# ----------------------------------------------------------------------------- references
def test_two_models_against_pymanopt_midpoint_and_scipy_procrustes():
    pymanopt_manifolds = pytest.importorskip("pymanopt.manifolds", reason="pymanopt is optional")
    rng = np.random.default_rng(0)
    m, n, r = 8, 6, 3
    weights = rng.standard_normal((m, n)) + 0.4 * rng.standard_normal((2, m, n))
    ours = subspace_merge_matrices(torch.from_numpy(weights), r).numpy()

    def midpoint(a, b, size):
        manifold = pymanopt_manifolds.Grassmann(size, r)
        return manifold.exp(a, 0.5 * manifold.log(a, b))

    factors = [np.linalg.svd(w, full_matrices=False) for w in weights]
    us = [f[0][:, :r] for f in factors]
    vs = [f[2][:r].T for f in factors]
    u_star, v_star = midpoint(us[0], us[1], m), midpoint(vs[0], vs[1], n)
    merged = np.zeros((m, n))
    for (_, s_full, _), u, v, w in zip(factors, us, vs, weights):
        rot_u, _ = scipy.linalg.orthogonal_procrustes(u, u_star)
        rot_v, _ = scipy.linalg.orthogonal_procrustes(v, v_star)
        core = rot_u.T @ np.diag(s_full[:r]) @ rot_v
        merged += 0.5 * (u_star @ core @ v_star.T + w - u @ np.diag(s_full[:r]) @ v.T)
    np.testing.assert_allclose(ours, merged, rtol=0, atol=1e-9)


def test_regmean_is_the_least_squares_merge(dtype, device):
    generator = torch.Generator().manual_seed(1)
    weights = torch.randn(3, 5, 4, generator=generator, dtype=dtype).to(device)
    inputs = [torch.randn(30, 4, generator=generator, dtype=dtype).to(device) for _ in range(3)]
    grams = [{"weight": x.mT @ x / x.shape[0]} for x in inputs]
    states = [{"weight": w} for w in weights]
    ours = regmean_merge(states, grams, alpha=1.0)["weight"]
    # min_W sum_k ||X_k W^T - X_k W_k^T||^2 / T_k as one stacked least-squares problem (NumPy)
    design = np.concatenate([x.double().cpu().numpy() / np.sqrt(30) for x in inputs])
    targets = np.concatenate(
        [
            x.double().cpu().numpy() @ w.double().cpu().numpy().T / np.sqrt(30)
            for x, w in zip(inputs, weights)
        ]
    )
    solution = np.linalg.lstsq(design, targets, rcond=None)[0].T
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    np.testing.assert_allclose(ours.double().cpu().numpy(), solution, rtol=0, atol=tol)


def test_input_grams_against_explicit_patches(dtype, device):
    model = _conv(dtype, 0, device=device)
    x = torch.randn(4, 3, 6, 6, dtype=dtype, device=device)
    grams = input_grams(model, x, batch_size=3)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    patches = torch.stack(
        [padded[:, :, i : i + 3, j : j + 3].reshape(4, -1) for i in range(6) for j in range(6)], 1
    ).reshape(-1, 27)
    tol = 50 * torch.finfo(dtype).eps * float(patches.square().sum(1).max())
    assert torch.allclose(
        grams["0.weight"], patches.mT @ patches / patches.shape[0], rtol=0, atol=tol
    )
    assert grams["2.weight"].shape == (72, 72)
    linear = _mlp(dtype, 0, device=device)
    z = torch.randn(9, 10, dtype=dtype, device=device)
    assert torch.allclose(input_grams(linear, z)["0.weight"], z.mT @ z / 9, rtol=0, atol=tol)


def test_conv_and_rectangular_weights_keep_their_shapes(dtype, device):
    models = [_conv(dtype, seed, device=device) for seed in (0, 1, 2)]
    x = torch.randn(5, 3, 6, 6, dtype=dtype, device=device)
    merged = subspace_merge(models, rank=4, data=[x, x, x])
    for name, value in models[0].state_dict().items():
        assert merged[name].shape == value.shape
        assert bool(torch.isfinite(merged[name]).all())
    copies = subspace_merge([models[0]] * 2, rank=5)
    w = models[0][2].weight.detach()
    assert torch.allclose(copies["2.weight"], w, rtol=0, atol=_tolerance(dtype, w.reshape(5, -1)))


def test_batched_matrices_equal_looped(dtype, device):
    generator = torch.Generator().manual_seed(2)
    weights = torch.randn(2, 4, 6, 5, generator=generator, dtype=dtype).to(device)
    batched = subspace_merge_matrices(weights, 2)
    looped = torch.stack([subspace_merge_matrices(weights[:, i], 2) for i in range(4)])
    assert torch.allclose(batched, looped, rtol=0, atol=_tolerance(dtype, weights, 1000))


def test_ties_against_a_brute_force_loop():
    rng = np.random.default_rng(3)
    base = rng.standard_normal(10)
    tasks = rng.standard_normal((3, 10))
    states = [{"w": torch.from_numpy(base + t)} for t in tasks]
    ours = ties_merge(states, {"w": torch.from_numpy(base)}, density=0.3, scaling=0.7)["w"].numpy()
    expected = np.zeros(10)
    trimmed = []
    for t in tasks:
        kept = np.zeros(10)
        for index in np.argsort(-np.abs(t))[:3]:
            kept[index] = t[index]
        trimmed.append(kept)
    for j in range(10):
        sign = np.sign(sum(t[j] for t in trimmed))
        agreeing = [t[j] for t in trimmed if t[j] != 0 and np.sign(t[j]) == sign]
        expected[j] = np.mean(agreeing) if agreeing else 0.0
    np.testing.assert_allclose(ours, base + 0.7 * expected, rtol=0, atol=1e-12)


def test_tsv_and_iso_c_closed_forms():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 6))
    # two rank-3 task vectors on orthogonal row and column spaces: TSV-M (k = 6 // 2) keeps both
    q_left, q_right = (
        np.linalg.qr(rng.standard_normal((6, 6)))[0],
        np.linalg.qr(rng.standard_normal((6, 6)))[0],
    )
    tau1 = q_left[:, :3] @ np.diag([3.0, 1.0, 0.7]) @ q_right[:, :3].T
    tau2 = q_left[:, 3:] @ np.diag([2.0, 0.5, 0.2]) @ q_right[:, 3:].T
    states = [{"w": torch.from_numpy(base + t)} for t in (tau1, tau2)]
    c = {"w": torch.from_numpy(base)}
    np.testing.assert_allclose(
        tsv_merge(states, c)["w"].numpy(), base + tau1 + tau2, rtol=0, atol=1e-12
    )
    iso = iso_c_merge(states, c, scaling=0.5)["w"].numpy() - base
    u, s, vh = np.linalg.svd(tau1 + tau2)
    np.testing.assert_allclose(iso, 0.5 * s.mean() * u @ vh, rtol=0, atol=1e-12)


def test_dare_without_drop_is_task_arithmetic(dtype, device):
    base = _mlp(dtype, 0, device=device)
    models = [_finetuned(base, s) for s in (1, 2)]
    dare = dare_merge(models, base, drop=0.0, scaling=0.3)
    arithmetic = task_arithmetic(models, base, scaling=0.3)
    for name in dare:
        assert torch.equal(dare[name], arithmetic[name])


def test_fisher_of_softmax_regression_and_fisher_merge(device):
    torch.manual_seed(5)
    model = nn.Linear(4, 3, bias=False).to(device, torch.float64)
    x, y = (
        torch.randn(20, 4, dtype=torch.float64, device=device),
        torch.randint(0, 3, (20,), device=device),
    )
    fisher = diagonal_fisher(model, x, labels=y, batch_size=7)["weight"]
    # grad_W log softmax(W x)_y = (e_y - p) x^T
    p = torch.softmax(x @ model.weight.detach().T, -1)
    g = (torch.nn.functional.one_hot(y, 3).double() - p)[:, :, None] * x[:, None, :]
    assert torch.allclose(fisher, g.square().mean(0), rtol=0, atol=1e-14)
    other = nn.Linear(4, 3, bias=False).to(device, torch.float64)
    merged = fisher_merge([model, other], [{"weight": fisher}, {"weight": 3 * fisher}])["weight"]
    assert torch.allclose(merged, 0.25 * model.weight + 0.75 * other.weight, atol=1e-14)
    averaged = fisher_merge([model, other], [{"weight": 0 * fisher}] * 2)["weight"]
    assert torch.allclose(averaged, weight_average([model, other])["weight"])


def test_permutation_align_recovers_a_permuted_copy():
    model = _mlp(torch.float64, 0)
    permuted = _mlp(torch.float64, 0)
    p1, p2 = torch.randperm(12), torch.randperm(7)
    with torch.no_grad():
        permuted[0].weight.copy_(model[0].weight[p1])
        permuted[0].bias.copy_(model[0].bias[p1])
        permuted[2].weight.copy_(model[2].weight[p2][:, p1])
        permuted[2].bias.copy_(model[2].bias[p2])
        permuted[4].weight.copy_(model[4].weight[:, p2])
    x = torch.randn(5, 10, dtype=torch.float64)
    assert torch.allclose(permuted(x), model(x))
    aligned, _ = permutation_align(model, permuted, ["0", "2", "4"])
    for name, value in model.state_dict().items():
        assert torch.equal(aligned[name], value), name
    # models fine-tuned from one base need no permutation
    _, perms = permutation_align(model, _finetuned(model, 1, 0.05), ["0", "2", "4"])
    assert all(torch.equal(p, torch.arange(p.numel())) for p in perms)


def test_gradcheck_float64(device):
    generator = torch.Generator().manual_seed(6)
    weights = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64).to(device)
    weights.requires_grad_()
    assert torch.autograd.gradcheck(lambda w: subspace_merge_matrices(w, 2), (weights,))


def test_every_device_matches_cpu(device):
    """On each device present the merge lands there and equals the CPU's. The Karcher means of the
    bases stop at a gradient norm of 1e-10 (their float64 tolerance), so the two devices' bases
    may differ by about that; the merged weight carries it times its scale, for two bases and
    the core (a factor 10 in all)."""
    models = [_mlp(torch.float64, seed) for seed in (0, 1)]
    cpu = subspace_merge(models, rank=3)
    merged = subspace_merge([m.to(device) for m in models], rank=3)
    for name in cpu:
        assert merged[name].device == device
        bound = 10 * 1e-10 * cpu[name].abs().max()
        assert torch.allclose(merged[name].cpu(), cpu[name], rtol=0, atol=bound)


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_parameter():
    a = _mlp(torch.float64, 0)
    with pytest.raises(ValueError, match="different architectures"):
        subspace_merge([a, nn.Sequential(nn.Linear(10, 12))], rank=2)
    wide = nn.Sequential(nn.Linear(10, 13), nn.Tanh(), nn.Linear(13, 7), nn.Tanh(), nn.Linear(7, 3))
    with pytest.raises(ValueError, match="'0.weight' has shape"):
        subspace_merge([a, wide.double()], rank=2)
    with pytest.raises(ValueError, match="'4.weight' allows"):
        subspace_merge([a, a], rank=4)
    broken = {k: v.clone() for k, v in a.state_dict().items()}
    broken["2.bias"][1] = float("nan")
    for call in (
        lambda: subspace_merge([a, broken], rank=2),
        lambda: weight_average([a, broken]),
        lambda: ties_merge([a, a], broken),
    ):
        with pytest.raises(ValueError, match="'2.bias' has NaN"):
            call()
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        subspace_merge([a, a], rank=0)
    with pytest.raises(ValueError, match="include"):
        subspace_merge([a, a], rank=2, include=["missing.weight"])
    with pytest.raises(ValueError, match="scaling needs base"):
        subspace_merge([a, a], rank=2, scaling=0.3)
    with pytest.raises(ValueError, match="density"):
        ties_merge([a, a], a, density=0.0)


def test_task_heads_of_other_shapes_stay_out():
    torch.manual_seed(7)
    a = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 10))
    b = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    merged = subspace_merge([a, b], rank=3, include=lambda name: name.startswith("0."))
    assert set(merged) == {"0.weight", "0.bias"}
    with pytest.raises(ValueError, match="'2.weight' has shape"):
        weight_average([a, b])
    with pytest.raises(ValueError, match="has no parameter '1.weight'"):
        weight_average([nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 8)), a], include=["1.weight"])
    # the head of another task follows the hidden permutation without entering the matching
    permuted = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    order = torch.randperm(8)
    with torch.no_grad():
        permuted[0].weight.copy_(a[0].weight[order])
        permuted[0].bias.copy_(a[0].bias[order])
        permuted[2].weight.copy_(b[2].weight[:, order])
        permuted[2].bias.copy_(b[2].bias)
    aligned, (perm,) = permutation_align(a, permuted, ["0", "2"])
    assert torch.equal(aligned["0.weight"], a[0].weight.detach())
    assert torch.equal(aligned["2.weight"], b[2].weight.detach())


def test_self_weighting_closed_forms(dtype, device):
    generator = torch.Generator().manual_seed(8)
    # full rank on square weights: the transport is the identity and the merge is RegMean with
    # each weight's own Gram W_k^T W_k
    weights = torch.randn(2, 5, 5, generator=generator, dtype=dtype).to(device)
    states = [{"w": w} for w in weights]
    own = [{"w": w.mT @ w} for w in weights]
    full = subspace_merge(states, rank=5, data="self", alpha=1.0)["w"]
    reference = regmean_merge(states, own, alpha=1.0)["w"]
    assert torch.allclose(full, reference, rtol=0, atol=_tolerance(dtype, weights, 1000))
    # complementary row spaces: the self-weighted least squares keeps both models whole
    q = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=dtype).to(device))[0]
    a = torch.randn(4, 3, generator=generator, dtype=dtype).to(device) @ q[:, :3].mT
    b = torch.randn(4, 3, generator=generator, dtype=dtype).to(device) @ q[:, 3:].mT
    union = regmean_merge([{"w": a}, {"w": b}], [{"w": a.mT @ a}, {"w": b.mT @ b}], alpha=1.0)
    bound = 1e4 * torch.finfo(dtype).eps * float(torch.linalg.cond(a.mT @ a + b.mT @ b))
    assert torch.allclose(union["w"], a + b, rtol=0, atol=bound)


def test_rgsp_tefm_without_pot_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)  # as if POT were not installed
    weights = torch.randn(2, 4, 4, dtype=torch.float64)
    with pytest.raises(ImportError, match=r"manifoldnn\[merging\]"):
        rgsp_tefm_matrix(weights[0], weights[1], rank=2)
