"""Neural-network layers acting on manifold-valued data.

* :mod:`.grassmann`: Grassmann network primitives (FRMap, ReOrth, ProjMap, ProjPooling,
  KarcherPool, OrthMap, SubspaceEmbedding);
* :mod:`.attention` and :mod:`.manifold_linear`: geodesic-distance attention and its
  manifold-preserving query/key/value maps, on any :class:`~manifoldnn.manifolds.ManifoldGeometry`;
* :mod:`.favor`: the same attention in linear time with FAVOR+ positive random features;
* :mod:`.spd`: SPD matrix network layers (BiMap, ReEig, LogEig, ExpEig, CovPool, SPDBatchNorm);
* :mod:`.fusion`: the orthogonal direct-sum fusion of two modalities.

Whole networks (GrNet, MultiViewGrassmannNet) are in :mod:`manifoldnn.models`, the fairness metric
in :mod:`manifoldnn.fairness`, orthonormal-frame parametrisations in
:mod:`manifoldnn.parametrizations`.
"""

from .attention import GeodesicAttention, ManifoldAttentionHeads, geodesic_attention
from .favor import (
    FavorAttention,
    favor_attention,
    favor_kernel_sums,
    orthogonal_random_features,
    positive_random_features,
)
from .fusion import OrthogonalDirectSum, whitened_cca
from .grassmann import (
    FRMap,
    KarcherPool,
    OrthMap,
    ProjMap,
    ProjPooling,
    ReOrth,
    SubspaceEmbedding,
)
from .manifold_linear import ManifoldLinear
from .spd import BiMap, CovPool, ExpEig, LogEig, ReEig, SPDBatchNorm

__all__ = [
    "FRMap",
    "KarcherPool",
    "OrthMap",
    "ProjMap",
    "ProjPooling",
    "ReOrth",
    "SubspaceEmbedding",
    "BiMap",
    "ReEig",
    "LogEig",
    "ExpEig",
    "CovPool",
    "SPDBatchNorm",
    "GeodesicAttention",
    "ManifoldAttentionHeads",
    "geodesic_attention",
    "ManifoldLinear",
    "OrthogonalDirectSum",
    "whitened_cca",
    "FavorAttention",
    "favor_attention",
    "favor_kernel_sums",
    "orthogonal_random_features",
    "positive_random_features",
]
