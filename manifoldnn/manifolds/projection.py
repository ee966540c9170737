r"""The projection metric of the Grassmannian and its kernel, for batches of subspaces.

.. math::

    k(Y_1, Y_2) = \|Y_1^\top Y_2\|_F^2 = \langle Y_1Y_1^\top, Y_2Y_2^\top\rangle_F
        = \sum_k \cos^2\theta_k, \qquad d_P^2(Y_1, Y_2) = p - k(Y_1, Y_2) = \|\sin\theta\|^2

(Hamm & Lee, "Grassmann discriminant analysis", ICML 2008, eqs. 5-6; Edelman, Arias & Smith 1998,
Sec. 4.3). These are the pairwise forms used by the contrastive loss, spectral clustering and
k-means; :meth:`Grassmann.projection_distance` is the element-wise form computed from the residual
:math:`(I - XX^\top)Y` (accurate near 0, where :math:`p - k` has only absolute accuracy).
"""

from __future__ import annotations

import torch

from ..linalg import symmetric_vectorize

__all__ = [
    "projection_metric_similarity",
    "projection_metric_distance",
    "projector_vectors",
    "cross_products_cheaper",
    "check_bases",
]

# p - ||Y1^T Y2||^2 is computed with an absolute rounding error of a few p * eps, so squared distances
# below _ROUNDING * p * eps are rounding noise: they are reported as exactly 0 with zero gradient
# (the gradient of sqrt at 0 is infinite). Distances above sqrt(_ROUNDING * p * eps) are exact.
_ROUNDING = 8.0


def check_bases(name: str, y: torch.Tensor) -> None:
    """Shape and dtype checks of bases ``(..., n, p)`` (no values read); errors name ``name``."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(y).__name__}")
    if y.dim() < 2:
        raise ValueError(f"{name} must have shape (..., n, p), got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {y.dtype}")
    if y.shape[-2] < y.shape[-1]:
        raise ValueError(
            f"{name} must be a tall basis (..., n, p) with n >= p, got {tuple(y.shape)}"
        )


def projection_metric_similarity(
    y1: torch.Tensor, y2: torch.Tensor, *, pairwise: bool = True
) -> torch.Tensor:
    r"""Squared Frobenius norm :math:`\|Y_1^\top Y_2\|_F^2 = \sum_k \cos^2\theta_k` (in ``[0, p]``).

    It equals :math:`\langle Y_1 Y_1^\top, Y_2 Y_2^\top \rangle_F` (the projection kernel of Hamm & Lee,
    ICML 2008, eq. 5) and :math:`p - d^2` for the projection metric ``d``.

    Parameters
    ----------
    y1 : ``(..., N, n, p)`` orthonormal bases when ``pairwise`` (``(..., n, p)`` otherwise).
    y2 : ``(..., M, n, p)`` when ``pairwise`` (``(..., n, p)`` otherwise); leading dims broadcast.
    pairwise : all pairs ``(..., N, M)`` when True, element-wise ``(...)`` when False.

    Pairwise, the cheaper of two exact evaluations is used: the squared cross products of the basis
    vectors (``N M p^2 n`` flops, chosen when ``p^2 (n + 70) < n (n + 1) / 2``, i.e. from n = 13,
    28, 46, 66 for p = 1, 2, 3, 4), or, for smaller n, the inner products of the isometrically
    vectorised projectors (``N M n (n + 1) / 2`` flops).
    """
    check_bases("y1", y1)
    check_bases("y2", y2)
    if y1.shape[-2:] != y2.shape[-2:]:
        raise ValueError(
            f"y1 and y2 must be bases of the same Gr(n, p), got {tuple(y1.shape[-2:])} and "
            f"{tuple(y2.shape[-2:])}"
        )
    if y1.dtype != y2.dtype:
        raise ValueError(f"y1 and y2 must share a dtype, got {y1.dtype} and {y2.dtype}")
    if not pairwise:
        return (y1.transpose(-1, -2) @ y2).pow(2).sum(dim=(-2, -1))
    if y1.dim() < 3 or y2.dim() < 3:
        raise ValueError(
            "pairwise projection metric needs batches (..., N, n, p) and (..., M, n, p), got "
            f"{tuple(y1.shape)} and {tuple(y2.shape)}"
        )
    n, p = y1.shape[-2:]
    rows, cols = y1.shape[-3], y2.shape[-3]
    if cross_products_cheaper(n, p):
        # sum_{a,b} (y1_a . y2_b)^2 over all pairs of basis vectors: N M p^2 n flops, no projectors
        a = y1.transpose(-1, -2).flatten(-3, -2)  # (..., N p, n)
        b = y2.transpose(-1, -2).flatten(-3, -2)  # (..., M p, n)
        cross = (a @ b.transpose(-1, -2)).pow(2)  # (..., N p, M p)
        return cross.unflatten(-1, (cols, p)).sum(-1).unflatten(-2, (rows, p)).sum(-2)
    # small n: the Frobenius inner product of the isometrically vectorised projectors,
    # N M n (n + 1) / 2 flops and (N, M) intermediates instead of (N p, M p)
    return projector_vectors(y1) @ projector_vectors(y2).transpose(-1, -2)


def cross_products_cheaper(n: int, p: int) -> bool:
    """Whether pairwise kernels of Gr(n, p) are cheaper from basis cross products (``p^2 n``
    multiply-adds a pair, then passes over ``p^2`` products a pair) than from projector vectors
    (``n (n + 1) / 2`` multiply-adds a pair). The passes count as about 70 multiply-adds each:
    ``benchmarks/contrastive_loss.py`` (500 samples, 6 views, p = 2, 3, 4, one thread) puts the
    break-even at n = 30, 45 and 65, where ``p^2 (n + 70) = n (n + 1) / 2``."""
    return p * p * (n + 70) < n * (n + 1) // 2


def projector_vectors(y: torch.Tensor) -> torch.Tensor:
    """``(..., n, p)`` bases -> ``(..., n (n + 1) / 2)`` isometric vectors of their projectors."""
    return symmetric_vectorize(y @ y.transpose(-1, -2))


def projection_metric_distance(
    y1: torch.Tensor, y2: torch.Tensor, *, pairwise: bool = True, squared: bool = False
) -> torch.Tensor:
    r"""Projection metric :math:`\|Y_1 Y_1^\top - Y_2 Y_2^\top\|_F / \sqrt 2` between subspaces.

    Computed as :math:`\sqrt{\max(p - \|Y_1^\top Y_2\|_F^2, 0)}` (Hamm & Lee, ICML 2008, eq. 6;
    Edelman, Arias & Smith 1998, Sec. 4.3) from ``p x p`` products, never the ``n x n`` projectors.
    The formula resolves squared distances down to its rounding error, a few ``p * eps``; below
    ``8 p eps`` (``eps`` of the dtype) the distance is returned as exactly 0 with a zero gradient, so
    equal subspaces are at distance 0 whatever their bases and the gradient stays finite there.

    Parameters
    ----------
    y1, y2 : orthonormal bases, ``(..., N, n, p)`` and ``(..., M, n, p)`` when ``pairwise``
        (result ``(..., N, M)``), or broadcastable ``(..., n, p)`` when not (result ``(...)``).
    pairwise : all pairs, or element-wise.
    squared : return :math:`d^2` (smooth everywhere, no floor needed).

    Returns
    -------
    Distances in ``[0, sqrt(p)]``.
    """
    p = y1.shape[-1] if isinstance(y1, torch.Tensor) and y1.dim() >= 1 else 0
    d2 = (p - projection_metric_similarity(y1, y2, pairwise=pairwise)).clamp_min(0.0)
    if squared:
        return d2
    floor = _ROUNDING * max(p, 1) * torch.finfo(d2.dtype).eps
    d2_safe = torch.where(d2 > floor, d2, torch.full_like(d2, floor))
    # below the floor the distance is reported as 0 with zero gradient (locally constant branch)
    return torch.where(d2 > floor, d2_safe.sqrt(), torch.zeros_like(d2))
