r"""Batched conjugate gradients for symmetric positive definite operators on matrices.

The implicit backward passes of the Karcher mean solve :math:`H \lambda = b` with the closed-form
Riemannian Hessian :math:`H` of the Karcher cost at the mean, one system per set of points: a
batch of small symmetric positive definite operators on ``(n, p)`` or ``(n, n)`` matrices, applied
as callables. Conjugate gradients (Hestenes & Stiefel 1952) need only those products, and converge
in at most the dimension of the tangent space in exact arithmetic (Nocedal & Wright 2006,
Thm. 5.1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["conjugate_gradient"]


def _frobenius(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum((-2, -1))


def conjugate_gradient(
    operator: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    *,
    rtol: float,
    max_iter: int,
    inner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _frobenius,
) -> tuple[torch.Tensor, bool]:
    r"""Solve :math:`A x = b` for a batch of symmetric positive definite operators.

    Each system stops once its residual norm is at most ``rtol`` times :math:`\|b\|`; the others
    go on. Negative or zero curvature :math:`d^\top A d \le 0` in a system that has not converged
    ends the solve (the operator is then not positive definite there).

    Args:
        operator: ``A``, applied to a batch of matrices ``(B, n, m) -> (B, n, m)``.
        rhs: the right-hand sides ``b``, ``(B, n, m)``.
        rtol: the relative residual at which a system stops.
        max_iter: the most iterations (the dimension of the space on which ``A`` acts suffices in
            exact arithmetic).
        inner: the inner product ``(B, n, m), (B, n, m) -> (B,)``. Default: the Frobenius one.

    Returns:
        ``(x, converged)``: the iterate ``(B, n, m)``, and whether every system reached ``rtol``
        without meeting non-positive curvature. Reads the host once per iteration (this is meant
        for backward passes, not forwards).
    """
    target = rtol * inner(rhs, rhs).sqrt()
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rr = inner(residual, residual)
    expand = (slice(None),) + (None,) * (rhs.dim() - 1)
    for _ in range(max_iter):
        live = rr.sqrt() > target
        if not bool(live.any()):
            return solution, True
        product = operator(direction)
        curvature = inner(direction, product)
        if bool((curvature[live] <= 0).any()):
            return solution, False
        alpha = torch.where(live, rr / torch.where(live, curvature, 1.0), 0.0)
        solution = solution + alpha[expand] * direction
        residual = residual - alpha[expand] * product
        rr_new = inner(residual, residual)
        beta = torch.where(live, rr_new / torch.where(live, rr, 1.0), 0.0)
        direction = residual + beta[expand] * direction
        rr = rr_new
    return solution, bool((rr.sqrt() <= target).all())
