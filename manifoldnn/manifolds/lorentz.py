r"""The hyperboloid (Lorentz) model of hyperbolic space, with maps accurate at short distances.

Points are ``x = (x_0, x_1, ..., x_d)`` with :math:`\langle x, x\rangle_L = -k`, ``x_0 > 0``, where
:math:`\langle x, y\rangle_L = -x_0 y_0 + \sum_{i \ge 1} x_i y_i` is the Minkowski inner product
and the sectional curvature is :math:`-1/k` (geoopt's convention, ``geoopt.Lorentz(k)``).

geoopt's own maps lose accuracy at short distances: its ``arcosh`` clamps :math:`x^2 - 1` at
``1e-15`` and its tangent norm clamps :math:`\langle u, u\rangle_L` at ``1e-8``, so a logarithm or
exponential below a length of about ``1e-4`` is off by about ``1e-8`` (a Karcher iteration then
stalls there). Here every map is written through the Minkowski square of a difference,

.. math::

    c = \langle y - x, y - x\rangle_L = 4k \sinh^2\!\Big(\frac{d(x, y)}{2\sqrt k}\Big)
      \quad\Rightarrow\quad d(x, y) = 2\sqrt k\, \operatorname{arsinh}\frac{\sqrt c}{2\sqrt k},

accurate to rounding relative to ``d`` as ``y -> x`` (Nickel & Kiela 2018, "Learning continuous
hierarchies in the Lorentz model of hyperbolic geometry", eq. 4 for the distance; the logarithm,
exponential and transport are those of Ratcliffe, "Foundations of hyperbolic manifolds", Sec. 3.2,
rewritten in ``c``). The dtype of ``k`` follows the points (geoopt keeps it float32 by default).
"""

from __future__ import annotations

import geoopt
import torch

__all__ = [
    "Lorentz",
    "minkowski_inner",
    "lorentz_distance",
    "lorentz_logmap",
    "lorentz_expmap",
    "lorentz_transport",
    "lorentz_centroid",
    "ball_to_hyperboloid",
    "hyperboloid_to_ball",
    "ball_distance",
]


def _k(k: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(k).to(like)


def minkowski_inner(x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    r""":math:`\langle x, y\rangle_L = -x_0 y_0 + \sum_{i \ge 1} x_i y_i` over the last dimension.

    Args:
        x: vectors ``(..., d + 1)``.
        y: vectors ``(..., d + 1)``, broadcast against ``x``.
        keepdim: keep the reduced dimension. Default: ``False``.

    Returns:
        ``(...)`` (``(..., 1)`` with ``keepdim``).
    """
    product = x * y
    return product[..., 1:].sum(-1, keepdim=keepdim) - product[..., :1].sum(-1, keepdim=keepdim)


def _sq_chord(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``<y - x, y - x>_L >= 0`` with a kept last dimension (spacelike between two points)."""
    diff = y - x
    return minkowski_inner(diff, diff, keepdim=True).clamp_min(0.0)


def _ratio(theta: torch.Tensor, fn) -> torch.Tensor:
    """``fn(theta) / theta`` with its limit 1 at 0 (``fn`` = sinh or arsinh)."""
    positive = theta > 0
    safe = torch.where(positive, theta, torch.ones_like(theta))
    return torch.where(positive, fn(safe) / safe, torch.ones_like(theta))


def _angle(c: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``theta = d / sqrt(k) = 2 arsinh(sqrt(c / (4k)))`` from the squared chord ``c``."""
    positive = c > 0
    root = torch.where(positive, c, torch.ones_like(c)).sqrt()
    return torch.where(positive, 2 * torch.asinh(root / (2 * k.sqrt())), torch.zeros_like(c))


def lorentz_distance(
    x: torch.Tensor, y: torch.Tensor, k: torch.Tensor | float = 1.0, *, keepdim: bool = False
) -> torch.Tensor:
    r"""Geodesic distance :math:`2\sqrt k\,\operatorname{arsinh}(\sqrt{c / 4k})`,
    :math:`c = \langle y - x, y - x\rangle_L` (equal to :math:`\sqrt k \operatorname{arcosh}
    (-\langle x, y\rangle_L / k)`, Nickel & Kiela 2018, eq. 4).

    Args:
        x: points ``(..., d + 1)``.
        y: points ``(..., d + 1)``, broadcast against ``x``.
        k: geoopt's ``k`` (curvature ``-1/k``). Default: ``1.0``.
        keepdim: keep the reduced dimension. Default: ``False``.

    Returns:
        Distances ``(...)``.
    """
    k = _k(k, x)
    distance = k.sqrt() * _angle(_sq_chord(x, y), k)
    return distance if keepdim else distance.squeeze(-1)


def lorentz_logmap(x: torch.Tensor, y: torch.Tensor, k: torch.Tensor | float = 1.0) -> torch.Tensor:
    r"""Logarithm :math:`\mathrm{Log}_x y = \frac{\theta}{\sinh\theta}\,\big(y - x - \tfrac{c}{2k}
    x\big)`, :math:`\theta = d(x, y)/\sqrt k`.

    ``y - x - c x / (2k)`` is ``y + <x, y>_L x / k`` (Ratcliffe, Sec. 3.2) written through the
    difference, so that it is accurate as ``y -> x``.

    Args:
        x: points ``(..., d + 1)``.
        y: points ``(..., d + 1)``, broadcast against ``x``.
        k: geoopt's ``k``. Default: ``1.0``.

    Returns:
        Tangent vectors at ``x``, ``(..., d + 1)``.
    """
    k = _k(k, x)
    c = _sq_chord(x, y)
    theta = _angle(c, k)
    return (y - x - c / (2 * k) * x) / _ratio(theta, torch.sinh)


def lorentz_expmap(x: torch.Tensor, u: torch.Tensor, k: torch.Tensor | float = 1.0) -> torch.Tensor:
    r"""Exponential :math:`\mathrm{Exp}_x u = \cosh\theta\, x + \frac{\sinh\theta}{\theta}\, u`,
    :math:`\theta = \|u\|_L / \sqrt k`, re-projected on the hyperboloid (``x_0`` recomputed).

    Args:
        x: points ``(..., d + 1)``.
        u: tangent vectors at ``x``, ``(..., d + 1)``.
        k: geoopt's ``k``. Default: ``1.0``.

    Returns:
        Points ``(..., d + 1)``.
    """
    k = _k(k, x)
    theta = minkowski_inner(u, u, keepdim=True).clamp_min(0.0).sqrt() / k.sqrt()
    return _project(torch.cosh(theta) * x + _ratio(theta, torch.sinh) * u, k)


def lorentz_transport(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, k: torch.Tensor | float = 1.0
) -> torch.Tensor:
    r"""Parallel transport along the geodesic from ``x`` to ``y``:
    :math:`v + \frac{\langle y, v\rangle_L}{k - \langle x, y\rangle_L}(x + y)` (the denominator is
    at least ``2k``: no cancellation).

    Args:
        x: points ``(..., d + 1)``.
        y: points ``(..., d + 1)``.
        v: tangent vectors at ``x``, ``(..., d + 1)``.
        k: geoopt's ``k``. Default: ``1.0``.

    Returns:
        Tangent vectors at ``y``, ``(..., d + 1)``.
    """
    k = _k(k, x)
    scale = minkowski_inner(y, v, keepdim=True) / (k - minkowski_inner(x, y, keepdim=True))
    return v + scale * (x + y)


def lorentz_centroid(mean: torch.Tensor, k: torch.Tensor | float = 1.0) -> torch.Tensor:
    r"""The Lorentzian centroid :math:`\sqrt k\, m / \sqrt{-\langle m, m\rangle_L}` of a weighted
    mean ``m`` of points (Law, Liao, Snell & Zemel 2019, "Lorentzian distance learning for
    hyperbolic representations", eq. 8): the point closest to ``m`` in the squared Lorentzian
    distance; ``m`` is timelike (a convex combination of points of the upper sheet).

    Args:
        mean: weighted means of points ``(..., d + 1)``.
        k: geoopt's ``k``. Default: ``1.0``.

    Returns:
        Points ``(..., d + 1)``.
    """
    k = _k(k, mean)
    square = (-minkowski_inner(mean, mean, keepdim=True)).clamp_min(torch.finfo(mean.dtype).tiny)
    return _project(k.sqrt() * mean / square.sqrt(), k)


def _project(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``x_0 = sqrt(k + |x_{1:}|^2)``: the point of the upper sheet above ``x``'s space part."""
    space = x[..., 1:]
    return torch.cat([(k + space.pow(2).sum(-1, keepdim=True)).sqrt(), space], -1)


class Lorentz(geoopt.Lorentz):
    r"""geoopt's hyperboloid with maps accurate at short distances and checks in any dtype.

    ``dist``, ``logmap``, ``expmap`` (also ``retr``) and ``transp`` are the module's functions;
    the point and tangent checks cast ``k`` to the points' dtype (geoopt's compare a float64
    point with its float32 ``k`` and fail with "Double did not match Float").

    Args:
        k: ``k > 0``, the curvature being ``-1/k``. Default: ``1.0``.
        learnable: make ``k`` a trained parameter. Default: ``False``.

    Examples::

        >>> import torch
        >>> manifold = Lorentz()
        >>> x = manifold.expmap0(torch.tensor([0.0, 0.3, -0.2], dtype=torch.float64))
        >>> bool(manifold.check_point_on_manifold(x))
        True
    """

    def __init__(self, k: float = 1.0, learnable: bool = False) -> None:
        # geoopt's own signature, written out so that the documentation shows it
        super().__init__(k=k, learnable=learnable)

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5, dim=-1):
        k = self.k.to(x)
        square = minkowski_inner(x, x)
        ok = bool(torch.allclose(square, -k.expand_as(square), atol=atol, rtol=rtol))
        ok = ok and bool((x[..., 0] > 0).all())
        reason = None if ok else f"'x' is not on the upper sheet <x, x>_L = {-float(k):.6g}"
        return ok, reason

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5, dim=-1):
        inner = minkowski_inner(x, u)
        ok = bool(torch.allclose(inner, torch.zeros_like(inner), atol=atol, rtol=rtol))
        return ok, None if ok else "<x, u>_L is not 0"

    def dist(self, x, y, *, keepdim=False, dim=-1):
        return lorentz_distance(x, y, self.k, keepdim=keepdim)

    def logmap(self, x, y, *, dim=-1):
        return lorentz_logmap(x, y, self.k)

    def expmap(self, x, u, *, norm_tan=True, project=True, dim=-1):
        if norm_tan:
            u = self.proju(x, u)
        return lorentz_expmap(x, u, self.k)

    retr = expmap

    def transp(self, x, y, v, *, dim=-1):
        return lorentz_transport(x, y, v, self.k)


def ball_to_hyperboloid(p: torch.Tensor, k: torch.Tensor | float = 1.0) -> torch.Tensor:
    r"""The isometry from the Poincaré ball of radius :math:`\sqrt k` (curvature ``-1/k``) to the
    hyperboloid: :math:`x = \big(\sqrt k\,\frac{k + |p|^2}{k - |p|^2},\ \frac{2k\,p}{k - |p|^2}\big)`
    (Nickel & Kiela 2018, eq. 11, scaled to ``k``).

    Args:
        p: points of the ball ``(..., d)``.
        k: geoopt's ``k`` of the hyperboloid (the ball's ``c = 1/k``). Default: ``1.0``.

    Returns:
        Points of the hyperboloid ``(..., d + 1)``.
    """
    k = _k(k, p)
    square = p.pow(2).sum(-1, keepdim=True)
    denominator = k - square
    return torch.cat([k.sqrt() * (k + square) / denominator, 2 * k * p / denominator], -1)


def hyperboloid_to_ball(x: torch.Tensor, k: torch.Tensor | float = 1.0) -> torch.Tensor:
    r"""The inverse of :func:`ball_to_hyperboloid`: :math:`p = \sqrt k\, x_{1:} / (\sqrt k + x_0)`.

    Args:
        x: points of the hyperboloid ``(..., d + 1)``.
        k: geoopt's ``k``. Default: ``1.0``.

    Returns:
        Points of the ball of radius :math:`\sqrt k`, ``(..., d)``.
    """
    k = _k(k, x)
    return k.sqrt() * x[..., 1:] / (k.sqrt() + x[..., :1])


def ball_distance(
    p: torch.Tensor, q: torch.Tensor, k: torch.Tensor | float = 1.0, *, keepdim: bool = False
) -> torch.Tensor:
    r"""Distance in the Poincaré ball of radius :math:`\sqrt k` (curvature ``-1/k``),

    .. math::

        d(p, q) = \sqrt k \operatorname{arcosh}\Big(1 + \frac{2k\,|p - q|^2}{(k - |p|^2)(k - |q|^2)}
        \Big) = 2\sqrt k \operatorname{arsinh}\sqrt{\frac{k\,|p - q|^2}{(k - |p|^2)(k - |q|^2)}}

    (Nickel & Kiela 2017, eq. 1, at ``k = 1``), in the second form: accurate as ``q -> p``, with a
    finite gradient (zero) at ``p == q``.

    Args:
        p: points ``(..., d)``.
        q: points ``(..., d)``, broadcast against ``p``.
        k: the hyperboloid's ``k`` (the ball's ``c = 1/k``; geoopt's ``PoincareBall(c)`` has
            ``k = 1 / c``). Default: ``1.0``.
        keepdim: keep the reduced dimension. Default: ``False``.

    Returns:
        Distances ``(...)``.
    """
    k = _k(k, p)
    ratio = (
        k
        * (p - q).pow(2).sum(-1, keepdim=True)
        / ((k - p.pow(2).sum(-1, keepdim=True)) * (k - q.pow(2).sum(-1, keepdim=True)))
    )
    positive = ratio > 0
    root = torch.where(positive, ratio, torch.ones_like(ratio)).sqrt()
    distance = torch.where(positive, 2 * k.sqrt() * torch.asinh(root), torch.zeros_like(ratio))
    return distance if keepdim else distance.squeeze(-1)
