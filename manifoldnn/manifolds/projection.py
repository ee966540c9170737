r"""The projection metric of the Grassmannian and its kernel, for batches of subspaces.

.. math::

    k(Y_1, Y_2) = \|Y_1^\top Y_2\|_F^2 = \langle Y_1Y_1^\top, Y_2Y_2^\top\rangle_F
        = \sum_k \cos^2\theta_k, \qquad d_P^2(Y_1, Y_2) = p - k(Y_1, Y_2) = \|\sin\theta\|^2

(Hamm & Lee, "Grassmann discriminant analysis", ICML 2008, eqs. 5-6; Edelman, Arias & Smith 1998,
Sec. 4.3). These are the pairwise forms used by the contrastive loss, spectral clustering and
k-means. This module is the one home of the projection distance: the element-wise form (and
:meth:`Grassmann.projection_distance`, which calls it) is computed from the residual
:math:`(I - XX^\top)Y`, accurate near 0, where :math:`p - k` has only absolute accuracy; the
pairwise form recomputes its close pairs the same way. :func:`distance_from_squared` is the one zero
floor of the Grassmann distances.
"""

from __future__ import annotations

import math

import torch

from ..linalg import symmetric_vectorize, tolerance

__all__ = [
    "projection_metric_similarity",
    "projection_metric_distance",
    "projector_vectors",
    "cross_products_cheaper",
    "check_bases",
    "distance_from_squared",
    "similarity_rounding",
]


def similarity_rounding(p: int, dtype: torch.dtype) -> float:
    """Bound ``8 p eps`` on the absolute rounding error of ``p - ||Y_1^T Y_2||_F^2``.

    A sum of ``p^2`` squared cosines, each of them in ``[0, 1]`` and rounded to a few ``eps``:
    squared distances from the kernel below this bound are rounding noise (coincident subspaces).
    """
    return 8.0 * max(p, 1) * torch.finfo(dtype).eps


def distance_from_squared(d2: torch.Tensor, p: int) -> torch.Tensor:
    """``sqrt(d2)``, set to exactly 0 (value and gradient) below the rounding floor of ``d2``.

    The one zero floor of the Grassmann distances (geodesic, projection, chordal), for squared
    distances computed to relative accuracy near 0 (from principal angles or the residual
    ``(I - X X^T) Y``). Two bases of one subspace, each orthonormal to rounding, are a residual of a
    few ``eps sqrt(p)`` apart; a norm has a cone at 0, so the gradient of ``sqrt`` of that noise has
    length about 1 in a random direction. Below ``16 eps sqrt(p)`` the distance is therefore
    reported as 0 with a zero gradient.

    Args:
        d2: squared distances, any shape.
        p: the subspace dimension.

    Returns:
        Distances of the shape of ``d2``.
    """
    floor = 16.0 * torch.finfo(d2.dtype).eps * math.sqrt(max(p, 1))
    above = d2 > floor * floor
    safe = torch.where(above, d2, torch.ones_like(d2))
    return torch.where(above, safe.sqrt(), torch.zeros_like(d2))


def _residual_sq(y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
    """``||(I - Y_1 Y_1^T) Y_2||_F^2`` element-wise (broadcast): ``||sin theta||^2`` to relative
    accuracy near 0."""
    residual = y2 - y1 @ (y1.transpose(-1, -2) @ y2)
    return residual.pow(2).sum(dim=(-2, -1))


def _refine_close_pairs(d2: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
    """Pairwise ``d2 (..., N, M)`` from the kernel, with the pairs below the cancellation switch
    recomputed from the residual. In eager mode only those pairs are gathered; under
    ``torch.compile`` (shapes must not depend on values) the whole block is formed and selected."""
    close = d2 < tolerance("cancellation_switch", d2.dtype)
    a, b = y1.unsqueeze(-3), y2.unsqueeze(-4)
    if torch.compiler.is_compiling():
        return torch.where(close, _residual_sq(a, b), d2)
    if not bool(close.any()):
        return d2
    idx = close.nonzero(as_tuple=True)
    shape = d2.shape + y1.shape[-2:]
    exact = _residual_sq(a.expand(shape)[idx], b.expand(shape)[idx])
    return d2.index_put(idx, exact)


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


def _check_pair(y1: torch.Tensor, y2: torch.Tensor) -> None:
    """Check that ``y1`` and ``y2`` are bases of the same ``Gr(n, p)``."""
    check_bases("y1", y1)
    check_bases("y2", y2)
    if y1.shape[-2:] != y2.shape[-2:]:
        raise ValueError(
            f"y1 and y2 must be bases of the same Gr(n, p), got {tuple(y1.shape[-2:])} and "
            f"{tuple(y2.shape[-2:])}"
        )


def projection_metric_similarity(
    y1: torch.Tensor, y2: torch.Tensor, *, pairwise: bool = True
) -> torch.Tensor:
    r"""Squared Frobenius norm :math:`\|Y_1^\top Y_2\|_F^2 = \sum_k \cos^2\theta_k` (in ``[0, p]``).

    It equals :math:`\langle Y_1 Y_1^\top, Y_2 Y_2^\top \rangle_F` (the projection kernel of Hamm & Lee,
    ICML 2008, eq. 5) and :math:`p - d^2` for the projection metric ``d``.

    Args:
        y1: orthonormal bases ``(..., N, n, p)`` when ``pairwise``, ``(..., n, p)`` otherwise.
        y2: orthonormal bases ``(..., M, n, p)`` when ``pairwise``, ``(..., n, p)`` otherwise;
            leading dimensions broadcast.
        pairwise: all pairs ``(..., N, M)`` when True, element-wise ``(...)`` when False.
            Default: ``True``.

    Returns:
        Similarities in ``[0, p]``.

    Shape:
        pairwise: ``(..., N, n, p), (..., M, n, p) -> (..., N, M)``; element-wise:
        ``(..., n, p), (..., n, p) -> (...)``.

    Pairwise, the cheaper of two exact evaluations is used: the squared cross products of the basis
    vectors (``N M p^2 n`` flops, chosen when ``p^2 (n + 70) < n (n + 1) / 2``, i.e. from n = 13,
    28, 46, 66 for p = 1, 2, 3, 4), or, for smaller n, the inner products of the isometrically
    vectorised projectors (``N M n (n + 1) / 2`` flops).
    """
    _check_pair(y1, y2)
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

    .. math::

        d_P^2(Y_1, Y_2) = p - \|Y_1^\top Y_2\|_F^2 = \|(I - Y_1 Y_1^\top) Y_2\|_F^2
            = \|\sin\theta\|^2

    (Hamm & Lee, ICML 2008, eq. 6; Edelman, Arias & Smith 1998, Sec. 4.3), from ``p x p`` and
    ``n x p`` products, never the ``n x n`` projectors. Element-wise, the residual form is used; it
    is accurate to rounding near 0. Pairwise, the kernel form (cheap, but with only the absolute
    accuracy ``p eps``) is used, and the pairs whose squared distance is below
    ``tolerance("cancellation_switch")`` are recomputed from the residual unless ``squared``.
    Distances below the floor of :func:`distance_from_squared` are returned as exactly 0 with a
    zero gradient, so equal subspaces are at distance 0 whatever their bases.

    Args:
        y1: orthonormal bases ``(..., N, n, p)`` when ``pairwise``, ``(..., n, p)`` otherwise.
        y2: orthonormal bases ``(..., M, n, p)`` when ``pairwise``, ``(..., n, p)`` otherwise;
            leading dimensions broadcast.
        pairwise: all pairs when True, element-wise when False. Default: ``True``.
        squared: return :math:`d^2` (smooth everywhere, no floor; pairwise from the kernel form).
            Default: ``False``.

    Returns:
        Distances in ``[0, sqrt(p)]`` (squared: ``[0, p]``).

    Shape:
        pairwise: ``(..., N, n, p), (..., M, n, p) -> (..., N, M)``; element-wise:
        ``(..., n, p), (..., n, p) -> (...)``.

    Examples::

        >>> import torch
        >>> from manifoldnn.linalg import qr_positive
        >>> x, y = qr_positive(torch.randn(4, 6, 2)), qr_positive(torch.randn(3, 6, 2))
        >>> projection_metric_distance(x, y).shape
        torch.Size([4, 3])
    """
    if not pairwise:
        _check_pair(y1, y2)
        d2 = _residual_sq(y1, y2)
        return d2 if squared else distance_from_squared(d2, y1.shape[-1])
    p = y1.shape[-1] if isinstance(y1, torch.Tensor) and y1.dim() >= 1 else 0
    d2 = (p - projection_metric_similarity(y1, y2, pairwise=True)).clamp_min(0.0)
    if squared:
        return d2
    return distance_from_squared(_refine_close_pairs(d2, y1, y2), p)
