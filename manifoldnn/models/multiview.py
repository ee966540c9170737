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
from ..validation import (
    check_positive_ints,
    renamed_arguments,
    renamed_attribute,
)

__all__ = ["MultiViewGrassmannNet", "MultiViewOutput", "fuse_subspaces"]


class MultiViewOutput(NamedTuple):
    """Outputs of :class:`MultiViewGrassmannNet` for V views of N samples.

    Attributes:
        subspaces: ``(V, N, m, p)`` orthonormal bases :math:`Z^v` after the Grassmann block.
        probabilities: ``(V, N, K)`` soft cluster assignments of the cluster head.
    """

    subspaces: torch.Tensor
    probabilities: torch.Tensor


def fuse_subspaces(subspaces: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""Extrinsic mean over views (:func:`manifoldnn.manifolds.extrinsic_mean`): top-p
    eigenvectors of :math:`\sum_v w_v Z^v Z^{v\top}`.

    The minimiser of the summed squared projection distances to the views (Chikuse 2003,
    Sec. 8.2).

    Args:
        subspaces: ``(V, N, m, p)`` bases, views first (as :class:`MultiViewOutput` holds them).
        weights: ``(V,)`` view weights. Default: ``None`` (equal weights).

    Returns:
        The fused bases ``(N, m, p)``.
    """
    if subspaces.dim() != 4:
        raise ValueError(f"subspaces must have shape (V, N, m, p), got {tuple(subspaces.shape)}")
    if weights is not None and weights.shape != subspaces.shape[:1]:
        raise ValueError(f"weights must have shape (V,) = ({subspaces.shape[0]},)")
    return extrinsic_mean(subspaces.transpose(0, 1), weights)


class MultiViewGrassmannNet(nn.Module):
    r"""Per-view encoders -> per-sample subspaces -> shared FRMap/ReOrth/ProjMap -> cluster head.

    Args:
        view_sizes: the input feature size ``d_v`` of each view (images flattened).
        n_clusters: the number of clusters K of the head.
        hidden: the hidden widths of each view's MLP encoder (Linear -> BatchNorm -> ReLU per
            layer). Default: ``(256,)``.
        in_size: n, the ambient size of the per-sample subspaces the encoders produce (the
            in_size of the shared FRMap). Default: ``16``.
        rank: p, the dimension of the subspaces. Default: ``3``.
        out_size: m, the ambient size after the shared FRMap (``rank <= out_size <= in_size``).
            Default: ``8``.
        dropout: the dropout rate in the encoders. Default: ``0.0``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        ``forward(views)``: a sequence of V tensors ``(N, d_v)``; returns
        :class:`MultiViewOutput` with ``subspaces`` ``(V, N, m, p)`` and ``probabilities``
        ``(V, N, K)``.

    Train the FRMap weight (a :class:`geoopt.ManifoldParameter`) with
    ``geoopt.optim.RiemannianAdam``.

    Examples::

        >>> model = MultiViewGrassmannNet([20, 30], 4, hidden=(32,), in_size=10, rank=2, out_size=6)
        >>> out = model([torch.randn(8, 20), torch.randn(8, 30)])
        >>> out.subspaces.shape, out.probabilities.shape
        (torch.Size([2, 8, 6, 2]), torch.Size([2, 8, 4]))
    """

    view_dims = renamed_attribute("view_dims", "view_sizes")
    ambient_dim = renamed_attribute("ambient_dim", "in_size")
    projected_dim = renamed_attribute("projected_dim", "out_size")

    @renamed_arguments(view_dims="view_sizes", ambient_dim="in_size", projected_dim="out_size")
    def __init__(
        self,
        view_sizes: Sequence[int],
        n_clusters: int,
        *,
        hidden: Sequence[int] = (256,),
        in_size: int = 16,
        rank: int = 3,
        out_size: int = 8,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        if len(view_sizes) < 1 or any(int(d) < 1 for d in view_sizes):
            raise ValueError(f"view_sizes must list positive feature sizes, got {list(view_sizes)}")
        if n_clusters < 2:
            raise ValueError(f"n_clusters must be at least 2, got {n_clusters}")
        check_positive_ints(in_size=in_size, rank=rank, out_size=out_size)
        if not rank <= out_size <= in_size:
            raise ValueError(
                "need rank <= out_size <= in_size, got "
                f"rank={rank}, out_size={out_size}, in_size={in_size}"
            )
        self.view_sizes = [int(d) for d in view_sizes]
        self.n_clusters = n_clusters
        self.in_size = in_size
        self.rank = rank
        self.out_size = out_size
        self.encoders = nn.ModuleList(
            [
                self._encoder(d, list(hidden), in_size * rank, dropout, factory_kwargs)
                for d in self.view_sizes
            ]
        )
        self.reorth = ReOrth()
        self.frmap = FRMap(in_size, out_size, **factory_kwargs)
        self.projmap = ProjMap()
        self.head = nn.Linear(out_size * (out_size + 1) // 2, n_clusters, **factory_kwargs)

    @staticmethod
    def _encoder(
        in_size: int, hidden: list[int], out_size: int, dropout: float, factory_kwargs: dict
    ) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [
                nn.Linear(in_size, width, **factory_kwargs),
                nn.BatchNorm1d(width, **factory_kwargs),
                nn.ReLU(),
            ]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_size = width
        layers.append(nn.Linear(in_size, out_size, **factory_kwargs))
        return nn.Sequential(*layers)

    def encode_view(self, view: int, x: torch.Tensor) -> torch.Tensor:
        """Per-sample subspace of one view before the Grassmann block: ``(N, d_v) -> (N, n, p)``."""
        raw = self.encoders[view](x).unflatten(-1, (self.in_size, self.rank))
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
        for index, (x, dim) in enumerate(zip(views, self.view_sizes)):
            if x.dim() != 2 or x.shape[1] != dim:
                raise ValueError(f"view {index} must have shape (N, {dim}), got {tuple(x.shape)}")
        subspaces = torch.stack(
            [self.grassmann_block(self.encode_view(v, x)) for v, x in enumerate(views)]
        )
        return MultiViewOutput(subspaces, self.cluster_probabilities(subspaces))

    def extra_repr(self) -> str:
        return (
            f"view_sizes={self.view_sizes}, n_clusters={self.n_clusters}, "
            f"Gr({self.in_size}, {self.rank}) -> Gr({self.out_size}, {self.rank})"
        )
