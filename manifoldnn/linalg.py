"""Small differentiable linear-algebra helpers shared by the geometry and the layers.

Every function accepts any number of leading batch dimensions and any floating dtype/device.
"""

from __future__ import annotations

import torch

__all__ = ["sym", "qr_positive", "eye_like"]


def sym(a: torch.Tensor) -> torch.Tensor:
    """Symmetric part ``(A + A^T) / 2`` of ``a`` with shape ``(..., n, n)``."""
    return 0.5 * (a + a.transpose(-1, -2))


def eye_like(a: torch.Tensor) -> torch.Tensor:
    """Identity matrix of shape ``(..., n, n)`` broadcast to ``a``'s leading dims, dtype and device."""
    n = a.shape[-1]
    return torch.eye(n, dtype=a.dtype, device=a.device).expand(a.shape[:-2] + (n, n))


def qr_positive(a: torch.Tensor) -> torch.Tensor:
    """Orthonormal factor Q of the QR decomposition of ``a`` with ``diag(R) >= 0``.

    Parameters
    ----------
    a : tensor of shape ``(..., n, p)`` with ``n >= p`` and full column rank.

    Returns
    -------
    tensor of shape ``(..., n, p)`` with orthonormal columns spanning the columns of ``a``.

    The sign convention makes Q a function of ``a`` (the Gram-Schmidt factor): an input with
    orthonormal columns comes back unchanged, and the result is differentiable (PyTorch's QR
    backward composed with a locally constant sign flip).
    """
    if a.dim() < 2 or a.shape[-2] < a.shape[-1]:
        raise ValueError(
            f"qr_positive needs a tall matrix (..., n, p) with n >= p, got {tuple(a.shape)}"
        )
    q, r = torch.linalg.qr(a, mode="reduced")
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return q * signs.unsqueeze(-2)
