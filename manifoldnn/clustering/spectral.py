r"""Spectral clustering of subspaces on a projection-metric affinity.

The affinity between subspaces is the projection kernel
:math:`k(X, Y) = \|X^\top Y\|_F^2 / p = 1 - d^2(X, Y) / p \in [0, 1]` (Hamm & Lee, ICML 2008, eq. 5),
optionally passed through a heat kernel :math:`\exp(-d^2 / (p\,\sigma^2))` and sparsified to a
symmetric k-nearest-neighbour graph (von Luxburg 2007, "A tutorial on spectral clustering",
Sec. 2.2). The graph is then clustered by scikit-learn's ``SpectralClustering`` with
``affinity="precomputed"`` (normalised spectral clustering, Ng, Jordan & Weiss 2001).

Several embeddings of the same N samples (e.g. the subspaces learned by R training restarts) can be
given as one ``(R, N, n, p)`` tensor: the kernel is averaged over the R embeddings before the
neighbour graph is built (a consensus affinity; averaging similarity matrices of an ensemble is the
"co-association" idea of evidence accumulation, Fred & Jain, TPAMI 2005).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..manifolds.projection import projection_metric_similarity

__all__ = ["projection_affinity", "GrassmannSpectralClustering", "spectral_clustering_of_views"]


def spectral_clustering_of_views(
    views, n_clusters: int, n_neighbors: int = 10, random_state: int | None = None
) -> np.ndarray:
    r"""Spectral clustering of the concatenated views :math:`[x^1_i, \dots, x^V_i]` on their
    symmetric ``n_neighbors``-nearest-neighbour graph (scikit-learn's ``SpectralClustering`` with
    ``affinity="nearest_neighbors"``; Ng, Jordan & Weiss 2001; von Luxburg 2007, Sec. 2.2): the
    in-run baseline of the multi-view examples and a candidate of
    :class:`~manifoldnn.clustering.MultiViewSubspaceClustering`'s selection.

    Args:
        views: list of V arrays ``(N, d_v)``.
        n_clusters: K.
        n_neighbors: k of the graph. Default: 10.
        random_state: seed of the eigensolver's start and of the label assignment. Default: None.

    Shape:
        ``[(N, d_1), ..., (N, d_V)]`` -> ``(N,)`` int labels.
    """
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(
        n_clusters, affinity="nearest_neighbors", n_neighbors=n_neighbors, random_state=random_state
    )
    return model.fit_predict(np.hstack([np.asarray(v) for v in views]))


def projection_affinity(
    points: torch.Tensor,
    *,
    n_neighbors: int | None = 10,
    kernel: Literal["projection", "heat"] = "projection",
    sigma: float | None = None,
) -> np.ndarray:
    r"""Symmetric affinity matrix ``(N, N)`` (NumPy float64) between subspaces ``(N, n, p)``.

    ``points`` may also be ``(R, N, n, p)``, R embeddings of the same N samples (an ensemble): the
    normalised projection kernel is then averaged over the R embeddings first, so ``d^2 / p`` below
    is the mean over the ensemble.
    ``kernel="projection"``: :math:`\|Y_i^\top Y_j\|_F^2 / p`; ``"heat"``:
    :math:`\exp(-d^2_{ij} / (p \sigma^2))` with ``sigma`` defaulting to the median of the
    normalised distances :math:`d_{ij} / \sqrt p` to each point's ``n_neighbors``-th neighbour.
    With ``n_neighbors`` set, only the entries of the kNN graph are kept (symmetrised by the maximum,
    von Luxburg 2007, Sec. 2.2); the diagonal is zero.
    """
    if not isinstance(points, torch.Tensor):
        points = torch.as_tensor(np.asarray(points))
    if points.dim() not in (3, 4):
        raise ValueError(
            f"points must be bases of shape (N, n, p) or (R, N, n, p), got {tuple(points.shape)}"
        )
    num_points, _, p = points.shape[-3:]
    if n_neighbors is not None and not 1 <= n_neighbors < num_points:
        raise ValueError(
            f"n_neighbors must be in [1, N - 1] = [1, {num_points - 1}], got {n_neighbors}"
        )
    if kernel not in ("projection", "heat"):
        raise ValueError(f"kernel must be 'projection' or 'heat', got {kernel!r}")
    with torch.no_grad():
        similarity = (projection_metric_similarity(points, points) / p).clamp(0.0, 1.0)
        if similarity.dim() == 3:  # ensemble: mean kernel over the R embeddings
            similarity = similarity.double().mean(0)
    similarity = similarity.double().cpu().numpy()
    np.fill_diagonal(similarity, 0.0)
    order = None
    if n_neighbors is not None:
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :n_neighbors]
    if kernel == "heat":
        squared = 1.0 - similarity  # d^2 / p
        if sigma is None:
            kth = squared[np.arange(num_points), order[:, -1]] if order is not None else squared
            sigma = float(np.sqrt(np.median(kth)))
            sigma = sigma if sigma > 0 else 1.0
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        affinity = np.exp(-squared / sigma**2)
        np.fill_diagonal(affinity, 0.0)
    else:
        affinity = similarity
    if order is not None:
        mask = np.zeros_like(affinity, dtype=bool)
        mask[np.arange(num_points)[:, None], order] = True
        mask |= mask.T
        affinity = np.where(mask, affinity, 0.0)
    return affinity


class GrassmannSpectralClustering:
    """Spectral clustering of subspaces ``(N, n, p)`` on the projection-metric affinity.

    ``fit`` also takes an ensemble ``(R, N, n, p)`` of R embeddings of the same N samples; the
    clusters then come from the mean affinity (see :func:`projection_affinity`).

    Parameters
    ----------
    n_clusters : number of clusters.
    n_neighbors, kernel, sigma : affinity options of :func:`projection_affinity`.
    assign_labels : scikit-learn's label assignment (``"kmeans"``, ``"discretize"``,
        ``"cluster_qr"``).
    n_init : k-means restarts in the spectral embedding (scikit-learn's ``n_init``).
    random_state : seed for scikit-learn.

    Attributes
    ----------
    affinity_matrix_ : ``(N, N)`` NumPy affinity used.
    labels_ : ``(N,)`` int64 cluster labels.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        n_neighbors: int | None = 10,
        kernel: Literal["projection", "heat"] = "projection",
        sigma: float | None = None,
        assign_labels: str = "kmeans",
        n_init: int = 10,
        random_state: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.kernel = kernel
        self.sigma = sigma
        self.assign_labels = assign_labels
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, points, y=None) -> GrassmannSpectralClustering:
        """Build the affinity of ``points`` ``(N, n, p)`` or ``(R, N, n, p)`` and cluster it."""
        from sklearn.cluster import SpectralClustering

        if not isinstance(self.n_clusters, int) or self.n_clusters < 2:
            raise ValueError(f"n_clusters must be an int >= 2, got {self.n_clusters!r}")
        self.affinity_matrix_ = projection_affinity(
            points, n_neighbors=self.n_neighbors, kernel=self.kernel, sigma=self.sigma
        )
        if self.n_clusters > self.affinity_matrix_.shape[0]:
            raise ValueError(
                f"n_clusters={self.n_clusters} exceeds the number of points {self.affinity_matrix_.shape[0]}"
            )
        model = SpectralClustering(
            n_clusters=self.n_clusters,
            affinity="precomputed",
            assign_labels=self.assign_labels,
            n_init=self.n_init,
            random_state=self.random_state,
        )
        self.labels_ = model.fit_predict(self.affinity_matrix_).astype(np.int64)
        return self

    def fit_predict(self, points, y=None) -> np.ndarray:
        """``fit(points)`` then return ``labels_``."""
        return self.fit(points).labels_
