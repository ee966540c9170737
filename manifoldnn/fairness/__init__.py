"""Fairness on manifolds: a Riemannian metric stretched along the gradients of bias functions.

:class:`FairnessMetric` is used as a squared distance by geodesic attention
(:class:`manifoldnn.layers.GeodesicAttention`, ``metric=``) or on its own.
"""

from .metric import AssociationBias, FairnessMetric, LinearBias

__all__ = ["FairnessMetric", "LinearBias", "AssociationBias"]
