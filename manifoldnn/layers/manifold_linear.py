r"""A learnable map that keeps manifold-valued tokens on their manifold, one weight per head."""

from __future__ import annotations

import geoopt
import torch
from torch import nn

from ..linalg import qr_positive
from ..manifolds import GeometryModule, ManifoldGeometry
from ..validation import (
    check_positive_ints,
    renamed_arguments,
    renamed_attribute,
)

__all__ = ["ManifoldLinear"]


def _check_map_sizes(geometry: ManifoldGeometry, in_size: int, out_size: int, name: str) -> None:
    """A map to ``out_size`` keeps points of a rank-preserving geometry (Grassmann, SPD) on it only
    when W has full row rank, i.e. ``out_size <= in_size``; ``name`` is the argument that set
    ``out_size``."""
    if geometry.rank_preserving_map and out_size > in_size:
        raise ValueError(
            f"{name}={out_size} must be <= in_size={in_size} on {geometry.name} (W needs full row "
            "rank to keep points on the manifold)"
        )


class ManifoldLinear(GeometryModule):
    r"""Per-head manifold-preserving linear map (the query/key/value maps of geodesic attention).

    The map is the geometry's ``map_points`` (:mod:`manifoldnn.manifolds.geometry`):

    * Euclidean: :math:`x \mapsto W x + b`;
    * sphere: :math:`x \mapsto W x / \|W x\|`;
    * Poincaré ball: Möbius matrix-vector product :math:`\exp_0(W \log_0 x)` (Ganea, Bécigneul &
      Hofmann 2018, "Hyperbolic neural networks", eq. 26);
    * Grassmann: FRMap + ReOrth :math:`Y \mapsto \mathrm{qf}(W Y)` (GrNet, Huang, Wu & Van Gool
      2018, eqs. 1-2);
    * SPD: congruence :math:`X \mapsto W X W^\top` (SPDNet BiMap, Huang & Van Gool 2017, eq. 1).

    W starts with orthonormal rows (columns when ``out_size > in_size``): norm-preserving on every
    manifold, and of full row rank where the map needs it (Grassmann, SPD).

    Args:
        manifold: a geoopt manifold or a :class:`~manifoldnn.manifolds.ManifoldGeometry`.
        in_size: size of the input points' first point dimension (d for vectors, n for ``(n, p)``
            bases and ``(n, n)`` matrices).
        out_size: the same size after the map (``<= in_size`` on Grassmann and SPD).
        num_heads: number of heads H. Default: ``1``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        - Input: ``(..., L, *point_shape)``.
        - Output: ``(..., L, H, *head_point_shape)``.

    Examples::

        >>> from manifoldnn.manifolds import Sphere
        >>> x = torch.nn.functional.normalize(torch.randn(2, 7, 5), dim=-1)
        >>> ManifoldLinear(Sphere(), 5, 3, num_heads=4)(x).shape
        torch.Size([2, 7, 4, 3])
    """

    heads = renamed_attribute("heads", "num_heads")

    @renamed_arguments(heads="num_heads")
    def __init__(
        self,
        manifold: geoopt.Manifold | ManifoldGeometry,
        in_size: int,
        out_size: int,
        num_heads: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(manifold)
        factory_kwargs = {"device": device, "dtype": dtype}
        check_positive_ints(in_size=in_size, out_size=out_size, num_heads=num_heads)
        _check_map_sizes(self.geometry, in_size, out_size, "out_size")
        self.in_size, self.out_size, self.num_heads = in_size, out_size, num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, out_size, in_size, **factory_kwargs))
        self.bias = (
            nn.Parameter(torch.zeros(num_heads, out_size, **factory_kwargs))
            if self.geometry.affine_map
            else None
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Orthonormal rows (or columns when ``out > in``): a norm-preserving start on every manifold."""
        gaussian = torch.randn(
            self.weight.shape, dtype=self.weight.dtype, device=self.weight.device
        )
        if self.out_size <= self.in_size:
            w = qr_positive(gaussian.transpose(-1, -2)).transpose(-1, -2)
        else:
            w = qr_positive(gaussian)
        self.weight.copy_(w)
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dim() < self.geometry.point_ndim + 1
            or self.geometry.map_input_size(x) != self.in_size
        ):
            raise ValueError(
                f"ManifoldLinear expected points (..., L, {self.in_size}, ...) on "
                f"{self.geometry.name}, got {tuple(x.shape)}"
            )
        return self.geometry.map_points(self.weight, x, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.geometry.name}, in_size={self.in_size}, out_size={self.out_size}, "
            f"num_heads={self.num_heads}"
        )
