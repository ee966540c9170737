"""Neural-network layers acting on manifold-valued data.

* :mod:`.grassmann`: Grassmann network primitives (FRMap, ReOrth, ProjMap, ProjPooling,
  KarcherPool, OrthMap, SubspaceEmbedding);
* :mod:`.attention` and :mod:`.manifold_linear`: geodesic-distance attention and its
  manifold-preserving query/key/value maps, on any :class:`~manifoldnn.manifolds.ManifoldGeometry`;
* :mod:`.favor`: the same attention in linear time with FAVOR+ positive random features;
* :mod:`.fusion`: the orthogonal direct-sum fusion of two modalities;
* :mod:`.hyperbolic`: the Poincaré fully connected layer, hyperbolic multinomial logistic
  regression and the Lorentz linear layer.

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
from .hyperbolic import HyperbolicMLR, LorentzLinear, PoincareLinear
from .manifold_linear import ManifoldLinear

__all__ = [
    "PoincareLinear",
    "HyperbolicMLR",
    "LorentzLinear",
    "FRMap",
    "KarcherPool",
    "OrthMap",
    "ProjMap",
    "ProjPooling",
    "ReOrth",
    "SubspaceEmbedding",
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
