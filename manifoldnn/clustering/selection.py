r"""Label-free choice between candidate partitions of the same samples.

A partition of N samples is scored on several neighbour graphs of them (e.g. the k-nearest-neighbour
graph of the input views and that of learned subspaces, the graphs their spectral clusterings cut)
by Newman's modularity

.. math::
    Q(W, c) = \sum_{k} \Big[ \frac{\sum_{i, j \in c_k} W_{ij}}{\sum_{ij} W_{ij}}
        - \Big( \frac{\sum_{i \in c_k} d_i}{\sum_{ij} W_{ij}} \Big)^2 \Big],
    \qquad d_i = \sum_j W_{ij}

(Newman, PNAS 2006, eq. 2): the share of edges inside the clusters minus the share expected for
the same cluster volumes at random, so that neither one giant cluster nor a scatter of small ones
scores by its sizes alone. Each graph's scores are divided by the best candidate's on that graph
and summed over the graphs: the chosen partition is the one that both geometries support best,
each measured against the best it can get among the candidates. A graph on which no candidate has
positive modularity carries no cluster structure and is left out. Candidates that leave some of the
requested clusters empty are set aside when any candidate uses them all (a collapse is not a
partition into that many clusters). No label is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["graph_modularity", "select_partition"]


def graph_modularity(graph, labels) -> float:
    r"""Newman's modularity of the partition ``labels`` ``(N,)`` on the weighted graph ``graph``
    ``(N, N)`` (symmetric, non-negative; see the module's formula, Newman, PNAS 2006, eq. 2).

    Self-loops are dropped first (a k-nearest-neighbour graph that counts every sample among its
    own neighbours adds the same inside-cluster weight to every partition, which would shrink the
    differences between partitions). In :math:`[-1/2, 1)`; 0 for a single cluster. A graph without
    edges has modularity 0.
    """
    graph = np.asarray(graph, dtype=np.float64)
    labels = np.asarray(labels)
    if graph.ndim != 2 or graph.shape[0] != graph.shape[1]:
        raise ValueError(f"graph must be square (N, N), got {graph.shape}")
    if labels.shape != (graph.shape[0],):
        raise ValueError(f"labels must have shape ({graph.shape[0]},), got {labels.shape}")
    graph = graph - np.diag(np.diag(graph))  # self-loops say nothing about the partition
    total = graph.sum()
    if total <= 0:
        return 0.0
    _, cluster = np.unique(labels, return_inverse=True)
    members = np.eye(cluster.max() + 1)[cluster]  # (N, K) one-hot
    inside = np.einsum("ik,ij,jk->", members, graph, members)
    volumes = members.T @ graph.sum(1)
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
        graphs: symmetric non-negative ``(N, N)`` neighbour graphs of the same samples.
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
