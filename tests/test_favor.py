"""FAVOR+: unbiased kernel estimate, causal form equal to the non-causal one on each prefix, no
dependence on the future, orthogonal feature blocks, redraw, gradcheck, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from manifoldnn.models.favor import (
    favor_attention,
    orthogonal_random_features,
    positive_random_features,
)

DTYPES = [torch.float32, torch.float64]


def _sphere(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def test_orthogonal_blocks_and_redraw():
    omega = orthogonal_random_features(10, 4, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64)  # fmt: skip
    assert omega.shape == (10, 4)
    for start in (0, 4):
        block = F.normalize(omega[start : start + 4], dim=-1)
        torch.testing.assert_close(block @ block.T, torch.eye(4, dtype=torch.float64))
    again = orthogonal_random_features(10, 4, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64)  # fmt: skip
    redrawn = orthogonal_random_features(10, 4, generator=torch.Generator().manual_seed(1),
                                         dtype=torch.float64)  # fmt: skip
    assert torch.equal(omega, again) and not torch.allclose(omega, redrawn)


def test_kernel_estimate_is_unbiased():
    """Mean of phi(x).phi(y) over independent draws is exp(x.y) within 5 standard errors."""
    x, y = 0.7 * _sphere(2, 5, seed=1)
    draws = 2000
    gen = torch.Generator().manual_seed(2)
    estimates = torch.stack([
        (positive_random_features(x, w, False) * positive_random_features(y, w, False)).sum()
        for w in (orthogonal_random_features(8, 5, generator=gen, dtype=torch.float64)
                  for _ in range(draws))
    ])  # fmt: skip
    error = abs(float(estimates.mean()) - math.exp(float(x @ y)))
    assert error < 5 * float(estimates.std()) / math.sqrt(draws)


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_equals_noncausal_on_each_prefix(dtype):
    q, k = _sphere(2, 29, 6, seed=3, dtype=dtype), _sphere(2, 29, 6, seed=4, dtype=dtype)
    v = torch.randn(2, 29, 3, generator=torch.Generator().manual_seed(5), dtype=dtype)
    omega = orthogonal_random_features(
        32, 6, generator=torch.Generator().manual_seed(6), dtype=dtype
    )
    causal = favor_attention(q, k, v, omega, tau=0.5, causal=True, chunk_size=8)
    # the ratio of two positive sums of at most T terms: relative rounding of order T eps each
    tol = 50 * 29 * torch.finfo(dtype).eps * float(v.abs().max())
    for t in (0, 7, 8, 20, 28):
        prefix = favor_attention(q[:, : t + 1], k[:, : t + 1], v[:, : t + 1], omega, tau=0.5)
        torch.testing.assert_close(causal[:, t], prefix[:, -1], rtol=0, atol=tol)


def test_causal_output_does_not_depend_on_the_future():
    q, k = _sphere(1, 40, 6, seed=7), _sphere(1, 40, 6, seed=8)
    v = torch.randn(1, 40, 3, dtype=torch.float64)
    omega = orthogonal_random_features(16, 6, generator=torch.Generator().manual_seed(9),
                                       dtype=torch.float64)  # fmt: skip
    t = 17
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    k2[:, t + 1 :] *= 5.0  # large future keys: a look-ahead stabiliser would change every output
    q2[:, t + 1 :] = -q2[:, t + 1 :]
    v2[:, t + 1 :] += 3.0
    a = favor_attention(q, k, v, omega, tau=0.2, causal=True, chunk_size=8)
    b = favor_attention(q2, k2, v2, omega, tau=0.2, causal=True, chunk_size=8)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_approaches_softmax_attention_with_many_features():
    """Relative error falls as the number of features grows (tau = 1, where the variance is mild)."""
    q, k = _sphere(64, 8, seed=10), _sphere(64, 8, seed=11)
    v = torch.randn(64, 4, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    exact = torch.softmax(q @ k.T, -1) @ v
    errors = []
    for m in (8, 4096):
        omega = orthogonal_random_features(m, 8, generator=torch.Generator().manual_seed(m),
                                           dtype=torch.float64)  # fmt: skip
        errors.append(float((favor_attention(q, k, v, omega) - exact).norm() / exact.norm()))
    assert errors[1] < errors[0] / 4  # Monte Carlo error ~ 1/sqrt(m): 22x fewer in expectation


def test_gradcheck():
    q = _sphere(1, 6, 3, seed=13).requires_grad_()
    k = _sphere(1, 6, 3, seed=14).requires_grad_()
    v = torch.randn(1, 6, 2, dtype=torch.float64, requires_grad=True)
    omega = orthogonal_random_features(5, 3, generator=torch.Generator().manual_seed(15),
                                       dtype=torch.float64)  # fmt: skip
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v, c=causal: favor_attention(
                q, k, v, omega, tau=0.5, causal=c, chunk_size=4
            ),
            (q, k, v),
        )


def test_bad_input():
    q = _sphere(5, 4)
    with pytest.raises(ValueError, match="omega"):
        favor_attention(q, q, q, torch.randn(8, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="tau"):
        favor_attention(q, q, q, torch.randn(8, 4, dtype=torch.float64), tau=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        favor_attention(q, q, q, torch.randn(8, 4, dtype=torch.float64), causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="m must"):
        orthogonal_random_features(0, 4)
