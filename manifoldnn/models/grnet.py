r"""A small Grassmann network (GrNet, Huang, Wu & Van Gool, AAAI 2018, Fig. 1) and a classification
head on projectors.

Architecture of :class:`GrNet` (channel axis at dimension -3, see
:mod:`manifoldnn.layers.grassmann`)::

    x (..., n, m) --SubspaceEmbedding(p)--> Y (..., n, p) --unsqueeze--> (..., 1, n, p)
      --FRMap(n, d_1, channels=C)--> ReOrth --> (..., C, d_1, p)                 # projection block
      --pool C -> C' = C / pool_size:  ProjMap -> ProjPooling("across") -> OrthMap(p)
                                      or KarcherPool(group_size=pool_size)      # pooling block
      --FRMap(d_1, d_2, channels=C')--> ReOrth --> ... --> (..., C', d_L, p)      # projection blocks
      --ProjMap--> (..., C', d_L, d_L) --ProjectorClassifier--> logits (..., num_classes)

Every FRMap weight is a :class:`geoopt.ManifoldParameter`; train with
:class:`geoopt.optim.RiemannianAdam` (or ``RiemannianSGD``), which keeps them on the Stiefel manifold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers.grassmann import (
    FRMap,
    KarcherPool,
    OrthMap,
    ProjMap,
    ProjPooling,
    ReOrth,
    SubspaceEmbedding,
)
from ..linalg import symmetric_vectorize

__all__ = ["ProjectorClassifier", "GrNet"]


class ProjectorClassifier(nn.Module):
    r"""Linear classifier on (multi-channel) projectors, the FC + softmax output of GrNet (Huang et
    al. 2018, output block): ``logits = A [vec(P_1); ...; vec(P_C)] + b``.

    Input ``(..., n, n)`` (``channels=1``, no channel axis) or ``(..., C, n, n)``; output
    ``(..., num_classes)``.  ``vec`` is :func:`symmetric_vectorize`, so the logits are affine in the
    projection embedding of the subspaces.  ``batch_norm=True`` standardises the vectorised
    features with :class:`torch.nn.BatchNorm1d` (no affine part) before the linear map (the same
    role as feature standardisation before a logistic regression).
    """

    def __init__(
        self,
        n: int,
        num_classes: int,
        channels: int = 1,
        batch_norm: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        if n < 1 or num_classes < 1 or channels < 1:
            raise ValueError(
                f"ProjectorClassifier needs positive sizes, got n={n}, num_classes={num_classes}, "
                f"channels={channels}"
            )
        self.n = n
        self.channels = channels
        self.num_classes = num_classes
        features = channels * n * (n + 1) // 2
        self.norm = nn.BatchNorm1d(features, affine=False, **factory_kwargs) if batch_norm else None
        self.linear = nn.Linear(features, num_classes, **factory_kwargs)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        expected = (self.n, self.n) if self.channels == 1 else (self.channels, self.n, self.n)
        if p.dim() < len(expected) or tuple(p.shape[-len(expected) :]) != expected:
            raise ValueError(
                f"ProjectorClassifier expects (..., {', '.join(map(str, expected))}), "
                f"got shape {tuple(p.shape)}"
            )
        features = symmetric_vectorize(p)
        if self.channels > 1:
            features = features.flatten(-2)
        if self.norm is not None:
            flat = features.reshape(-1, features.shape[-1])
            features = self.norm(flat).reshape(features.shape)
        return self.linear(features)

    def extra_repr(self) -> str:
        return f"n={self.n}, num_classes={self.num_classes}, channels={self.channels}"


class GrNet(nn.Module):
    r"""GrNet-style classifier on the Grassmannian (Huang, Wu & Van Gool, AAAI 2018).

    Parameters
    ----------
    in_dim : ambient dimension n of the input subspaces (rows of the input).
    p : subspace dimension.
    num_classes : number of classes.
    dims : output sizes ``d_1 >= d_2 >= ...`` of the FRMap layers (each ``<= `` the previous, ``>= p``).
    channels : number C of FRMap channels of the first block.
    pool_size : channels averaged by the pooling block after the first block (``1``: no pooling).
    pooling : ``"projection"`` (ProjMap -> ProjPooling -> OrthMap, as in GrNet) or ``"karcher"``
        (intrinsic KarcherPool; undefined for nearly orthogonal channels, see its docstring).
    embed : if True the input is a feature matrix ``(..., in_dim, m)`` turned into its dominant
        p-dimensional subspace by :class:`SubspaceEmbedding`; otherwise a basis ``(..., in_dim, p)``.
    center : centre the feature vectors before the embedding.
    batch_norm : batch-normalise the vectorised projectors in the head (see
        :class:`ProjectorClassifier`).
    in_channels : number K of input subspaces per sample (several subspaces of one sample, e.g. of
        several time windows).  With ``K > 1`` the input has a channel axis at dimension -3,
        ``(..., K, in_dim, m)`` (or ``(..., K, in_dim, p)``), ``channels`` must be a multiple of K
        and input channel k feeds the ``channels / K`` FRMap channels ``k * channels / K, ...,
        (k + 1) * channels / K - 1`` (each with its own weight).
    device, dtype : of the parameters.

    Shapes: ``(..., in_dim, m)`` (or ``(..., in_dim, p)``) -> logits ``(..., num_classes)``; with
    ``in_channels=K > 1``, ``(..., K, in_dim, m)`` (or ``(..., K, in_dim, p)``) -> ``(...,
    num_classes)``.
    :meth:`projectors` returns the last projectors ``(..., C', d_L, d_L)`` before the head.
    """

    def __init__(
        self,
        in_dim: int,
        p: int,
        num_classes: int,
        dims: Sequence[int] = (10, 8),
        channels: int = 4,
        pool_size: int = 2,
        pooling: str = "projection",
        embed: bool = True,
        center: bool = False,
        batch_norm: bool = False,
        in_channels: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        dims = tuple(int(d) for d in dims)
        if len(dims) < 1:
            raise ValueError("GrNet needs at least one FRMap size in dims")
        sizes = (in_dim,) + dims
        for previous, current in zip(sizes[:-1], sizes[1:]):
            if current > previous:
                raise ValueError(f"GrNet dims must not increase, got {sizes}")
        if p > dims[-1]:
            raise ValueError(f"GrNet needs p <= every FRMap size, got p={p} and dims={dims}")
        if channels < 1 or pool_size < 1 or channels % pool_size:
            raise ValueError(
                f"GrNet needs channels divisible by pool_size, got {channels} and {pool_size}"
            )
        if in_channels < 1 or channels % in_channels:
            raise ValueError(
                f"GrNet needs channels divisible by in_channels, got channels={channels} and "
                f"in_channels={in_channels}"
            )
        if pooling not in ("projection", "karcher"):
            raise ValueError(f"GrNet pooling must be 'projection' or 'karcher', got {pooling!r}")
        self.in_dim, self.p, self.dims = in_dim, p, dims
        self.in_channels = in_channels
        self._fan_out = channels // in_channels
        self.embedding = SubspaceEmbedding(p, center=center) if embed else None
        self.first = nn.Sequential(
            FRMap(in_dim, dims[0], channels=channels, **factory_kwargs), ReOrth()
        )
        pooled_channels = channels // pool_size
        if pool_size == 1:
            self.pool = nn.Identity()
        elif pooling == "projection":
            self.pool = nn.Sequential(
                ProjMap(), ProjPooling("across", kernel_size=pool_size), OrthMap(p)
            )
        else:
            self.pool = KarcherPool(group_size=pool_size, **factory_kwargs)
        blocks = []
        for previous, current in zip(dims[:-1], dims[1:]):
            blocks += [
                FRMap(previous, current, channels=pooled_channels, **factory_kwargs),
                ReOrth(),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.projmap = ProjMap()
        self.head = ProjectorClassifier(
            dims[-1], num_classes, channels=pooled_channels, batch_norm=batch_norm, **factory_kwargs
        )
        self._pooled_channels = pooled_channels

    def projectors(self, x: torch.Tensor) -> torch.Tensor:
        """Projectors ``(..., C', d_L, d_L)`` fed to the head (or ``(..., d_L, d_L)`` if C' == 1)."""
        if self.in_channels > 1:
            if x.dim() < 3 or x.shape[-3] != self.in_channels or x.shape[-2] != self.in_dim:
                raise ValueError(
                    f"GrNet with in_channels={self.in_channels} expects (..., "
                    f"{self.in_channels}, in_dim={self.in_dim}, m), got {tuple(x.shape)}"
                )
        elif x.dim() < 2 or x.shape[-2] != self.in_dim:
            raise ValueError(f"GrNet expects (..., in_dim={self.in_dim}, m), got {tuple(x.shape)}")
        y = self.embedding(x) if self.embedding is not None else x
        if self.in_channels == 1:
            y = y.unsqueeze(-3)
        elif self._fan_out > 1:
            y = y.repeat_interleave(self._fan_out, dim=-3)
        y = self.first(y)
        y = self.blocks(self.pool(y))
        projectors = self.projmap(y)
        return projectors.squeeze(-3) if self._pooled_channels == 1 else projectors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.projectors(x))
