"""Scikit-learn-style clustering estimators and clustering metrics."""

from ..manifolds import extrinsic_mean  # re-exported (it lived here before the layout by concern)
from .kmeans import GrassmannKMeans
from .metrics import (
    adjusted_rand_index,
    best_matching,
    clustering_accuracy,
    clustering_report,
    contingency_matrix,
    normalized_mutual_info,
    purity,
)
from .multiview import MultiViewSubspaceClustering, auto_restarts, confident_samples
from .preprocessing import mutual_neighbor_graph, preprocess_views
from .selection import graph_modularity, multiview_knn_graph, select_partition
from .spectral import GrassmannSpectralClustering, projection_affinity, spectral_clustering_of_views

__all__ = [
    "GrassmannKMeans",
    "GrassmannSpectralClustering",
    "extrinsic_mean",
    "projection_affinity",
    "spectral_clustering_of_views",
    "MultiViewSubspaceClustering",
    "auto_restarts",
    "confident_samples",
    "mutual_neighbor_graph",
    "preprocess_views",
    "graph_modularity",
    "multiview_knn_graph",
    "select_partition",
    "adjusted_rand_index",
    "best_matching",
    "clustering_accuracy",
    "clustering_report",
    "contingency_matrix",
    "normalized_mutual_info",
    "purity",
]
