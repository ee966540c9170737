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

import functools
import warnings
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
from ..validation import (
    check_choice,
    check_positive_ints,
    renamed_arguments,
    renamed_attribute,
)

__all__ = ["ProjectorClassifier", "GrNet"]


def _options_by_keyword(first: int, names: tuple[str, ...]):
    """Accept, for one release and with a ``FutureWarning``, the options ``names`` passed by
    position after the ``first`` size arguments of a constructor whose options became
    keyword-only."""

    def decorate(init):
        @functools.wraps(init)
        def wrapper(self, *args, **kwargs):
            if len(args) > first:
                extra = args[first:]
                if len(extra) > len(names):
                    raise TypeError(
                        f"{type(self).__name__}() takes {first} positional size arguments, got "
                        f"{len(args)}"
                    )
                moved = dict(zip(names, extra))
                for name in moved:
                    if name in kwargs:
                        raise TypeError(f"{type(self).__name__}() got {name!r} twice")
                warnings.warn(
                    f"{type(self).__name__}(): pass {', '.join(moved)} by keyword (since 0.2.0); "
                    "positional options will be refused in the next release",
                    FutureWarning,
                    stacklevel=2,
                )
                args, kwargs = args[:first], {**kwargs, **moved}
            return init(self, *args, **kwargs)

        return wrapper

    return decorate


class ProjectorClassifier(nn.Module):
    r"""Linear classifier on (multi-channel) projectors, the FC + softmax output of GrNet (Huang,
    Wu & Van Gool 2018, output block): :math:`\text{logits} = A [\mathrm{vec}(P_1); \dots;
    \mathrm{vec}(P_C)] + b`.

    ``vec`` is :func:`~manifoldnn.linalg.symmetric_vectorize`, so the logits are affine in the
    projection embedding of the subspaces. ``batch_norm=True`` standardises the vectorised
    features with :class:`torch.nn.BatchNorm1d` (no affine part) before the linear map (the same
    role as feature standardisation before a logistic regression).

    Args:
        in_size: n, the size of the ``(n, n)`` projectors.
        num_classes: the number of logits.
        channels: C, the number of projectors per sample. Default: ``1`` (no channel axis).
        batch_norm: standardise the vectorised projectors. Default: ``False``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        ``(..., n, n)`` (``channels=1``) or ``(..., C, n, n)`` ``-> (..., num_classes)``.

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> y = Grassmann().random(5, 6, 2)
        >>> ProjectorClassifier(6, 3)(y @ y.transpose(-1, -2)).shape
        torch.Size([5, 3])
    """

    n = renamed_attribute("n", "in_size")

    @_options_by_keyword(2, ("channels", "batch_norm"))
    @renamed_arguments(n="in_size")
    def __init__(
        self,
        in_size: int,
        num_classes: int,
        *,
        channels: int = 1,
        batch_norm: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        check_positive_ints(in_size=in_size, num_classes=num_classes, channels=channels)
        self.in_size = in_size
        self.channels = channels
        self.num_classes = num_classes
        features = channels * in_size * (in_size + 1) // 2
        self.norm = nn.BatchNorm1d(features, affine=False, **factory_kwargs) if batch_norm else None
        self.linear = nn.Linear(features, num_classes, **factory_kwargs)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        n = self.in_size
        expected = (n, n) if self.channels == 1 else (self.channels, n, n)
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
        return f"in_size={self.in_size}, num_classes={self.num_classes}, channels={self.channels}"


class GrNet(nn.Module):
    r"""GrNet-style classifier on the Grassmannian (Huang, Wu & Van Gool, AAAI 2018, Fig. 1).

    See the module docstring for the architecture. Every FRMap weight is a
    :class:`geoopt.ManifoldParameter`: train with :class:`geoopt.optim.RiemannianAdam`.

    Args:
        in_size: n, the ambient size of the input subspaces (rows of the input).
        rank: p, the dimension of the subspaces.
        num_classes: the number of logits.
        out_sizes: the out_size ``d_1 >= d_2 >= ...`` of each FRMap layer (each ``<=`` the
            previous and ``>= rank``). Default: ``(10, 8)``.
        channels: the number C of FRMap channels of the first block. Default: ``4``.
        pool_size: channels averaged by the pooling block after the first block (``1``: no
            pooling). Default: ``2``.
        pooling: ``"projection"`` (ProjMap -> ProjPooling -> OrthMap, as in GrNet) or
            ``"karcher"`` (intrinsic KarcherPool; undefined for nearly orthogonal channels, see
            its docstring). Default: ``"projection"``.
        embed: the input is a feature matrix ``(..., n, m)`` turned into its dominant
            rank-dimensional subspace by :class:`~manifoldnn.layers.SubspaceEmbedding`; with
            ``False`` it is a basis ``(..., n, rank)``. Default: ``True``.
        center: centre the feature vectors before the embedding. Default: ``False``.
        batch_norm: batch-normalise the vectorised projectors in the head (see
            :class:`ProjectorClassifier`). Default: ``False``.
        in_channels: the number K of input subspaces per sample (e.g. of several time windows).
            With ``K > 1`` the input has a channel axis at dimension -3, ``channels`` must be a
            multiple of K and input channel k feeds the ``channels / K`` FRMap channels
            ``k * channels / K, ..., (k + 1) * channels / K - 1``. Default: ``1``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        - Input: ``(..., n, m)`` (or ``(..., n, rank)`` with ``embed=False``); with
          ``in_channels=K > 1``, ``(..., K, n, m)`` (or ``(..., K, n, rank)``).
        - Output: logits ``(..., num_classes)``.

        :meth:`projectors` returns the last projectors ``(..., C', d_L, d_L)`` before the head.

    Examples::

        >>> model = GrNet(12, 3, 4, out_sizes=(10, 8), channels=4, pool_size=2)
        >>> model(torch.randn(5, 12, 40)).shape
        torch.Size([5, 4])
    """

    in_dim = renamed_attribute("in_dim", "in_size")
    p = renamed_attribute("p", "rank")
    dims = renamed_attribute("dims", "out_sizes")

    @_options_by_keyword(
        3,
        (
            "out_sizes", "channels", "pool_size", "pooling", "embed", "center", "batch_norm",
            "in_channels",
        ),
    )  # fmt: skip
    @renamed_arguments(in_dim="in_size", p="rank", dims="out_sizes")
    def __init__(
        self,
        in_size: int,
        rank: int,
        num_classes: int,
        *,
        out_sizes: Sequence[int] = (10, 8),
        channels: int = 4,
        pool_size: int = 2,
        pooling: str = "projection",
        embed: bool = True,
        center: bool = False,
        batch_norm: bool = False,
        in_channels: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        check_positive_ints(
            in_size=in_size,
            rank=rank,
            num_classes=num_classes,
            channels=channels,
            pool_size=pool_size,
            in_channels=in_channels,
        )
        check_choice(pooling, "pooling", ("projection", "karcher"))
        out_sizes = tuple(int(d) for d in out_sizes)
        if len(out_sizes) < 1:
            raise ValueError("out_sizes must list at least one FRMap size, got ()")
        sizes = (in_size,) + out_sizes
        for previous, current in zip(sizes[:-1], sizes[1:]):
            if current > previous:
                raise ValueError(f"out_sizes must not increase from in_size, got {sizes}")
        if rank > out_sizes[-1]:
            raise ValueError(
                f"rank must be <= every FRMap size, got rank={rank} and out_sizes={out_sizes}"
            )
        if channels % pool_size:
            raise ValueError(
                f"channels must be divisible by pool_size, got channels={channels} and "
                f"pool_size={pool_size}"
            )
        if channels % in_channels:
            raise ValueError(
                f"channels must be divisible by in_channels, got channels={channels} and "
                f"in_channels={in_channels}"
            )
        self.in_size, self.rank, self.out_sizes = in_size, rank, out_sizes
        self.in_channels = in_channels
        self._fan_out = channels // in_channels
        self.embedding = SubspaceEmbedding(rank, center=center) if embed else None
        self.first = nn.Sequential(
            FRMap(in_size, out_sizes[0], channels=channels, **factory_kwargs), ReOrth()
        )
        pooled_channels = channels // pool_size
        if pool_size == 1:
            self.pool = nn.Identity()
        elif pooling == "projection":
            self.pool = nn.Sequential(
                ProjMap(), ProjPooling("across", kernel_size=pool_size), OrthMap(rank)
            )
        else:
            self.pool = KarcherPool(group_size=pool_size, **factory_kwargs)
        blocks = []
        for previous, current in zip(out_sizes[:-1], out_sizes[1:]):
            blocks += [
                FRMap(previous, current, channels=pooled_channels, **factory_kwargs),
                ReOrth(),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.projmap = ProjMap()
        self.head = ProjectorClassifier(
            out_sizes[-1],
            num_classes,
            channels=pooled_channels,
            batch_norm=batch_norm,
            **factory_kwargs,
        )
        self._pooled_channels = pooled_channels

    def projectors(self, x: torch.Tensor) -> torch.Tensor:
        """Projectors ``(..., C', d_L, d_L)`` fed to the head (or ``(..., d_L, d_L)`` if C' == 1)."""
        if self.in_channels > 1:
            if x.dim() < 3 or x.shape[-3] != self.in_channels or x.shape[-2] != self.in_size:
                raise ValueError(
                    f"GrNet with in_channels={self.in_channels} expects (..., "
                    f"{self.in_channels}, in_size={self.in_size}, m), got {tuple(x.shape)}"
                )
        elif x.dim() < 2 or x.shape[-2] != self.in_size:
            raise ValueError(
                f"GrNet expects (..., in_size={self.in_size}, m), got {tuple(x.shape)}"
            )
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
