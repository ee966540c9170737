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

import functools
from typing import Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin

from ..manifolds.projection import projection_metric_similarity
from ..utils.estimators import store_parameters, validate_parameters
from ..validation import (
    check_choice,
    check_positive_float,
    check_positive_int,
    int_at_least,
    optional,
)

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
    if n_neighbors is not None and check_positive_int(n_neighbors, "n_neighbors") >= num_points:
        raise ValueError(
            f"n_neighbors must be below the number of points N = {num_points}, got {n_neighbors}"
        )
    check_choice(kernel, "kernel", ("projection", "heat"))
    if sigma is not None:
        check_positive_float(sigma, "sigma")
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


class GrassmannSpectralClustering(ClusterMixin, BaseEstimator):
    """Spectral clustering of subspaces ``(N, n, p)`` on the projection-metric affinity.

    ``fit`` also takes an ensemble ``(R, N, n, p)`` of R embeddings of the same N samples; the
    clusters then come from the mean affinity (see :func:`projection_affinity`). The graph is
    clustered by scikit-learn's ``SpectralClustering`` with ``affinity="precomputed"`` (Ng, Jordan
    & Weiss 2001). Transductive, like scikit-learn's: no ``predict``.

    Args:
        n_clusters: number of clusters (>= 2). Default: ``8``.
        n_neighbors: k of the kNN graph of :func:`projection_affinity`; ``None`` keeps the dense
            affinity. Default: ``10``.
        kernel: ``"projection"`` or ``"heat"`` (:func:`projection_affinity`).
            Default: ``"projection"``.
        sigma: bandwidth of the heat kernel; ``None``: the median rule of
            :func:`projection_affinity`. Default: ``None``.
        assign_labels: scikit-learn's label assignment: ``"kmeans"``, ``"discretize"`` or
            ``"cluster_qr"``. Default: ``"kmeans"``.
        n_init: k-means restarts in the spectral embedding (scikit-learn's ``n_init``).
            Default: ``10``.
        random_state: seed of scikit-learn's eigensolver and label assignment (``None``, an int or
            a ``numpy.random.RandomState``). Default: ``None``.

    Attributes:
        affinity_matrix_: ``(N, N)`` float64 NumPy affinity used.
        labels_: ``(N,)`` int64 NumPy cluster labels.

    Shape:
        ``fit(points)``: ``(N, n, p)`` or ``(R, N, n, p)`` orthonormal bases -> ``labels_`` ``(N,)``.

    Examples::

        >>> import torch
        >>> from manifoldnn.linalg import qr_positive
        >>> points = qr_positive(torch.randn(30, 6, 2, dtype=torch.float64))
        >>> GrassmannSpectralClustering(3, n_neighbors=5, random_state=0).fit_predict(points).shape
        (30,)
    """

    _parameter_checks = {
        "n_clusters": int_at_least(2),
        "n_neighbors": optional(check_positive_int),
        "kernel": functools.partial(check_choice, choices=("projection", "heat")),
        "sigma": optional(check_positive_float),
        "assign_labels": functools.partial(
            check_choice, choices=("kmeans", "discretize", "cluster_qr")
        ),
        "n_init": check_positive_int,
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        n_neighbors: int | None = 10,
        kernel: Literal["projection", "heat"] = "projection",
        sigma: float | None = None,
        assign_labels: str = "kmeans",
        n_init: int = 10,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        store_parameters(self, locals())

    def fit(self, points, y=None) -> GrassmannSpectralClustering:
        """Build the affinity of ``points`` ``(N, n, p)`` or ``(R, N, n, p)`` and cluster it.

        Args:
            points: orthonormal bases (tensor or array).
            y: ignored (scikit-learn's convention).

        Returns:
            ``self``.
        """
        from sklearn.cluster import SpectralClustering

        validate_parameters(self, self._parameter_checks)
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
