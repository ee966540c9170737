r"""The extrinsic mean on the Grassmannian: the top-p eigenspace of the mean projector.

.. math::

    \bar{\mathcal{Y}} = \operatorname*{arg\,min}_{\mathcal{Y} \in \mathrm{Gr}(n, p)}
        \sum_i w_i \|YY^\top - Y_iY_i^\top\|_F^2
    = \operatorname{span}\big(\text{top-}p \text{ eigenvectors of } \textstyle\sum_i w_i Y_iY_i^\top\big)

(Chikuse 2003, "Statistics on special manifolds", Sec. 8.2; Srivastava & Klassen 2002, "Monte
Carlo extrinsic estimators of manifold-valued parameters"). It is the minimiser of the summed
squared projection distances and the usual warm start of the Karcher mean. This module is the one
home of the formula: the k-means centres, the fusion of views, attention's extrinsic aggregation
and the Karcher warm start all call it.
"""

from __future__ import annotations

import torch

from ..linalg import eigh_top

__all__ = ["extrinsic_mean", "mean_projector", "top_eigenspace"]


def top_eigenspace(matrix: torch.Tensor, p: int) -> torch.Tensor:
    r"""Orthonormal basis ``(..., n, p)`` of the top-p eigenspace of symmetric ``matrix (..., n, n)``.

    Where autograd records through ``matrix`` the eigenvectors come from
    :func:`manifoldnn.linalg.eigh_top`, whose backward stays finite at repeated eigenvalues (every
    mean of identical projectors has them); otherwise from one ``torch.linalg.eigh``. The basis is
    arbitrary within the subspace (only its span is defined).
    """
    if torch.is_grad_enabled() and matrix.requires_grad:
        return eigh_top(matrix, p)[1]
    return torch.linalg.eigh(matrix)[1][..., -p:]


def mean_projector(points: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""Weighted mean projector :math:`\sum_i w_i Y_i Y_i^\top` of sets of subspaces.

    The matrix whose top-p eigenspace is the extrinsic mean. The weights are used as given (not
    normalised). With one shared point set ``(N, n, p)`` and many weightings ``(..., N)`` (the
    centres of k-means), it is one matrix product with the flattened projectors ``(N, n^2)`` where
    they fit in memory (``N n^2 <= 2^25``), otherwise a loop over the weightings using only the
    points of non-zero weight.

    Args:
        points: orthonormal bases ``(..., N, n, p)``, broadcast against ``weights``.
        weights: non-negative weights ``(..., N)``. Default: ``None`` (``1 / N`` each).

    Returns:
        Symmetric matrices ``(..., n, n)``.

    Shape:
        ``points (..., N, n, p)``, ``weights (..., N)`` -> ``(..., n, n)``.
    """
    count, n = points.shape[-3], points.shape[-2]
    if weights is None:
        return (points @ points.transpose(-1, -2)).mean(-3)
    if points.dim() == 3 and weights.dim() > 1:
        if count * n * n <= 2**25:
            flat = (points @ points.transpose(-1, -2)).flatten(-2)  # (N, n^2)
            return (weights @ flat).unflatten(-1, (n, n))
        out = []
        for row in weights.reshape(-1, count):
            members = row > 0
            chosen = points[members] * row[members].sqrt()[:, None, None]
            basis = chosen.transpose(0, 1).reshape(n, -1)  # (n, members * p)
            out.append(basis @ basis.T)
        return torch.stack(out).reshape(*weights.shape[:-1], n, n)
    return torch.einsum("...i,...iab->...ab", weights, points @ points.transpose(-1, -2))


def extrinsic_mean(points: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""Weighted extrinsic mean of subspaces (see the module docstring).

    Args:
        points: orthonormal bases ``(..., N, n, p)`` (N subspaces per set).
        weights: optional non-negative weights ``(..., N)``, normalised here to sum to one per set.
            Default: equal weights.

    Shape:
        ``(..., N, n, p)`` -> ``(..., n, p)``.
    """
    if points.dim() < 3:
        raise ValueError(f"points must have shape (..., N, n, p), got {tuple(points.shape)}")
    count, n, p = points.shape[-3:]
    if weights is not None:
        if weights.shape[-1] != count:
            raise ValueError(
                f"weights must have shape (..., N) with N = {count} points per set, got "
                f"{tuple(weights.shape)}"
            )
        total = weights.sum(-1, keepdim=True).clamp_min(torch.finfo(points.dtype).tiny)
        weights = weights / total
    recording = torch.is_grad_enabled() and (
        points.requires_grad or (weights is not None and weights.requires_grad)
    )
    if 2 * count * p < n and not recording:
        # far fewer columns than rows: the top-p left singular vectors of [sqrt(w_1) Y_1 ...
        # sqrt(w_N) Y_N] span the same eigenspace, from an n x Np SVD (cost n (Np)^2) instead of
        # an n x n eigendecomposition (cost n^3)
        scale = weights if weights is not None else torch.full_like(points[..., 0, 0], 1 / count)
        scaled = points * scale.sqrt()[..., None, None]
        stacked = scaled.transpose(-3, -2).reshape(scaled.shape[:-3] + (n, count * p))
        return torch.linalg.svd(stacked, full_matrices=False)[0][..., :p]
    return top_eigenspace(mean_projector(points, weights), p)
