"""Geometry: the Grassmann manifold for geoopt, an accurate sphere and hyperboloid, geoopt's other
manifolds, Karcher and extrinsic means, and the pairwise geometry that attention and metrics use.

SPD matrices carry four metrics, one geoopt manifold and one geometry class each (affine-invariant:
geoopt's ``SymmetricPositiveDefinite``; ``LogEuclideanSPD``, ``LogCholeskySPD``,
``BuresWassersteinSPD``; ``spd_manifold(metric)`` by name).

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

from . import extrinsic, geometry, grassmann, karcher, lorentz, projection, spd, sphere
from .extrinsic import *  # noqa: F403
from .geometry import *  # noqa: F403
from .grassmann import *  # noqa: F403
from .karcher import *  # noqa: F403
from .lorentz import *  # noqa: F403
from .projection import *  # noqa: F403
from .spd import *  # noqa: F403
from .sphere import *  # noqa: F403

# The package's names are its modules' ``__all__`` (one list each) and geoopt's re-exported manifolds.
__all__ = [
    *grassmann.__all__,
    *sphere.__all__,
    *karcher.__all__,
    *extrinsic.__all__,
    *projection.__all__,
    *geometry.__all__,
    *spd.__all__,
    *lorentz.__all__,
    "Euclidean",
    "PoincareBall",
    "SphereExact",
    "Stiefel",
    "SymmetricPositiveDefinite",
]
