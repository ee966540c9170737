r"""Label-free choice between candidate partitions of the same samples.

A partition of N samples is scored by Newman's modularity on a neighbour graph of them

.. math::
    Q(W, c) = \sum_{k} \Big[ \frac{\sum_{i, j \in c_k} W_{ij}}{\sum_{ij} W_{ij}}
        - \Big( \frac{\sum_{i \in c_k} d_i}{\sum_{ij} W_{ij}} \Big)^2 \Big],
    \qquad d_i = \sum_j W_{ij}

(Newman, PNAS 2006, eq. 2): the share of edges inside the clusters minus the share expected for
the same cluster volumes at random, so that neither one giant cluster nor a scatter of small ones
scores by its sizes alone. For multi-view data the graph is the mean of the views' own
k-nearest-neighbour graphs (:func:`multiview_knn_graph`): a partition scores by how well it agrees
with the neighbourhoods of every view, a graph that none of the candidates was computed on (the
multi-view agreement principle of co-training and co-regularised spectral clustering, Kumar, Rai &
Daume, NeurIPS 2011). With several graphs each graph's scores are divided by the best candidate's
on it and summed. Candidates that leave some of the requested clusters empty are set aside when
any candidate uses them all (a collapse is not a partition into that many clusters). No label is
used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["graph_modularity", "multiview_knn_graph", "select_partition"]


def multiview_knn_graph(views: Sequence, n_neighbors: int):
    r"""Mean of the views' symmetric k-nearest-neighbour graphs, sparse ``(N, N)``.

    .. math::
        W = \frac1V \sum_v \frac{A^v + A^{v\top}}2, \qquad
        A^v_{ij} = [\, j \in \mathcal N_k(x^v_i) \,],

    with :math:`\mathcal N_k(x^v_i)` the ``n_neighbors`` nearest other samples of i in view v
    (Euclidean; von Luxburg, "A tutorial on spectral clustering", 2007, Sec. 2.2).

    Args:
        views: list of V arrays ``(N, d_v)``.
        n_neighbors: k, in ``[1, N - 1]``.

    Shape:
        ``[(N, d_1), ..., (N, d_V)]`` -> SciPy sparse float64 ``(N, N)``, symmetric, zero diagonal.
    """
    from sklearn.neighbors import kneighbors_graph

    if len(views) == 0:
        raise ValueError("views is empty: give at least one array (N, d_v)")
    n = np.asarray(views[0]).shape[0]
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)):
        raise ValueError(f"n_neighbors must be an int, got {n_neighbors!r}")
    if not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must be in [1, N - 1] = [1, {n - 1}], got {n_neighbors}")
    total = None
    for view in views:
        graph = kneighbors_graph(np.asarray(view), n_neighbors, include_self=False)
        graph = 0.5 * (graph + graph.T)
        total = graph if total is None else total + graph
    return (total / len(views)).tocsr()


def graph_modularity(graph, labels) -> float:
    r"""Newman's modularity of the partition ``labels`` ``(N,)`` on the weighted graph ``graph``
    ``(N, N)`` (symmetric, non-negative; see the module's formula, Newman, PNAS 2006, eq. 2).

    Self-loops are dropped first (a k-nearest-neighbour graph that counts every sample among its
    own neighbours adds the same inside-cluster weight to every partition, which would shrink the
    differences between partitions). In :math:`[-1/2, 1)`; 0 for a single cluster. A graph without
    edges has modularity 0.
    """
    from scipy import sparse

    if sparse.issparse(graph):
        graph = sparse.csr_matrix(graph, dtype=np.float64)
    else:
        graph = np.asarray(graph, dtype=np.float64)
    labels = np.asarray(labels)
    if graph.ndim != 2 or graph.shape[0] != graph.shape[1]:
        raise ValueError(f"graph must be square (N, N), got {graph.shape}")
    if labels.shape != (graph.shape[0],):
        raise ValueError(f"labels must have shape ({graph.shape[0]},), got {labels.shape}")
    diagonal = graph.diagonal()  # self-loops say nothing about the partition
    total = graph.sum() - diagonal.sum()
    if total <= 0:
        return 0.0
    _, cluster = np.unique(labels, return_inverse=True)
    members = np.eye(cluster.max() + 1)[cluster]  # (N, K) one-hot
    inside = np.sum(np.asarray(graph @ members) * members) - diagonal.sum()
    volumes = members.T @ (np.asarray(graph.sum(1)).ravel() - diagonal)
    return float(inside / total - np.sum((volumes / total) ** 2))


def select_partition(
    candidates: Mapping[str, np.ndarray],
    graphs: Sequence[np.ndarray],
    n_clusters: int,
) -> tuple[str, dict[str, float]]:
    r"""The candidate partition with the highest summed relative modularity on ``graphs``.

    .. math::
        s(c) = \sum_{g} \frac{Q(W_g, c)}{\max_{c'} Q(W_g, c')}

    over the graphs g whose best candidate has :math:`Q > 0`; candidates with fewer than
    ``n_clusters`` non-empty clusters are left out unless none has them all, and so is a partition
    equal to an earlier one up to the cluster ids. Ties go to the first candidate in
    ``candidates``' order.

    Args:
        candidates: name -> labels ``(N,)``, in order of preference on ties.
        graphs: symmetric non-negative ``(N, N)`` neighbour graphs of the same samples (NumPy or
            SciPy sparse).
        n_clusters: the number of clusters asked for.

    Returns:
        The chosen name and every candidate's score s (``nan`` for one set aside or equal to an
        earlier one).
    """
    if not candidates:
        raise ValueError("candidates is empty: give at least one partition")
    if not graphs:
        raise ValueError("graphs is empty: give at least one neighbour graph")
    names, seen = [], set()
    for name in candidates:  # a partition met before under other cluster ids is the same one
        _, first, canonical = np.unique(candidates[name], return_index=True, return_inverse=True)
        key = np.argsort(np.argsort(first))[canonical].tobytes()
        if key not in seen:
            seen.add(key)
            names.append(name)
    full = [name for name in names if len(np.unique(candidates[name])) >= n_clusters]
    eligible = full or names
    scores = dict.fromkeys(eligible, 0.0)
    for graph in graphs:
        values = {name: graph_modularity(graph, candidates[name]) for name in eligible}
        best = max(values.values())
        if best > 0:
            for name in eligible:
                scores[name] += values[name] / best
    chosen = max(eligible, key=lambda name: (scores[name], -eligible.index(name)))
    return chosen, {name: scores.get(name, float("nan")) for name in candidates}
