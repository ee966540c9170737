"""Geometry: the Grassmann manifold for geoopt, an accurate sphere, geoopt's other manifolds, Karcher
and extrinsic means, and the pairwise geometry that attention and metrics use.

SPD matrices carry four metrics, one geoopt manifold and one geometry class each (affine-invariant:
geoopt's ``SymmetricPositiveDefinite``; ``LogEuclideanSPD``, ``LogCholeskySPD``,
``BuresWassersteinSPD``; ``spd_manifold(metric)`` by name).

geoopt's manifolds are re-exported unchanged (``Sphere`` is replaced by the subclass whose distance
and logarithm are accurate at small angles) so that models import every manifold from one place.
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
    ManifoldGeometry,
    PoincareBallGeometry,
    SPDGeometry,
    SphereGeometry,
    geometry_for,
    registered_geometries,
)
from .grassmann import Grassmann
from .karcher import karcher_mean
from .projection import projection_metric_distance, projection_metric_similarity
from .spd import (
    SPD_METRICS,
    BuresWassersteinGeometry,
    BuresWassersteinSPD,
    LogCholeskyGeometry,
    LogCholeskySPD,
    LogEuclideanGeometry,
    LogEuclideanSPD,
    spd_manifold,
)
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
    "LogEuclideanSPD",
    "LogCholeskySPD",
    "BuresWassersteinSPD",
    "LogEuclideanGeometry",
    "LogCholeskyGeometry",
    "BuresWassersteinGeometry",
    "SPD_METRICS",
    "spd_manifold",
    "geometry_for",
    "registered_geometries",
    "Euclidean",
    "PoincareBall",
    "SphereExact",
    "Stiefel",
    "SymmetricPositiveDefinite",
]
