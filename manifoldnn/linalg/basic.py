"""Small differentiable linear-algebra helpers shared by the geometry and the layers.

Every function accepts any number of leading batch dimensions and any floating dtype/device.
"""

from __future__ import annotations

import math

import torch

from .tolerances import HALF_DTYPES

__all__ = ["sym", "qr_positive", "eye_like", "symmetric_vectorize"]


def sym(a: torch.Tensor) -> torch.Tensor:
    """Symmetric part ``(A + A^T) / 2`` of ``a`` with shape ``(..., n, n)``."""
    return 0.5 * (a + a.transpose(-1, -2))


def eye_like(a: torch.Tensor) -> torch.Tensor:
    """Identity matrix of shape ``(..., n, n)`` broadcast to ``a``'s leading dims, dtype and device."""
    n = a.shape[-1]
    return torch.eye(n, dtype=a.dtype, device=a.device).expand(a.shape[:-2] + (n, n))


def qr_positive(a: torch.Tensor, *, check_rank: bool = False) -> torch.Tensor:
    """Orthonormal factor Q of the QR decomposition of ``a`` with ``diag(R) >= 0``.

    Args:
        a: tensor of shape ``(..., n, p)`` with ``n >= p`` and full column rank.
        check_rank: in eager mode, raise a ``ValueError`` when some matrix is numerically
            rank-deficient (smallest ``|R_kk|`` at most ``n eps`` times the largest): its Q is then
            not a function of ``a`` and the QR backward divides by that ``R_kk``. Costs one host
            synchronisation. Default: False.

    Returns:
        tensor of shape ``(..., n, p)`` with orthonormal columns spanning the columns of ``a``.

    The sign convention makes Q a function of ``a`` (the Gram-Schmidt factor): an input with
    orthonormal columns comes back unchanged, and the result is differentiable (PyTorch's QR
    backward composed with a locally constant sign flip). Half-precision inputs are factored in
    float32 and returned in their own dtype.
    """
    if a.dim() < 2 or a.shape[-2] < a.shape[-1]:
        raise ValueError(
            f"qr_positive needs a tall matrix (..., n, p) with n >= p, got {tuple(a.shape)}"
        )
    if a.dtype in HALF_DTYPES:  # no half QR kernel: evaluated in float32, returned as the input
        return qr_positive(a.float(), check_rank=check_rank).to(a.dtype)
    q, r = torch.linalg.qr(a, mode="reduced")
    diagonal = torch.diagonal(r, dim1=-2, dim2=-1)
    if check_rank and a.numel() and not torch.compiler.is_compiling():
        size = diagonal.abs()
        floor = a.shape[-2] * torch.finfo(a.dtype).eps * size.amax(-1)
        if bool((size.amin(-1) <= floor).any()):
            raise ValueError(
                f"input of shape (..., n, p) = {tuple(a.shape)} is rank-deficient: some matrix has "
                "fewer than p linearly independent columns, so it spans no p-dimensional subspace"
            )
    signs = torch.sign(diagonal)
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return q * signs.unsqueeze(-2)


def symmetric_vectorize(s: torch.Tensor) -> torch.Tensor:
    r"""Upper triangle of symmetric matrices with off-diagonal entries times :math:`\sqrt 2`.

    ``(..., n, n) -> (..., n (n + 1) / 2)``.  The :math:`\sqrt 2` makes the map an isometry from the
    Frobenius inner product, :math:`\langle \operatorname{vec} A, \operatorname{vec} B \rangle =
    \operatorname{tr}(A B)` (Arsigny et al. 2007, "Geometric means in a novel vector space structure
    on symmetric positive-definite matrices", vectorisation of symmetric matrices; the projection
    metric of the Grassmannian, Hamm & Lee 2008, is then Euclidean on the vectors).
    """
    if s.dim() < 2 or s.shape[-1] != s.shape[-2]:
        raise ValueError(f"symmetric_vectorize needs (..., n, n), got shape {tuple(s.shape)}")
    n = s.shape[-1]
    rows, cols = torch.triu_indices(n, n, device=s.device)
    scale = torch.where(
        rows == cols,
        torch.ones((), dtype=s.dtype, device=s.device),
        torch.full((), math.sqrt(2.0), dtype=s.dtype, device=s.device),
    )
    # index_select on the flattened matrices: its backward is a plain index_add
    return s.flatten(-2).index_select(-1, rows * n + cols) * scale
