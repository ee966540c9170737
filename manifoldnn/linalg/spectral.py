"""Spectral functions of symmetric matrices with a gap-safe backward pass.

``F(S) = Q f(Lambda) Q^T`` for symmetric ``S = Q Lambda Q^T``. The backward pass uses the
Daleckii-Krein formula (Higham, *Functions of Matrices*, 2008, Thm. 3.11):

    dF = Q (L o (Q^T dS Q)) Q^T,   L_ij = (f(l_i) - f(l_j)) / (l_i - l_j),   L_ii = f'(l_i),

with the divided difference replaced by ``f'`` at the midpoint when two eigenvalues (nearly)
coincide. Unlike back-propagating through ``torch.linalg.eigh``, nothing is divided by an
eigenvalue gap, so the gradient stays finite for repeated eigenvalues (e.g. ``S = 0``).

The scalar functions used by the Grassmann exponential and logarithm are analytic in the squared
singular value ``lam = sigma^2 >= 0``; each comes with a Taylor branch near ``lam = 0`` where the
closed form cancels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .tolerances import HALF_DTYPES, tolerance

__all__ = [
    "ScalarFn",
    "symmetric_functions",
    "ACOS_SQRT_OVER_SIN_COS",
    "COS_SQRT",
    "SINC_SQRT",
    "LOG",
    "EXP",
    "SQRT",
    "INV_SQRT",
    "sym_logm",
    "sym_expm",
    "symmetric_function_derivative",
]

ScalarFn = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _series(lam: torch.Tensor, coeffs: Sequence[float]) -> torch.Tensor:
    out = torch.full_like(lam, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * lam + c
    return out


def _branch(lam, small_coeffs, closed_form):
    """Evaluate ``closed_form`` away from 0 and a Taylor polynomial near 0 (NaN-free in both)."""
    small = lam.abs() < tolerance("taylor_switch", lam.dtype)
    safe = torch.where(small, torch.ones_like(lam), lam)
    return torch.where(small, _series(lam, small_coeffs), closed_form(safe))


# Each coefficient list is the Taylor series in lam around 0, enough terms for float64 at |lam| < 1e-2.
def _branch_at_one(lam, small_coeffs, closed_form):
    """``closed_form`` away from ``lam = 1`` (``lam`` floored at the smallest normal number, so the
    cut locus ``lam = 0`` stays finite) and a Taylor polynomial in ``1 - lam`` near 1 (rounding may
    put ``lam`` a little above 1 there)."""
    mu = 1.0 - lam
    small = mu.abs() < tolerance("taylor_switch", lam.dtype)
    safe = torch.where(small, torch.full_like(lam, 0.5), lam.clamp_min(torch.finfo(lam.dtype).tiny))
    return torch.where(small, _series(mu, small_coeffs), closed_form(safe))


# Taylor coefficients in mu = 1 - lam of asin(sqrt(mu)) / sqrt(mu (1 - mu)): 4^k k!^2 / (2k + 1)!
_ANGLE_OVER_SIN_COS = [
    1.0,
    2 / 3,
    8 / 15,
    16 / 35,
    128 / 315,
    256 / 693,
    1024 / 3003,
    2048 / 6435,
    32768 / 109395,
]


def acos_sqrt_over_sin_cos(lam: torch.Tensor) -> torch.Tensor:
    """``theta / (sin theta cos theta)`` at ``lam = cos^2 theta`` (= 1 at ``lam = 1``), i.e.
    ``acos(sqrt(lam)) / sqrt(lam (1 - lam))``."""
    return _branch_at_one(
        lam,
        _ANGLE_OVER_SIN_COS,
        lambda x: torch.acos(x.sqrt()) / (x * (1.0 - x)).sqrt(),
    )


def acos_sqrt_over_sin_cos_prime(lam: torch.Tensor) -> torch.Tensor:
    """Its derivative in ``lam``: ``-(1 + (1 - 2 lam) f) / (2 lam (1 - lam))``."""
    derivative = [-(k + 1) * c for k, c in enumerate(_ANGLE_OVER_SIN_COS[1:])]
    return _branch_at_one(
        lam,
        derivative,
        lambda x: -(1.0 + (1.0 - 2.0 * x) * acos_sqrt_over_sin_cos(x)) / (2.0 * x * (1.0 - x)),
    )


def cos_sqrt(lam: torch.Tensor) -> torch.Tensor:
    """``cos(sqrt(lam))``."""
    return _branch(
        lam,
        [1.0, -1 / 2, 1 / 24, -1 / 720, 1 / 40320, -1 / 3628800, 1 / 479001600],
        lambda x: torch.cos(x.sqrt()),
    )


def cos_sqrt_prime(lam: torch.Tensor) -> torch.Tensor:
    return _branch(
        lam,
        [-1 / 2, 2 / 24, -3 / 720, 4 / 40320, -5 / 3628800, 6 / 479001600],
        lambda x: -torch.sin(x.sqrt()) / (2.0 * x.sqrt()),
    )


def sinc_sqrt(lam: torch.Tensor) -> torch.Tensor:
    """``sin(sqrt(lam)) / sqrt(lam)`` (= 1 at 0)."""
    return _branch(
        lam,
        [1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800, 1 / 6227020800],
        lambda x: torch.sin(x.sqrt()) / x.sqrt(),
    )


def sinc_sqrt_prime(lam: torch.Tensor) -> torch.Tensor:
    return _branch(
        lam,
        [-1 / 6, 2 / 120, -3 / 5040, 4 / 362880, -5 / 39916800, 6 / 6227020800],
        lambda x: (torch.cos(x.sqrt()) - torch.sin(x.sqrt()) / x.sqrt()) / (2.0 * x),
    )


ACOS_SQRT_OVER_SIN_COS: ScalarFn = (acos_sqrt_over_sin_cos, acos_sqrt_over_sin_cos_prime)
COS_SQRT: ScalarFn = (cos_sqrt, cos_sqrt_prime)
SINC_SQRT: ScalarFn = (sinc_sqrt, sinc_sqrt_prime)


def _divided_differences(lam: torch.Tensor, f: ScalarFn) -> tuple[torch.Tensor, torch.Tensor]:
    fn, fprime = f
    values = fn(lam)
    li, lj = lam.unsqueeze(-1), lam.unsqueeze(-2)
    gap = li - lj
    scale = torch.maximum(li.abs(), lj.abs()).clamp_min(1.0)
    close = gap.abs() <= scale * tolerance("gap_merge", lam.dtype)
    safe_gap = torch.where(close, torch.ones_like(gap), gap)
    dd = (values.unsqueeze(-1) - values.unsqueeze(-2)) / safe_gap
    dd = torch.where(close, fprime(0.5 * (li + lj)), dd)
    return values, dd


def _eigh(s: torch.Tensor, factor: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of ``s``; for a Gram matrix ``s = A^T A`` given ``factor = A``, the eigenvalues
    are recomputed as the Rayleigh quotients ``||A q_i||^2`` of the eigenvectors: accurate relative
    to each eigenvalue (its eigenvector enters to second order), where ``eigh`` is accurate only
    to ``eps ||s||``, too coarse for a small eigenvalue."""
    lam, q = torch.linalg.eigh(s)
    if factor is not None:
        lam = (factor.detach() @ q).pow(2).sum(-2)
    return lam, q


class _SymmetricSpectralFunctions(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s: torch.Tensor, fns: tuple[ScalarFn, ...], factor: torch.Tensor | None):
        lam, q = _eigh(s, factor)
        outs, dds = [], []
        for f in fns:
            values, dd = _divided_differences(lam, f)
            outs.append((q * values.unsqueeze(-2)) @ q.transpose(-1, -2))
            dds.append(dd)
        ctx.save_for_backward(q, *dds)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        q, *dds = ctx.saved_tensors
        total = None
        for g, dd in zip(grads, dds):
            if g is None:
                continue
            gs = 0.5 * (g + g.transpose(-1, -2))
            term = dd * (q.transpose(-1, -2) @ gs @ q)
            total = term if total is None else total + term
        if total is None:
            return None, None, None
        return q @ total @ q.transpose(-1, -2), None, None


def symmetric_functions(
    s: torch.Tensor, *fns: ScalarFn, factor: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Apply scalar functions to a symmetric matrix ``s`` of shape ``(..., k, k)``.

    Args:
        s: symmetric tensor ``(..., k, k)``; only its symmetric part is used by the backward pass.
        *fns: pairs ``(f, f')`` of elementwise functions of the eigenvalues and their derivatives.
        factor: ``A (..., m, k)`` with ``s = A^T A``: the eigenvalues are then taken as the Rayleigh
            quotients ``||A q_i||^2`` (accurate also for eigenvalues far below ``eps ||s||``);
            gradients flow through ``s`` only. Default: ``None``.

    Returns:
        A tuple of tensors ``(..., k, k)``: ``Q f(Lambda) Q^T`` for each pair, from one
        eigendecomposition.
    """
    if s.dtype in HALF_DTYPES:  # no half eigensolver: evaluated in float32, returned as the input
        outs = symmetric_functions(
            s.float(), *fns, factor=None if factor is None else factor.float()
        )
        return tuple(out.to(s.dtype) for out in outs)
    if torch.is_grad_enabled() and s.requires_grad:
        return _SymmetricSpectralFunctions.apply(s, tuple(fns), factor)
    lam, q = _eigh(s, factor)
    qt = q.transpose(-1, -2)
    return tuple((q * f(lam).unsqueeze(-2)) @ qt for f, _ in fns)


LOG: ScalarFn = (torch.log, torch.reciprocal)
EXP: ScalarFn = (torch.exp, torch.exp)
SQRT: ScalarFn = (torch.sqrt, lambda x: 0.5 * torch.rsqrt(x))
INV_SQRT: ScalarFn = (torch.rsqrt, lambda x: -0.5 * torch.rsqrt(x) / x)


def sym_logm(s: torch.Tensor) -> torch.Tensor:
    r"""Matrix logarithm :math:`Q \log(\Lambda) Q^\top` of symmetric positive-definite ``s``
    ``(..., n, n)``, with the gap-safe Daleckii-Krein backward of :func:`symmetric_functions`."""
    return symmetric_functions(s, LOG)[0]


def sym_expm(s: torch.Tensor) -> torch.Tensor:
    r"""Matrix exponential :math:`Q \exp(\Lambda) Q^\top` of symmetric ``s`` ``(..., n, n)``, with the
    gap-safe Daleckii-Krein backward of :func:`symmetric_functions`."""
    return symmetric_functions(s, EXP)[0]


def symmetric_function_derivative(s: torch.Tensor, f: ScalarFn, e: torch.Tensor) -> torch.Tensor:
    r"""Fréchet derivative :math:`Df(S)[E] = Q (L \circ Q^\top E Q) Q^\top` of the spectral
    function ``f`` at symmetric ``s`` in the symmetric direction ``e`` (Daleckii-Krein; Higham,
    *Functions of Matrices*, 2008, Thm. 3.11), ``L`` the divided differences of ``f`` at the
    eigenvalues, with ``f'`` at the midpoint where two eigenvalues (nearly) coincide.

    Args:
        s: symmetric tensor ``(..., k, k)``.
        f: the pair ``(f, f')``.
        e: symmetric directions ``(..., k, k)``, broadcast against ``s``.

    Returns:
        ``(..., k, k)``. The gradient with respect to ``e`` is the same formula (the map is
        self-adjoint); the gradient with respect to ``s`` goes through ``torch.linalg.eigh`` and is
        finite only for distinct eigenvalues.
    """
    if s.dtype in HALF_DTYPES:
        return symmetric_function_derivative(s.float(), f, e.float()).to(s.dtype)
    lam, q = torch.linalg.eigh(s)
    _, dd = _divided_differences(lam, f)
    return q @ (dd * (q.transpose(-1, -2) @ e @ q)) @ q.transpose(-1, -2)
