"""Geometry: the Grassmann manifold for geoopt, geoopt's own manifolds, and Karcher means.

geoopt's manifolds are re-exported unchanged so that models can import every manifold from one place.
"""

from geoopt.manifolds import (
    Euclidean,
    PoincareBall,
    Sphere,
    SphereExact,
    Stiefel,
    SymmetricPositiveDefinite,
)

from .grassmann import Grassmann
from .karcher import karcher_mean

__all__ = [
    "Grassmann",
    "karcher_mean",
    "Euclidean",
    "PoincareBall",
    "Sphere",
    "SphereExact",
    "Stiefel",
    "SymmetricPositiveDefinite",
]
