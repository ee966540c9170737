"""Losses for manifold-valued representations."""

__all__: list[str] = []

from .infonce import InfoNCELoss, info_nce_loss  # noqa: E402

__all__ += ["InfoNCELoss", "info_nce_loss"]

from .projection_metric import (  # noqa: E402
    ClusterContrastiveLoss,
    DECClusteringLoss,
    ProjectionMetricContrastiveLoss,
    dec_target_distribution,
    projection_metric_distance,
    projection_metric_similarity,
)

__all__ += [
    "ClusterContrastiveLoss",
    "DECClusteringLoss",
    "ProjectionMetricContrastiveLoss",
    "dec_target_distribution",
    "projection_metric_distance",
    "projection_metric_similarity",
]
