"""Neural-network layers acting on manifold-valued data."""

__all__: list[str] = []

from .orthogonal_fusion import OrthogonalDirectSum, OrthonormalFrame  # noqa: E402

__all__ += ["OrthogonalDirectSum", "OrthonormalFrame"]

from .grassmann_layers import (  # noqa: E402
    FRMap,
    KarcherPool,
    OrthMap,
    ProjMap,
    ProjPooling,
    ReOrth,
    SubspaceEmbedding,
)

__all__ += [
    "FRMap",
    "KarcherPool",
    "OrthMap",
    "ProjMap",
    "ProjPooling",
    "ReOrth",
    "SubspaceEmbedding",
]

from .grnet import GrNet, ProjectorClassifier, symmetric_vectorize  # noqa: E402

__all__ += ["GrNet", "ProjectorClassifier", "symmetric_vectorize"]

from .attention import GeodesicAttention, geodesic_attention  # noqa: E402
from .attention_maps import ManifoldLinear  # noqa: E402
from .fairness import AssociationBias, FairnessMetric, LinearBias  # noqa: E402

__all__ += [
    "GeodesicAttention",
    "geodesic_attention",
    "ManifoldLinear",
    "AssociationBias",
    "FairnessMetric",
    "LinearBias",
]

from .multiview import MultiViewGrassmannNet, MultiViewOutput, fuse_subspaces  # noqa: E402

__all__ += ["MultiViewGrassmannNet", "MultiViewOutput", "fuse_subspaces"]
