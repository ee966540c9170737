r"""Multi-view Grassmann network for contrastive clustering (the DGMVCL architecture, ERA 2024).

For each view v of a sample, an encoder maps the features :math:`x^v \in \mathbb R^{d_v}` to a matrix
``(n, p)`` whose re-orthonormalisation is a point :math:`Y^v` of Gr(n, p) (the per-sample subspace of
DGMVCL, Sec. 3.1). A Grassmann block shared by the views, FRMap -> ReOrth (GrNet, Huang et al.,
AAAI 2018, eqs. 1-2), maps it to :math:`Z^v \in` Gr(m, p); ProjMap (ibid., eq. 3) gives the projector
:math:`Z^v Z^{v\top}`, whose isometric vectorisation feeds a softmax cluster head. The subspaces
:math:`Z^v` are trained with :class:`~manifoldnn.losses.ProjectionMetricContrastiveLoss` across views
and the heads with :class:`~manifoldnn.losses.ClusterContrastiveLoss`; the views of a sample are fused
into one subspace by the extrinsic mean (top-p eigenvectors of the mean projector, Chikuse 2003,
Sec. 8.2), on which the projection-metric clustering of :mod:`manifoldnn.clustering` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..layers.grassmann import FRMap, ProjMap, ReOrth
from ..linalg import symmetric_vectorize
from ..manifolds import extrinsic_mean

__all__ = ["MultiViewGrassmannNet", "MultiViewOutput", "fuse_subspaces"]


class MultiViewOutput(NamedTuple):
    """Outputs of :class:`MultiViewGrassmannNet` for V views of N samples.

    subspaces : ``(V, N, m, p)`` orthonormal bases :math:`Z^v` after the Grassmann block.
    probabilities : ``(V, N, K)`` soft cluster assignments of the cluster head.
    """

    subspaces: torch.Tensor
    probabilities: torch.Tensor


def fuse_subspaces(subspaces: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""Extrinsic mean over views (:func:`manifoldnn.manifolds.extrinsic_mean`): top-p
    eigenvectors of :math:`\sum_v w_v Z^v Z^{v\top}`.

    ``subspaces`` ``(V, N, m, p)`` (views first, as :class:`MultiViewOutput` holds them), optional
    ``weights`` ``(V,)`` -> ``(N, m, p)``. The minimiser of the summed squared projection distances
    to the views (Chikuse 2003, Sec. 8.2).
    """
    if subspaces.dim() != 4:
        raise ValueError(f"subspaces must have shape (V, N, m, p), got {tuple(subspaces.shape)}")
    if weights is not None and weights.shape != subspaces.shape[:1]:
        raise ValueError(f"weights must have shape (V,) = ({subspaces.shape[0]},)")
    return extrinsic_mean(subspaces.transpose(0, 1), weights)


class MultiViewGrassmannNet(nn.Module):
    r"""Per-view encoders -> per-sample subspaces -> shared FRMap/ReOrth/ProjMap -> cluster head.

    Parameters
    ----------
    view_dims : input feature size ``d_v`` of each view (images flattened).
    n_clusters : number of clusters K of the head.
    hidden : hidden widths of each view's MLP encoder (Linear -> BatchNorm -> ReLU per layer).
    ambient_dim : n, rows of the per-sample subspace produced by each encoder.
    rank : p, dimension of the subspaces.
    projected_dim : m, rows after the shared FRMap (``p <= m <= n``).
    dropout : dropout rate in the encoders.
    device, dtype : of the parameters.

    Shape
    -----
    ``forward(views)``: a sequence of V tensors ``(N, d_v)``; returns :class:`MultiViewOutput` with
    ``subspaces`` ``(V, N, m, p)`` and ``probabilities`` ``(V, N, K)``.
    Train the FRMap weight (a :class:`geoopt.ManifoldParameter`) with ``geoopt.optim.RiemannianAdam``.
    """

    def __init__(
        self,
        view_dims: Sequence[int],
        n_clusters: int,
        *,
        hidden: Sequence[int] = (256,),
        ambient_dim: int = 16,
        rank: int = 3,
        projected_dim: int = 8,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        if len(view_dims) < 1 or any(int(d) < 1 for d in view_dims):
            raise ValueError(f"view_dims must list positive feature sizes, got {list(view_dims)}")
        if n_clusters < 2:
            raise ValueError(f"n_clusters must be at least 2, got {n_clusters}")
        if not 1 <= rank <= projected_dim <= ambient_dim:
            raise ValueError(
                "need 1 <= rank <= projected_dim <= ambient_dim, got "
                f"rank={rank}, projected_dim={projected_dim}, ambient_dim={ambient_dim}"
            )
        self.view_dims = [int(d) for d in view_dims]
        self.n_clusters = n_clusters
        self.ambient_dim = ambient_dim
        self.rank = rank
        self.projected_dim = projected_dim
        self.encoders = nn.ModuleList(
            [
                self._encoder(d, list(hidden), ambient_dim * rank, dropout, factory_kwargs)
                for d in self.view_dims
            ]
        )
        self.reorth = ReOrth()
        self.frmap = FRMap(ambient_dim, projected_dim, **factory_kwargs)
        self.projmap = ProjMap()
        self.head = nn.Linear(
            projected_dim * (projected_dim + 1) // 2, n_clusters, **factory_kwargs
        )

    @staticmethod
    def _encoder(
        in_dim: int, hidden: list[int], out_dim: int, dropout: float, factory_kwargs: dict
    ) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [
                nn.Linear(in_dim, width, **factory_kwargs),
                nn.BatchNorm1d(width, **factory_kwargs),
                nn.ReLU(),
            ]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim, **factory_kwargs))
        return nn.Sequential(*layers)

    def encode_view(self, view: int, x: torch.Tensor) -> torch.Tensor:
        """Per-sample subspace of one view before the Grassmann block: ``(N, d_v) -> (N, n, p)``."""
        raw = self.encoders[view](x).unflatten(-1, (self.ambient_dim, self.rank))
        return self.reorth(raw)

    def grassmann_block(self, y: torch.Tensor) -> torch.Tensor:
        """FRMap -> ReOrth: ``(..., n, p) -> (..., m, p)``."""
        return self.reorth(self.frmap(y))

    def cluster_probabilities(self, z: torch.Tensor) -> torch.Tensor:
        """ProjMap -> vectorise -> linear -> softmax: ``(..., m, p) -> (..., K)``."""
        return torch.softmax(self.head(symmetric_vectorize(self.projmap(z))), dim=-1)

    def forward(self, views: Sequence[torch.Tensor]) -> MultiViewOutput:
        if len(views) != len(self.encoders):
            raise ValueError(f"expected {len(self.encoders)} views, got {len(views)}")
        counts = {v.shape[0] for v in views}
        if len(counts) != 1:
            raise ValueError(f"views have different sample counts: {[v.shape[0] for v in views]}")
        for index, (x, dim) in enumerate(zip(views, self.view_dims)):
            if x.dim() != 2 or x.shape[1] != dim:
                raise ValueError(f"view {index} must have shape (N, {dim}), got {tuple(x.shape)}")
        subspaces = torch.stack(
            [self.grassmann_block(self.encode_view(v, x)) for v, x in enumerate(views)]
        )
        return MultiViewOutput(subspaces, self.cluster_probabilities(subspaces))

    def extra_repr(self) -> str:
        return (
            f"view_dims={self.view_dims}, n_clusters={self.n_clusters}, "
            f"Gr({self.ambient_dim}, {self.rank}) -> Gr({self.projected_dim}, {self.rank})"
        )
