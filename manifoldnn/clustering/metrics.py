"""External clustering metrics: accuracy under the best cluster-to-class matching, NMI, ARI, purity.

All functions take two integer label vectors of the same length (NumPy arrays, lists or tensors) and
return a Python float; cluster and class ids may be arbitrary integers.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "contingency_matrix",
    "clustering_accuracy",
    "best_matching",
    "normalized_mutual_info",
    "adjusted_rand_index",
    "purity",
    "clustering_report",
]


def _as_labels(name: str, labels) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D label vector, got shape {array.shape}")
    if array.size and not (
        np.issubdtype(array.dtype, np.integer) or np.all(array == np.round(array))
    ):
        raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")
    return array


def _pair(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray]:
    truth = _as_labels("labels_true", labels_true)
    pred = _as_labels("labels_pred", labels_pred)
    if truth.shape != pred.shape:
        raise ValueError(
            f"labels_true and labels_pred must have the same length, got {truth.size} and {pred.size}"
        )
    if truth.size == 0:
        raise ValueError("labels are empty")
    return truth, pred


def contingency_matrix(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts ``C[i, j]`` of samples in class ``classes[i]`` and cluster ``clusters[j]``.

    Returns ``(C, classes, clusters)`` with ``C`` of shape ``(n_classes, n_clusters)``.
    """
    truth, pred = _pair(labels_true, labels_pred)
    classes, truth_index = np.unique(truth, return_inverse=True)
    clusters, pred_index = np.unique(pred, return_inverse=True)
    counts = np.zeros((classes.size, clusters.size), dtype=np.int64)
    np.add.at(counts, (truth_index, pred_index), 1)
    return counts, classes, clusters


def best_matching(labels_true, labels_pred) -> dict:
    """Cluster -> class assignment maximising the matched count (Hungarian algorithm).

    Kuhn 1955 / Munkres 1957 via ``scipy.optimize.linear_sum_assignment`` on the contingency matrix.
    Clusters left unmatched (more clusters than classes) map to their majority class.
    """
    counts, classes, clusters = contingency_matrix(labels_true, labels_pred)
    rows, cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
    mapping = {clusters[j]: classes[counts[:, j].argmax()] for j in range(clusters.size)}
    mapping.update({clusters[c]: classes[r] for r, c in zip(rows, cols)})
    return mapping


def clustering_accuracy(labels_true, labels_pred) -> float:
    r"""ACC = :math:`\max_{m} \frac1N \sum_i 1[y_i = m(c_i)]` over one-to-one maps m (Hungarian).

    The standard unsupervised clustering accuracy (Xie, Girshick & Farhadi, ICML 2016, Sec. 5.2),
    with the optimal matching found by ``scipy.optimize.linear_sum_assignment``.
    """
    counts, _, _ = contingency_matrix(labels_true, labels_pred)
    rows, cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """NMI with the arithmetic-mean normalisation (Strehl & Ghosh 2002 use the geometric; scikit-learn's
    default is arithmetic, which is what multi-view clustering papers report)."""
    truth, pred = _pair(labels_true, labels_pred)
    return float(normalized_mutual_info_score(truth, pred))


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985), via scikit-learn."""
    truth, pred = _pair(labels_true, labels_pred)
    return float(adjusted_rand_score(truth, pred))


def purity(labels_true, labels_pred) -> float:
    r"""Purity :math:`\frac1N \sum_j \max_i C_{ij}` (Manning, Raghavan & Schütze 2008, eq. 16.1)."""
    counts, _, _ = contingency_matrix(labels_true, labels_pred)
    return float(counts.max(axis=0).sum() / counts.sum())


def clustering_report(labels_true, labels_pred) -> dict[str, float]:
    """``{"acc", "nmi", "ari", "purity"}`` of a clustering against ground-truth labels."""
    return {
        "acc": clustering_accuracy(labels_true, labels_pred),
        "nmi": normalized_mutual_info(labels_true, labels_pred),
        "ari": adjusted_rand_index(labels_true, labels_pred),
        "purity": purity(labels_true, labels_pred),
    }
