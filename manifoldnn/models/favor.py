r"""FAVOR+: softmax-kernel attention in linear time through positive orthogonal random features.

Choromanski et al. 2021, "Rethinking Attention with Performers" (ICLR), section 2.3 (positive random
features, Lemma 1) and 2.4 (orthogonal random features): for :math:`\omega \sim \mathcal{N}(0, I_d)`,

.. math::

    \exp(x^\top y) = \mathbb{E}_\omega\bigl[\phi(x)^\top \phi(y)\bigr],\qquad
    \phi(x) = \tfrac{1}{\sqrt{m}} \exp\bigl(\Omega x - \tfrac{1}{2}\|x\|^2\bigr),

so softmax attention with temperature :math:`\tau` is estimated as
:math:`\phi(Q')\,(\phi(K')^\top V) / \phi(Q')\,(\phi(K')^\top \mathbf{1})` with
:math:`Q' = Q/\sqrt{\tau}`, :math:`K' = K/\sqrt{\tau}`. The causal form keeps the two prefix sums of
:func:`~manifoldnn.models.linear_attention.causal_linear_attention` (chunked, any ``T``).

Stabilisation that does not look ahead: each query's features are divided by their own maximum
(a factor common to its numerator and denominator, so it cancels exactly); keys get no shift, since a
shift shared by all keys would have to be their maximum over the whole sequence, which leaks the
future into the causal form (performer-pytorch issue 82). A key feature's exponent is
:math:`\omega^\top k' - \|k'\|^2/2`, whose mean is negative and whose spread is :math:`\|k'\|`.

Sizes: ``T`` tokens, ``d`` features of queries and keys, ``m`` random features, ``D`` values.
"""

from __future__ import annotations

import math

import torch

from manifoldnn.models.linear_attention import causal_linear_attention

__all__ = ["favor_attention", "orthogonal_random_features", "positive_random_features"]


def orthogonal_random_features(
    m: int,
    d: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""``m`` Gaussian directions in ``R^d``, orthogonal within blocks of ``d`` (Performer, sec. 2.4).

    Each block is the orthogonal factor of a Gaussian matrix (signs fixed by the diagonal of ``R``,
    so that it is Haar-distributed), its rows rescaled by the norms of independent Gaussian vectors so
    that every row is marginally :math:`\mathcal{N}(0, I_d)`. Drawing again with another generator
    state is the "feature redraw".

    Args:
        m: number of features (positive).
        d: dimension (positive).
        generator: random generator (on the CPU). Default: ``None`` (the global one).
        device, dtype: of the result. Default: ``None``.

    Shape:
        - Output: ``(m, d)``.
    """
    for name, value in (("m", m), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    blocks = []
    for _ in range(math.ceil(m / d)):
        gaussian = torch.randn(d, d, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        blocks.append(q.T * torch.sign(torch.diagonal(r))[:, None])
    directions = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=-1, keepdim=True)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return (directions * norms).to(device=device, dtype=dtype)


def positive_random_features(x: torch.Tensor, omega: torch.Tensor, is_query: bool) -> torch.Tensor:
    r"""Positive random features :math:`\exp(\Omega x - \|x\|^2/2)/\sqrt{m}` (Performer, Lemma 1).

    Queries (``is_query=True``) are divided by the maximum of their own features, which cancels in
    attention; keys are not rescaled (see the module docstring).

    Args:
        x: ``(..., T, d)``.
        omega: ``(m, d)`` from :func:`orthogonal_random_features`.
        is_query: whether ``x`` holds queries.

    Shape:
        - Output: ``(..., T, m)``.
    """
    exponent = x @ omega.transpose(-1, -2) - 0.5 * (x * x).sum(-1, keepdim=True)
    if is_query:
        exponent = exponent - exponent.amax(-1, keepdim=True).detach()
    return torch.exp(exponent) / math.sqrt(omega.shape[0])


def favor_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    omega: torch.Tensor,
    *,
    tau: float | torch.Tensor = 1.0,
    causal: bool = False,
    chunk_size: int = 64,
) -> torch.Tensor:
    r"""FAVOR+ estimate of :math:`\mathrm{softmax}(QK^\top/\tau)V`, non-causal or causal.

    .. math::

        \widehat{o}_t = \frac{\sum_{s} \phi(q_t')^\top \phi(k_s')\, v_s}
                             {\sum_{s} \phi(q_t')^\top \phi(k_s')},\qquad
        q' = q/\sqrt{\tau},\ k' = k/\sqrt{\tau},

    the sums over all ``s`` or over ``s <= t`` (``causal``), the latter as prefix sums, so that output
    ``t`` depends on inputs up to ``t`` only. Choromanski et al. 2021, eq. (7) and section 2.6.

    Args:
        q, k: ``(..., T, d)``; on the unit sphere, :math:`\langle q, k\rangle/\tau` is the score of the
            chordal distance :math:`-\|q-k\|^2/(2\tau)` up to a constant per query.
        v: ``(..., T, D)``.
        omega: random features ``(m, d)`` (:func:`orthogonal_random_features`).
        tau: temperature, positive (a float or a tensor broadcastable to the leading dimensions
            with two trailing singleton dimensions). Default: 1.0.
        causal: mask the future. Default: ``False``.
        chunk_size: chunk length of the causal prefix sums. Default: 64.

    Shape:
        - Output: ``(..., T, D)``.
    """
    if omega.dim() != 2 or omega.shape[-1] != q.shape[-1] or k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"omega must have shape (m, d) with d = {q.shape[-1]} (the features of q and k), "
            f"got {tuple(omega.shape)}"
        )
    if isinstance(tau, (int, float)) and not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    scale = tau**-0.5
    phi_q = positive_random_features(q * scale, omega, is_query=True)
    phi_k = positive_random_features(k * scale, omega, is_query=False)
    ones = torch.ones_like(v[..., :1]).expand(*v.shape[:-1], 1)
    values = torch.cat([v, ones], dim=-1)  # numerator and denominator in one pass
    if causal:
        both = causal_linear_attention(phi_q, phi_k, values, chunk_size=chunk_size)
    else:
        both = phi_q @ (phi_k.transpose(-1, -2) @ values)
    return both[..., :-1] / both[..., -1:]
