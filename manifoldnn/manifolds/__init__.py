"""Geometry: the Grassmann manifold for geoopt, an accurate sphere and hyperboloid, geoopt's other
manifolds, Karcher and extrinsic means, and the pairwise geometry that attention and metrics use.

geoopt's manifolds are re-exported unchanged (``Sphere`` and ``Lorentz`` are replaced by the
subclasses whose maps are accurate at short distances) so that models import every manifold from
one place.
"""

from geoopt.manifolds import (
    Euclidean,
    PoincareBall,
    SphereExact,
    Stiefel,
    SymmetricPositiveDefinite,
)

from .extrinsic import extrinsic_mean, mean_projector, top_eigenspace
from .geometry import (
    EuclideanGeometry,
    GrassmannGeometry,
    LorentzGeometry,
    ManifoldGeometry,
    PoincareBallGeometry,
    SPDGeometry,
    SphereGeometry,
    geometry_for,
    registered_geometries,
)
from .grassmann import Grassmann
from .karcher import karcher_mean
from .lorentz import Lorentz
from .projection import projection_metric_distance, projection_metric_similarity
from .sphere import Sphere

__all__ = [
    "Grassmann",
    "Sphere",
    "karcher_mean",
    "extrinsic_mean",
    "mean_projector",
    "top_eigenspace",
    "projection_metric_similarity",
    "projection_metric_distance",
    "ManifoldGeometry",
    "EuclideanGeometry",
    "SphereGeometry",
    "GrassmannGeometry",
    "SPDGeometry",
    "PoincareBallGeometry",
    "LorentzGeometry",
    "Lorentz",
    "geometry_for",
    "registered_geometries",
    "Euclidean",
    "PoincareBall",
    "SphereExact",
    "Stiefel",
    "SymmetricPositiveDefinite",
]
