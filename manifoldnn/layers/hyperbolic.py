r"""Layers on hyperbolic space: the Poincaré fully connected layer, hyperbolic multinomial logistic
regression, and the Lorentz linear layer.

* :class:`PoincareLinear`: HNN++'s fully connected layer (Shimizu, Mukuta & Harada 2021,
  "Hyperbolic neural networks++", eqs. 9-10): one signed distance to a hyperplane per output,
  mapped back into the ball; as the curvature goes to 0 it is ``4 (W x - |w_k| r_k)``.
* :class:`HyperbolicMLR`: Ganea, Bécigneul & Hofmann's multinomial logistic regression
  (2018, "Hyperbolic neural networks", eq. 25): logits from the signed distances to hyperbolic
  hyperplanes through ``p_k`` with normals ``a_k``; as the curvature goes to 0 it is
  ``4 (<a_k, x> - <a_k, p_k>)``, Euclidean logistic regression.
* :class:`LorentzLinear`: Chen et al.'s fully hyperbolic linear layer (2022, "Fully hyperbolic
  neural networks", Sec. 3.1, without its normalisation): the space part ``W x``, the time part
  that puts the output on the hyperboloid.

Curvature ``-c`` on the ball (geoopt's ``PoincareBall(c)``), ``-1/k`` on the hyperboloid
(geoopt's ``Lorentz(k)``). Sizes: ``in_size``, ``out_size`` are the widths of the points (the
ball's ``d``; the hyperboloid's ``d + 1`` coordinates).
"""

from __future__ import annotations

import math

import geoopt
import torch
from geoopt.manifolds.stereographic import math as stereographic
from torch import nn

from ..parametrizations import ConstrainedModule
from ..validation import check_positive_float, check_positive_int, check_positive_ints

__all__ = ["PoincareLinear", "HyperbolicMLR", "LorentzLinear"]


def _check_features(x: torch.Tensor, in_size: int) -> None:
    """The layers' one input check: points with ``in_size`` coordinates (a shape, no host read)."""
    if x.shape[-1] != in_size:
        raise ValueError(f"x must have shape (..., {in_size}), got {tuple(x.shape)}")


def _conformal_factor(x: torch.Tensor, c: float) -> torch.Tensor:
    """``lambda_x = 2 / (1 - c |x|^2)`` with a kept last dimension."""
    return 2 / (1 - c * x.pow(2).sum(-1, keepdim=True))


class PoincareLinear(nn.Module):
    r"""HNN++'s Poincaré fully connected layer (Shimizu, Mukuta & Harada 2021, eqs. 8-10).

    .. math::

        v_k(x) = \frac{2 \|z_k\|}{\sqrt c} \operatorname{arsinh}\Big(\lambda_x \langle \sqrt c\,
        x, \hat z_k\rangle \cosh(2\sqrt c\, r_k) - (\lambda_x - 1) \sinh(2 \sqrt c\, r_k)\Big),
        \quad w = \frac{\sinh(\sqrt c\, v)}{\sqrt c},
        \quad y = \frac{w}{1 + \sqrt{1 + c \|w\|^2}},

    with :math:`\lambda_x = 2 / (1 - c\|x\|^2)` and :math:`\hat z_k = z_k / \|z_k\|`: ``v_k`` is
    the generalised signed distance of ``x`` to the ``k``-th hyperplane (eq. 8).

    Args:
        in_size: dimension of the input ball.
        out_size: dimension of the output ball.
        c: the curvature is ``-c``. Default: ``1.0``.
        bias: learn the offsets ``r_k`` (else zero). Default: ``True``.
        device: device of the parameters. Default: ``None``.
        dtype: dtype of the parameters. Default: ``None``.

    Shape:
        ``(..., in_size)`` points of the ball -> ``(..., out_size)``; unbatched ``(in_size,)``
        -> ``(out_size,)``.

    Examples::

        >>> layer = PoincareLinear(4, 3)
        >>> x = geoopt.PoincareBall().expmap0(0.1 * torch.randn(8, 4))
        >>> layer(x).shape
        torch.Size([8, 3])
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        c: float = 1.0,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        check_positive_ints(in_size=in_size, out_size=out_size)
        self.in_size, self.out_size = in_size, out_size
        self.c = check_positive_float(c, "c")
        # HNN++ Sec. 3.2: z ~ N(0, (2 in_size out_size)^{-1}), r = 0
        std = (2 * in_size * out_size) ** -0.5
        self.weight = nn.Parameter(torch.randn(out_size, in_size, **factory) * std)
        self.bias = nn.Parameter(torch.zeros(out_size, **factory)) if bias else None

    def signed_distances(self, x: torch.Tensor) -> torch.Tensor:
        """The ``v_k(x)`` of eq. 8, ``(..., out_size)``."""
        sqrt_c = math.sqrt(self.c)
        norm = self.weight.norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
        unit = self.weight / norm.unsqueeze(-1)
        r = torch.zeros_like(norm) if self.bias is None else self.bias
        lam = _conformal_factor(x, self.c)
        argument = lam * sqrt_c * (x @ unit.transpose(-1, -2)) * torch.cosh(2 * sqrt_c * r) - (
            lam - 1
        ) * torch.sinh(2 * sqrt_c * r)
        return 2 * norm / sqrt_c * torch.asinh(argument)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_size)
        sqrt_c = math.sqrt(self.c)
        w = torch.sinh(sqrt_c * self.signed_distances(x)) / sqrt_c
        return w / (1 + (1 + self.c * w.pow(2).sum(-1, keepdim=True)).sqrt())

    def extra_repr(self) -> str:
        return f"in_size={self.in_size}, out_size={self.out_size}, c={self.c}"


class HyperbolicMLR(ConstrainedModule):
    r"""Hyperbolic multinomial logistic regression (Ganea, Bécigneul & Hofmann 2018, eq. 25).

    .. math::

        \mathrm{logit}_k(x) = \frac{\lambda_{p_k} \|a_k\|}{\sqrt c}
        \operatorname{arsinh}\Big(\frac{2 \sqrt c\, \langle -p_k \oplus_c x, a_k\rangle}
        {(1 - c \|{-p_k} \oplus_c x\|^2)\, \|a_k\|}\Big)

    with Möbius addition :math:`\oplus_c` (geoopt's ``mobius_add``), offsets ``p_k`` in the ball
    (a ``geoopt.ManifoldParameter``) and normals :math:`a_k = (1 - c\|p_k\|^2)\, a'_k`, the
    parallel transport of a Euclidean parameter ``a'_k`` from the origin (ibid., Sec. 3.1).

    Args:
        in_size: dimension of the ball.
        num_classes: number of classes K.
        c: the curvature is ``-c``. Default: ``1.0``.
        device: device of the parameters. Default: ``None``.
        dtype: dtype of the parameters. Default: ``None``.

    Shape:
        ``(..., in_size)`` points of the ball -> logits ``(..., num_classes)``.

    Examples::

        >>> mlr = HyperbolicMLR(4, 3)
        >>> x = geoopt.PoincareBall().expmap0(0.1 * torch.randn(8, 4))
        >>> mlr(x).shape
        torch.Size([8, 3])
    """

    def __init__(
        self, in_size: int, num_classes: int, *, c: float = 1.0, device=None, dtype=None
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_size = check_positive_int(in_size, "in_size")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.c = check_positive_float(c, "c")
        self.ball = geoopt.PoincareBall(c=self.c)
        self.offset = geoopt.ManifoldParameter(
            torch.zeros(num_classes, in_size, **factory), manifold=self.ball
        )
        bound = in_size**-0.5
        self.normal = nn.Parameter(
            torch.empty(num_classes, in_size, **factory).uniform_(-bound, bound)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_size)
        c, sqrt_c = self.c, math.sqrt(self.c)
        p = self.offset
        a = (1 - c * p.pow(2).sum(-1, keepdim=True)) * self.normal  # (K, d)
        a_norm = a.norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
        k = torch.tensor(-c, dtype=x.dtype, device=x.device)
        diff = stereographic.mobius_add(-p, x.unsqueeze(-2), k=k)  # (..., K, d)
        inner = (diff * a).sum(-1)
        denominator = (1 - c * diff.pow(2).sum(-1)) * a_norm
        lam = _conformal_factor(p, c).squeeze(-1)
        return lam * a_norm / sqrt_c * torch.asinh(2 * sqrt_c * inner / denominator)

    def extra_repr(self) -> str:
        return f"in_size={self.in_size}, num_classes={self.num_classes}, c={self.c}"


class LorentzLinear(nn.Module):
    r"""Fully hyperbolic linear layer on the hyperboloid (Chen et al. 2022, "Fully hyperbolic
    neural networks", Sec. 3.1, without the normalisation of their eq. 3).

    .. math::

        y = \big(\sqrt{\|W x + b\|^2 + k},\ W x + b\big)

    ``W`` acts on all ``in_size = d + 1`` coordinates of ``x`` (time included), and the time
    coordinate puts ``y`` on the hyperboloid :math:`\langle y, y\rangle_L = -k`. With
    ``W = [0 | R]`` for an orthogonal ``R`` and no bias, the layer is a rotation: an isometry.

    Args:
        in_size: coordinates of the input points (``d + 1``).
        out_size: coordinates of the output points (``d' + 1``, at least 2).
        k: the curvature is ``-1/k``. Default: ``1.0``.
        bias: learn ``b``. Default: ``True``.
        device: device of the parameters. Default: ``None``.
        dtype: dtype of the parameters. Default: ``None``.

    Shape:
        ``(..., in_size)`` points of the hyperboloid -> ``(..., out_size)``.

    Examples::

        >>> layer = LorentzLinear(5, 3)
        >>> x = geoopt.Lorentz().expmap0(torch.cat([torch.zeros(8, 1), torch.randn(8, 4)], -1))
        >>> layer(x).shape
        torch.Size([8, 3])
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        k: float = 1.0,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_ints(in_size=in_size, out_size=out_size)
        self.in_size, self.out_size = in_size, out_size
        if out_size < 2:
            raise ValueError(
                f"out_size must be >= 2 (a time and a space coordinate), got {out_size}"
            )
        self.k = check_positive_float(k, "k")
        self.linear = nn.Linear(in_size, out_size - 1, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_size)
        space = self.linear(x)
        return torch.cat([(space.pow(2).sum(-1, keepdim=True) + self.k).sqrt(), space], -1)

    def extra_repr(self) -> str:
        return f"in_size={self.in_size}, out_size={self.out_size}, k={self.k}"
