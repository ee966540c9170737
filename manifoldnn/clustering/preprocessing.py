r"""Input-space steps of multi-view clustering: per-view scaling and mutual-neighbour positives.

* :func:`preprocess_views` puts views of different units on one footing: each view's columns are
  standardised (zero mean, unit variance) and its rows L2-normalised, so that every view contributes
  unit-norm samples whatever its feature count; a sparse non-negative view (counts, tf-idf, pixels:
  at least half of its entries zero) is only L2-normalised, since centring would destroy its
  sparsity and its zeros carry meaning (the cosine geometry of tf-idf vectors, Salton & Buckley,
  1988).
* :func:`mutual_neighbor_graph` gives the pairs of samples that are among each other's k nearest
  neighbours (the mutual kNN graph, Maier, Hein & von Luxburg, 2009), used as extra positives of
  the contrastive loss: a pair of views of two different samples that are mutual neighbours in the
  input space is not pushed apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..datasets import check_multiview

__all__ = ["as_numpy_views", "preprocess_views", "mutual_neighbor_graph"]


def as_numpy_views(views: Sequence, *, parameter: str = "views") -> list[np.ndarray]:
    """Validated views ``(N, d_v)`` as NumPy arrays (torch tensors are detached and moved to CPU).

    Images ``(N, H, W)`` or ``(N, C, H, W)`` are flattened and uint8 views scaled to ``[0, 1]``
    (:func:`manifoldnn.data.check_multiview`). Raises ``ValueError`` naming ``parameter`` for a
    missing or empty list, views of different sample counts and NaN or infinite values.
    """
    if isinstance(views, (np.ndarray, torch.Tensor)):
        raise ValueError(
            f"{parameter} must be a list of arrays (one per view), got a single "
            f"{type(views).__name__}; wrap a single view as [X]"
        )
    if views is None or len(views) == 0:
        raise ValueError(f"{parameter} is empty: give a list of at least one array (N, d_v)")
    converted = [
        view.detach().cpu().numpy() if isinstance(view, torch.Tensor) else view for view in views
    ]
    try:
        arrays, _ = check_multiview(converted)
    except ValueError as error:
        raise ValueError(f"{parameter}: {error}") from error
    return arrays


def preprocess_views(views: Sequence, *, dtype: str | np.dtype = "float32") -> list[np.ndarray]:
    r"""Standardise each view's columns, then L2-normalise its rows; sparse non-negative views are
    only L2-normalised.

    .. math::
        \tilde x_{ij} = \frac{x_{ij} - \mu_j}{\sigma_j}, \qquad
        \hat x_i = \tilde x_i / \|\tilde x_i\|_2 ,

    with :math:`\mu_j, \sigma_j` the column mean and standard deviation (a constant column keeps
    :math:`\sigma_j = 1`, scikit-learn's ``StandardScaler``); a view whose entries are all
    non-negative and at least half zero skips the first step. Rows of zero norm stay zero. The
    arithmetic is in float64 whatever the input, then cast to ``dtype``.

    Args:
        views: list of V arrays ``(N, d_v)`` (NumPy or torch; images ``(N, H, W)`` are flattened).
        dtype: NumPy dtype of the returned arrays. Default: ``"float32"``.

    Shape:
        views ``[(N, d_1), ..., (N, d_V)]`` -> the same shapes.

    Examples::

        >>> import numpy as np
        >>> x = np.arange(12.0).reshape(4, 3)
        >>> [np.linalg.norm(v, axis=1).round(6).tolist() for v in preprocess_views([x])]
        [[1.0, 1.0, 1.0, 1.0]]
    """
    from sklearn.preprocessing import StandardScaler, normalize

    processed = []
    for view in as_numpy_views(views):
        view = np.asarray(view, dtype=np.float64)
        sparse_counts = view.min() >= 0 and np.mean(view == 0) >= 0.5
        if not sparse_counts:
            view = StandardScaler().fit_transform(view)
        processed.append(normalize(view).astype(dtype))
    return processed


def mutual_neighbor_graph(features, n_neighbors: int) -> np.ndarray:
    r"""Mutual k-nearest-neighbour graph: ``G_ij`` is true when i and j are among each other's
    ``n_neighbors`` nearest neighbours (Euclidean distance), and on the diagonal.

    .. math::
        G_{ij} = [\, j \in \mathcal N_k(i) \,] \wedge [\, i \in \mathcal N_k(j) \,]

    Args:
        features: ``(N, d)`` array (e.g. the concatenated preprocessed views).
        n_neighbors: k, neighbours of each sample besides itself (at most ``N - 1`` are used).

    Shape:
        ``(N, d)`` -> bool ``(N, N)``, symmetric.

    Source: the mutual kNN graph, Maier, Hein & von Luxburg, "Optimal construction of k-nearest
    neighbor graphs for identifying noisy clusters", TCS 2009.
    """
    from sklearn.neighbors import NearestNeighbors

    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] < 1:
        raise ValueError(f"features must have shape (N, d) with N >= 1, got {features.shape}")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)):
        raise ValueError(f"n_neighbors must be an int >= 1, got {n_neighbors!r}")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be an int >= 1, got {n_neighbors}")
    n = features.shape[0]
    index = NearestNeighbors(n_neighbors=min(n_neighbors + 1, n)).fit(features)
    index = index.kneighbors(features)[1]
    graph = np.zeros((n, n), dtype=bool)
    graph[np.arange(n)[:, None], index] = True
    graph &= graph.T
    np.fill_diagonal(graph, True)
    return graph
