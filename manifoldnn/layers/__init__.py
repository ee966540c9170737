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
