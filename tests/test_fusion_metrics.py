"""Retrieval recall, read-back metrics and whitened CCA on planted data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifoldnn.layers import whitened_cca
from manifoldnn.utils.metrics import (
    cross_modal_recall,
    linear_probe_accuracy,
    recall_at_k,
    relative_error,
    token_recovery_rate,
)

DTYPES = [torch.float32, torch.float64]


def brute_force_recall(query: np.ndarray, key: np.ndarray, k: int) -> float:
    """Independent reference: sort every query's keys by cosine, ties against the query."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    kk = key / np.linalg.norm(key, axis=1, keepdims=True)
    hits = 0
    for i in range(len(q)):
        scores = kk @ q[i]
        better = sum(1 for j in range(len(kk)) if j != i and scores[j] >= scores[i])
        hits += better < k
    return hits / len(q)


@pytest.mark.parametrize("dtype", DTYPES)
def test_recall_matches_brute_force(dtype: torch.dtype, device) -> None:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    key = query + 0.8 * torch.randn(40, 5, generator=generator, dtype=torch.float64)
    got = recall_at_k(query.to(device, dtype), key.to(device, dtype), (1, 3, 10))
    for k in (1, 3, 10):
        assert got[k] == pytest.approx(brute_force_recall(query.numpy(), key.numpy(), k))


def test_recall_planted_answers(device) -> None:
    n = 12
    eye = torch.eye(n, dtype=torch.float64, device=device)
    assert recall_at_k(eye, eye, (1,)) == {1: 1.0}
    # key i = e_i + 2 e_{i+1}: query e_i scores 1/sqrt(5) on its key, 2/sqrt(5) on key i - 1
    # and 0 on every other key, so exactly one key ranks above the true one
    planted = eye + 2.0 * torch.roll(eye, 1, dims=1)
    assert recall_at_k(eye, planted, (1, 2)) == {1: 0.0, 2: 1.0}
    circle = torch.randn(n, 2, dtype=torch.float64, device=device)
    constant = torch.ones(
        n, 2, dtype=torch.float64, device=device
    )  # every key ties: no credit until k = N
    assert recall_at_k(circle, constant, (1, n - 1, n)) == {1: 0.0, n - 1: 0.0, n: 1.0}


def test_cross_modal_recall_both_ways(device) -> None:
    a = torch.eye(4, device=device)
    b = torch.eye(4, device=device)[[0, 1, 3, 2]]  # items 2 and 3 swapped on the b side
    got = cross_modal_recall(a, b, (1,), names=("t", "s"))
    assert got == {"t2s_R@1": 0.5, "s2t_R@1": 0.5}


@pytest.mark.parametrize("dtype", DTYPES)
def test_relative_error_planted(dtype: torch.dtype, device) -> None:
    x = torch.randn(50, 3, 4, dtype=dtype, generator=torch.Generator().manual_seed(1)).to(device)
    eps = torch.finfo(dtype).eps
    assert relative_error(x, x) == 0.0
    assert relative_error(x, x.mean(0).expand_as(x)) == pytest.approx(1.0, abs=50 * eps)
    mean = x.mean(0)
    halfway = mean + 0.5 * (x - mean)  # misses a quarter of the variance
    assert relative_error(x, halfway) == pytest.approx(0.25, abs=50 * eps)


def test_token_recovery_rate_planted(device) -> None:
    tokens = torch.arange(40, device=device).view(10, 4)
    wrong = tokens.clone()
    wrong.view(-1)[[3, 17, 30]] += 1
    assert token_recovery_rate(tokens, tokens) == 1.0
    assert token_recovery_rate(tokens, wrong) == 37 / 40


def test_linear_probe_planted(device) -> None:
    generator = torch.Generator().manual_seed(2)
    classes = 7
    labels = torch.randint(0, classes, (300,), generator=generator).to(device)
    test_labels = torch.randint(0, classes, (100,), generator=generator).to(device)
    mixing = torch.randn(classes, 12, generator=generator, dtype=torch.float64).to(device)
    features = torch.nn.functional.one_hot(labels, classes).double() @ mixing
    test_features = torch.nn.functional.one_hot(test_labels, classes).double() @ mixing
    assert linear_probe_accuracy(features, labels, test_features, test_labels, classes) == 1.0
    # features that carry nothing but one constant: the probe predicts a single class
    flat = torch.zeros(300, 3, dtype=torch.float64, device=device)
    flat_test = torch.zeros(100, 3, dtype=torch.float64, device=device)
    majority = int(torch.bincount(labels, minlength=classes).argmax())
    expected = float((test_labels == majority).double().mean())
    assert linear_probe_accuracy(flat, labels, flat_test, test_labels, classes) == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_whitened_cca_variates_are_white_and_diagonal(dtype: torch.dtype, device) -> None:
    generator = torch.Generator().manual_seed(3)
    latent = torch.randn(2000, 3, generator=generator, dtype=torch.float64)
    a = latent @ torch.randn(3, 6, generator=generator, dtype=torch.float64)
    a = a + 0.5 * torch.randn(2000, 6, generator=generator, dtype=torch.float64)
    b = latent @ torch.randn(3, 5, generator=generator, dtype=torch.float64)
    b = b + 0.5 * torch.randn(2000, 5, generator=generator, dtype=torch.float64)
    a, b = a.to(device), b.to(device)
    w_a, w_b, mean_a, mean_b = whitened_cca(a.to(dtype), b.to(dtype), 3, regularization=0.0)
    assert w_a.dtype == dtype and w_a.shape == (6, 3) and w_b.shape == (5, 3)
    assert w_a.device.type == device.type
    z_a = (a - mean_a.double()) @ w_a.double()
    z_b = (b - mean_b.double()) @ w_b.double()
    n = len(a) - 1
    tol = 1e3 * torch.finfo(dtype).eps  # float32 weights: rounding of (6, 3) products, cond ~10
    eye = torch.eye(3, dtype=torch.float64, device=device)
    torch.testing.assert_close(z_a.T @ z_a / n, eye, atol=tol, rtol=0)
    torch.testing.assert_close(z_b.T @ z_b / n, eye, atol=tol, rtol=0)
    cross = z_a.T @ z_b / n
    correlations = cross.diagonal()
    torch.testing.assert_close(cross, torch.diag(correlations), atol=tol, rtol=0)
    assert torch.all(correlations[:-1] >= correlations[1:] - tol)


def test_value_errors() -> None:
    with pytest.raises(ValueError, match="query"):
        recall_at_k(torch.randn(3), torch.randn(3, 2))
    with pytest.raises(ValueError, match="same N"):
        recall_at_k(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(torch.randn(3, 2), torch.randn(3, 2), (0,))
    with pytest.raises(ValueError, match="constant"):
        relative_error(torch.ones(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="integer"):
        token_recovery_rate(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="rank"):
        whitened_cca(torch.randn(10, 3), torch.randn(10, 2), 3)
