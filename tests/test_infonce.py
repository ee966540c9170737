"""Tests for the symmetric InfoNCE loss against closed forms and a NumPy/SciPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from manifoldnn.losses import InfoNCELoss, info_nce_loss


def reference_info_nce(z_a: np.ndarray, z_b: np.ndarray, tau: float, normalize: bool) -> np.ndarray:
    """Per-pair symmetric InfoNCE for one batch ``(N, d)``, written with explicit loops."""
    if normalize:
        z_a = z_a / np.linalg.norm(z_a, axis=1, keepdims=True)
        z_b = z_b / np.linalg.norm(z_b, axis=1, keepdims=True)
    n = z_a.shape[0]
    out = np.empty(n)
    for i in range(n):
        row = np.array([z_a[i] @ z_b[j] for j in range(n)]) / tau
        col = np.array([z_a[j] @ z_b[i] for j in range(n)]) / tau
        out[i] = 0.5 * ((logsumexp(row) - row[i]) + (logsumexp(col) - col[i]))
    return out


@pytest.mark.parametrize("normalize", [True, False])
def test_matches_reference_with_batch_dims(normalize: bool, device) -> None:
    gen = torch.Generator().manual_seed(0)
    z_a = torch.randn(3, 7, 5, generator=gen, dtype=torch.float64).to(device)
    z_b = torch.randn(3, 7, 5, generator=gen, dtype=torch.float64).to(device)
    per_pair = info_nce_loss(z_a, z_b, 0.3, normalize=normalize, reduction="none")
    expected = np.stack(
        [reference_info_nce(z_a[i].cpu().numpy(), z_b[i].cpu().numpy(), 0.3, normalize)
         for i in range(3)]
    )  # fmt: skip
    np.testing.assert_allclose(per_pair.cpu().numpy(), expected, rtol=1e-12, atol=1e-12)
    mean = info_nce_loss(z_a, z_b, 0.3, normalize=normalize)
    total = info_nce_loss(z_a, z_b, 0.3, normalize=normalize, reduction="sum")
    assert mean.item() == pytest.approx(expected.mean(), rel=1e-12)
    assert total.item() == pytest.approx(expected.sum(), rel=1e-12)


@pytest.mark.parametrize("n_pairs,tau", [(2, 1.0), (8, 0.1), (30, 0.5)])
def test_closed_form_for_orthonormal_pairs(n_pairs: int, tau: float, device) -> None:
    # z_a = z_b = e_i: positives score 1/tau, negatives 0, so L = log(1 + (N - 1) exp(-1/tau)).
    eye = torch.eye(n_pairs, dtype=torch.float64, device=device)
    z = torch.cat([eye, torch.zeros(n_pairs, 3, dtype=torch.float64, device=device)], 1)
    loss = info_nce_loss(z, z.clone(), tau)
    assert loss.item() == pytest.approx(math.log1p((n_pairs - 1) * math.exp(-1.0 / tau)), rel=1e-6)


def test_symmetric_and_permutation_invariant(device) -> None:
    gen = torch.Generator().manual_seed(1)
    z_a = torch.randn(10, 4, generator=gen, dtype=torch.float64).to(device)
    z_b = torch.randn(10, 4, generator=gen, dtype=torch.float64).to(device)
    loss = info_nce_loss(z_a, z_b, 0.2)
    assert info_nce_loss(z_b, z_a, 0.2).item() == pytest.approx(loss.item(), rel=1e-13)
    perm = torch.randperm(10, generator=gen).to(device)
    assert info_nce_loss(z_a[perm], z_b[perm], 0.2).item() == pytest.approx(loss.item(), rel=1e-13)
    # Breaking the pairing makes the loss larger for well-aligned pairs.
    aligned = z_a + 0.01 * z_b
    assert info_nce_loss(z_a, aligned, 0.2) < info_nce_loss(z_a, aligned[perm], 0.2)


def test_gradcheck_float64(device) -> None:
    gen = torch.Generator().manual_seed(2)
    z_a = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    z_b = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    tau = torch.tensor(0.4, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, t: info_nce_loss(a, b, t), (z_a, z_b, tau))


def test_module_learnable_temperature_float32(device) -> None:
    gen = torch.Generator().manual_seed(3)
    z_a = torch.randn(6, 4, generator=gen).to(device)
    z_b = torch.randn(6, 4, generator=gen).to(device)
    module = InfoNCELoss(0.25, learnable_temperature=True).to(device)
    loss = module(z_a, z_b)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(info_nce_loss(z_a, z_b, 0.25).item(), rel=1e-6)
    loss.backward()
    assert module.log_temperature.grad is not None and module.log_temperature.grad.abs() > 0


def test_value_errors(device) -> None:
    z = torch.randn(4, 3, device=device)
    with pytest.raises(ValueError, match="N >= 2"):
        info_nce_loss(z[:1], z[:1])
    with pytest.raises(ValueError, match="same shape"):
        info_nce_loss(z, z[:, :2])
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(z, z, 0.0)
    with pytest.raises(ValueError, match="reduction"):
        info_nce_loss(z, z, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        info_nce_loss(z, z.double())
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(-1.0)
