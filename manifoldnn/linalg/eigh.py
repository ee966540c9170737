r"""Differentiable spectral functions with backward passes that stay finite at repeated eigenvalues.

``torch.linalg.eigh``'s backward divides by eigenvalue gaps :math:`\lambda_j - \lambda_i` and returns
``inf``/``NaN`` when two eigenvalues coincide, which happens for every projector
:math:`P = Y Y^\top` (eigenvalue 1 repeated p times, 0 repeated n - p times).  :func:`eigh_top`
returns the top-p eigenpairs with the backward of Ionescu, Vantzos & Sminchisescu (ICCV 2015,
"Matrix backpropagation for deep networks with structured layers", Prop. 2),

.. math::

    \bar A = \operatorname{sym}\Big(V \big(F \circ (V^\top \bar U)\big) U^\top
             + U \operatorname{diag}(\bar\lambda) U^\top\Big),
    \qquad F_{ij} = \frac{\lambda_j - \lambda_i}{(\lambda_j - \lambda_i)^2 + \varepsilon},

where :math:`A = V \operatorname{diag}(\lambda) V^\top` is the full decomposition, :math:`U` the p
columns of V with the largest eigenvalues, :math:`\bar U, \bar\lambda` the incoming gradients and
:math:`F_{ii} = 0`.  The exact kernel :math:`1/(\lambda_j - \lambda_i)` is replaced by its
Lorentzian broadening (Liao, Liu, Wang & Xiang, Phys. Rev. X 9, 031041 (2019), "Differentiable
programming tensor networks", Lorentzian broadening of the eigensolver backward): identical to the exact formula when the gaps are much
larger than :math:`\sqrt{\varepsilon}`, bounded by :math:`1 / (2\sqrt{\varepsilon})` always, and
zero for exactly equal eigenvalues.

Two consequences matter for Grassmann layers:

* For a loss that depends on the span of U only (through :math:`U U^\top`, principal angles, ...),
  :math:`U^\top \bar U` is symmetric, so the within-block terms (both eigenvalues among the top p,
  where repeated eigenvalues live for projector inputs) cancel under ``sym`` whatever F is there; the
  gradient is then exact as soon as :math:`\lambda_p - \lambda_{p+1} \gg \sqrt{\varepsilon}`.
* The broadening ``eps`` is relative: :math:`\varepsilon = (\text{rel} \cdot \max(1, \max_i
  |\lambda_i|))^2` with ``rel`` 1e-6 in float32 and 1e-10 in float64 by default (below the eigenvalue
  accuracy of each precision, so only gaps that are numerically zero are regularised).
"""

from __future__ import annotations

import torch

from ..validation import check_nonnegative_float
from .basic import fix_column_signs, newton_schulz_step, sym
from .tolerances import HALF_DTYPES, tolerance

__all__ = ["eigh_top"]


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its entry of largest magnitude is positive (a locally constant sign)."""
    index = vectors.abs().argmax(dim=-2, keepdim=True)
    return fix_column_signs(vectors, torch.gather(vectors, -2, index).squeeze(-2))


class _EighTop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, p: int, broadening: float):
        values, vectors = torch.linalg.eigh(sym(a))
        vectors = _fix_signs(vectors)
        top_values = values[..., -p:].flip(-1)
        top_vectors = vectors[..., -p:].flip(-1)
        # One Newton-Schulz step brings the orthonormality error of a low-precision eigh to
        # rounding level; it moves U by O(its error) only, so the backward treats it as the identity.
        top_vectors = newton_schulz_step(top_vectors)
        ctx.save_for_backward(values, vectors)
        ctx.p = p
        ctx.broadening = broadening
        return top_values, top_vectors

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor | None, grad_vectors: torch.Tensor | None):
        values, vectors = ctx.saved_tensors
        p = ctx.p
        top_values = values[..., -p:].flip(-1)
        top_vectors = vectors[..., -p:].flip(-1)
        grad_a = torch.zeros_like(vectors)
        if grad_vectors is not None:
            scale = values.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
            eps = (ctx.broadening * scale).square().unsqueeze(-1)
            # gap[i, j] = lambda_j(top) - lambda_i(all); F = gap / (gap^2 + eps), zero on the diagonal.
            gap = top_values.unsqueeze(-2) - values.unsqueeze(-1)
            kernel = torch.where(gap == 0, torch.zeros_like(gap), gap / (gap.square() + eps))
            projected = vectors.transpose(-1, -2) @ grad_vectors
            grad_a = grad_a + vectors @ (kernel * projected) @ top_vectors.transpose(-1, -2)
        if grad_values is not None:
            grad_a = grad_a + (top_vectors * grad_values.unsqueeze(-2)) @ top_vectors.transpose(
                -1, -2
            )
        return sym(grad_a), None, None


def eigh_top(
    a: torch.Tensor, p: int, *, broadening: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Top-p eigenpairs of the symmetric part of ``a`` with a gap-safe backward.

    Args:
        a: matrices ``(..., n, n)``; the function is evaluated at :math:`\operatorname{sym}(a)`, so
            the returned gradient is that of ``a -> f(sym(a))`` (symmetric).
        p: number of eigenpairs, ``1 <= p <= n``.
        broadening: relative Lorentzian broadening (see the module docstring).
            Default: ``None`` (``tolerance("eigh_broadening", a.dtype)``).

    Returns:
        ``(values, vectors)``: ``values (..., p)`` in descending order; ``vectors (..., n, p)``
        orthonormal, column k the eigenvector of ``values[..., k]``, each column signed so that its
        entry of largest magnitude is positive.

    Raises:
        ValueError: if ``a`` is not square or ``p`` is out of range.
    """
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"eigh_top needs square matrices (..., n, n), got shape {tuple(a.shape)}")
    n = a.shape[-1]
    if not 1 <= p <= n:
        raise ValueError(f"eigh_top needs 1 <= p <= n = {n}, got p = {p}")
    if not a.is_floating_point():
        raise ValueError(f"eigh_top needs a floating-point tensor, got {a.dtype}")
    if a.dtype in HALF_DTYPES:  # no half eigensolver: evaluated in float32, returned as the input
        values, vectors = eigh_top(a.float(), p, broadening=broadening)
        return values.to(a.dtype), vectors.to(a.dtype)
    if broadening is None:
        broadening = tolerance("eigh_broadening", a.dtype)
    check_nonnegative_float(broadening, "broadening")
    return _EighTop.apply(a, p, broadening)
