r"""Evaluation of hierarchy embeddings: reconstruction and link prediction (mean rank and MAP).

The protocol of Nickel & Kiela (2017, "Poincaré embeddings for learning hierarchical
representations", Sec. 4.1): for every node ``u`` with ancestors ``A(u)`` in the evaluated pairs,
each ancestor ``a`` is ranked by its distance to ``u`` among the *negatives* of ``u``, the nodes
that are neither ``u`` nor related to it,

.. math::

    \mathrm{rank}(u, a) = 1 + |\{v \text{ negative of } u : d(u, v) < d(u, a)\}|,

and the average precision of ``u`` is that of the ranking of all nodes by distance, where the
``j``-th closest ancestor (ranks :math:`r_1 \le r_2 \le \dots`) stands at position
:math:`r_j + j - 1`:

.. math::

    \mathrm{AP}(u) = \frac{1}{|A(u)|} \sum_{j=1}^{|A(u)|} \frac{j}{r_j + j - 1}.

The mean rank is the mean over all evaluated pairs, the MAP the mean of ``AP(u)`` over the nodes.
Reconstruction evaluates the training pairs themselves; link prediction (ibid., Sec. 4.2)
evaluates held-out pairs, the training pairs of ``u`` being neither positives nor negatives.
gensim's ``ReconstructionEvaluation`` counts ``u`` itself among its negatives (distance 0), so its
ranks are one higher than these.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import torch

from ..manifolds.lorentz import ball_distance, lorentz_distance

__all__ = ["hierarchy_distance", "reconstruction_scores", "link_prediction_scores"]

MANIFOLDS = ("poincare", "lorentz", "euclidean")

# elements of one (rows, nodes) block of distances
_BLOCK = 1 << 22


def hierarchy_distance(manifold: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Distance between embedded nodes: Poincaré ball (Nickel & Kiela 2017, eq. 1), hyperboloid
    (Nickel & Kiela 2018, eq. 4), both of curvature -1, or Euclidean.

    Args:
        manifold: ``"poincare"`` (points ``(..., dim)`` of the unit ball), ``"lorentz"`` (points
            ``(..., dim + 1)`` of the hyperboloid :math:`\langle x, x\rangle_L = -1`) or
            ``"euclidean"``.
        x: points ``(..., D)``.
        y: points ``(..., D)``, broadcast against ``x``.

    Returns:
        Distances ``(...)``.
    """
    if manifold == "poincare":
        return ball_distance(x, y)
    if manifold == "lorentz":
        return lorentz_distance(x, y)
    if manifold == "euclidean":
        return (x - y).norm(dim=-1)
    raise ValueError(f"manifold must be one of {MANIFOLDS}, got {manifold!r}")


def _pairwise_distances(manifold: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`hierarchy_distance` of every row of ``x (R, D)`` and ``y (N, D)``, ``(R, N)``, from
    inner products (one matrix product, no ``(R, N, D)`` block); the squared differences are
    exact to ``eps`` times the squared norms, enough to rank nodes."""
    if manifold == "lorentz":
        gram = x[:, 1:] @ y[:, 1:].T - x[:, :1] @ y[:, :1].T
        chord_sq = (-2 - 2 * gram).clamp_min(0.0)  # <x - y, x - y>_L on the hyperboloid
        return 2 * torch.asinh(chord_sq.sqrt() / 2)
    x_sq, y_sq = x.pow(2).sum(-1, keepdim=True), y.pow(2).sum(-1)
    sq = (x_sq + y_sq - 2 * x @ y.T).clamp_min(0.0)
    if manifold == "euclidean":
        return sq.sqrt()
    return 2 * torch.asinh((sq / ((1 - x_sq) * (1 - y_sq))).sqrt())


def _index_pairs(pairs, index: dict[Hashable, int] | None, n_nodes: int, name: str) -> np.ndarray:
    pairs = list(pairs)
    if not pairs:
        raise ValueError(f"{name} is empty: give at least one (child, ancestor) pair")
    if index is None:
        array = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        bad = (array < 0) | (array >= n_nodes)
        if bad.any():
            raise ValueError(f"{name} holds node indices outside [0, {n_nodes}): {array[bad][:5]}")
        return array
    unknown = [node for pair in pairs for node in pair if node not in index]
    if unknown:
        raise ValueError(
            f"{name} name nodes that are not embedded: {list(dict.fromkeys(unknown))[:5]!r}"
        )
    return np.asarray([(index[u], index[a]) for u, a in pairs], dtype=np.int64).reshape(-1, 2)


def _ranks_and_precision(
    points: torch.Tensor,
    manifold: str,
    positives: np.ndarray,
    excluded: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of every positive pair and the average precision of every node with one.

    ``positives`` and ``excluded`` are ``(P, 2)`` index pairs; rows of nodes are evaluated in
    blocks, each block's pairs found by binary search in the pairs sorted by their first node.
    """
    device = points.device
    n_nodes = points.shape[0]
    positives = positives[np.argsort(positives[:, 0], kind="stable")]
    rows = np.unique(positives[:, 0])
    tables = [(torch.as_tensor(positives, device=device), True)]
    if excluded is not None:
        excluded = excluded[np.argsort(excluded[:, 0], kind="stable")]
        tables.append((torch.as_tensor(excluded, device=device), False))
    tables = [(table[:, 0].contiguous(), table, flag) for table, flag in tables]
    rows_t = torch.as_tensor(rows, device=device)
    chunk = max(1, _BLOCK // n_nodes)
    ranks, precisions = [], []
    with torch.no_grad():
        for start in range(0, len(rows), chunk):
            nodes = rows_t[start : start + chunk]
            block = torch.arange(len(nodes), device=device)
            distances = _pairwise_distances(manifold, points[nodes], points)
            positive = torch.zeros_like(distances, dtype=torch.bool)
            other = torch.zeros_like(distances, dtype=torch.bool)  # neither positive nor negative
            other[block, nodes] = True
            for keys, table, is_positive in tables:
                lo = torch.searchsorted(keys, nodes[:1])[0]
                hi = torch.searchsorted(keys, nodes[-1:], right=True)[0]
                chosen = table[int(lo) : int(hi)]
                row = torch.searchsorted(nodes, chosen[:, 0].contiguous())
                (positive if is_positive else other)[row, chosen[:, 1]] = True
            negative = ~(positive | other)
            # the positives' distances in increasing order, padded with +inf: (R, P)
            count = positive.sum(-1)
            width = int(count.max())
            inf = torch.full_like(distances, torch.inf)
            sorted_positive = torch.topk(
                torch.where(positive, distances, inf), width, dim=-1, largest=False
            ).values
            # a negative at distance d precedes the positives from index b = #{positives <= d}
            # on, so the number of negatives closer than the j-th positive is the cumulative
            # count of the b's up to j (one binary search per node, no sort of all nodes)
            bucket = torch.searchsorted(sorted_positive, distances.contiguous(), right=True)
            bucket = torch.where(negative, bucket, width)
            counts = torch.zeros(len(nodes), width + 1, dtype=torch.long, device=device)
            counts.scatter_add_(1, bucket, torch.ones_like(bucket))
            rank = counts.cumsum(-1)[:, :width] + 1  # (R, P), non-decreasing
            index = torch.arange(1, width + 1, device=device, dtype=torch.float64)
            valid = index.unsqueeze(0) <= count.unsqueeze(1)
            precision = torch.where(valid, index / (rank.double() + index - 1), 0.0).sum(-1)
            ranks.append(rank[valid].cpu().numpy())
            precisions.append((precision / count).cpu().numpy())
    return np.concatenate(ranks), np.concatenate(precisions)


def _prepare(points, nodes):
    points = torch.as_tensor(points) if not isinstance(points, torch.Tensor) else points.detach()
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(
            f"points must be a non-empty (N, D) array, got shape {tuple(points.shape)}"
        )
    if not points.is_floating_point():
        points = points.double()
    index = None
    if nodes is not None:
        nodes = list(nodes)
        if len(nodes) != points.shape[0]:
            raise ValueError(f"nodes names {len(nodes)} nodes for {points.shape[0]} points")
        index = {node: i for i, node in enumerate(nodes)}
    return points, index


def reconstruction_scores(
    points,
    pairs: Iterable[Sequence[Hashable]],
    *,
    manifold: str = "poincare",
    nodes: Sequence[Hashable] | None = None,
) -> dict[str, float]:
    """Mean rank and MAP of the ``(child, ancestor)`` pairs reconstructed from an embedding.

    Nickel & Kiela (2017), Sec. 4.1 (module docstring): each ancestor of a node ranked among the
    nodes that are neither the node nor its ancestors.

    Args:
        points: the embedding ``(N, D)`` (tensor or array).
        pairs: ``(child, ancestor)`` pairs: node names (with ``nodes``) or row indices.
        manifold: ``"poincare"``, ``"lorentz"`` or ``"euclidean"`` (:func:`hierarchy_distance`).
            Default: ``"poincare"``.
        nodes: the name of each row of ``points``. Default: ``None`` (``pairs`` hold indices).

    Returns:
        ``{"mean_rank": float, "map": float}``.

    Raises:
        ValueError: on empty pairs, unknown nodes or a bad ``manifold``.
    """
    points, index = _prepare(points, nodes)
    hierarchy_distance(manifold, points[:1], points[:1])
    positives = np.unique(_index_pairs(pairs, index, points.shape[0], "pairs"), axis=0)
    ranks, precisions = _ranks_and_precision(points, manifold, positives, None)
    return {"mean_rank": float(ranks.mean()), "map": float(precisions.mean())}


def link_prediction_scores(
    points,
    train_pairs: Iterable[Sequence[Hashable]],
    test_pairs: Iterable[Sequence[Hashable]],
    *,
    manifold: str = "poincare",
    nodes: Sequence[Hashable] | None = None,
) -> dict[str, float]:
    """Mean rank and MAP of held-out ``(child, ancestor)`` pairs (Nickel & Kiela 2017, Sec. 4.2).

    Each held-out ancestor of a node is ranked among the nodes that are neither the node nor one
    of its training or held-out ancestors.

    Args:
        points: the embedding ``(N, D)``, trained on ``train_pairs``.
        train_pairs: the pairs the embedding was trained on (neither positives nor negatives).
        test_pairs: the held-out pairs to rank.
        manifold: as :func:`reconstruction_scores`. Default: ``"poincare"``.
        nodes: as :func:`reconstruction_scores`. Default: ``None``.

    Returns:
        ``{"mean_rank": float, "map": float}``.
    """
    points, index = _prepare(points, nodes)
    hierarchy_distance(manifold, points[:1], points[:1])
    train = _index_pairs(train_pairs, index, points.shape[0], "train_pairs")
    test = np.unique(_index_pairs(test_pairs, index, points.shape[0], "test_pairs"), axis=0)
    ranks, precisions = _ranks_and_precision(points, manifold, test, train)
    return {"mean_rank": float(ranks.mean()), "map": float(precisions.mean())}
