r"""A fairness metric: the Riemannian metric stretched along the gradients of bias losses.

.. math::

    G_{fair}(x) = G(x) + \alpha \sum_m w_m(x)\, g_m(x) g_m(x)^\top,

with :math:`g_m` the Riemannian gradient of the m-th bias loss :math:`b_m` and :math:`w_m` a
locality kernel around centre :math:`c_m`. To first order in the stretch (the metric frozen at the
query, the base geodesic kept as the path),

.. math::

    d_{fair}^2(q, k) \approx d^2(q, k) + \alpha \sum_m w_m(q)\, \langle g_m(q), \mathrm{Log}_q k \rangle^2,

and :math:`\langle g_m(q), \mathrm{Log}_q k\rangle = db_m(q)[\mathrm{Log}_q k]` is computed as the
ambient pairing of the Euclidean gradient with the logarithm. It is exact in Euclidean space for
linear bias losses and constant weights. Otherwise two approximations enter: the shortest path
under :math:`G_{fair}` bends away from the base geodesic, which changes the length only at
:math:`O(\alpha^2)`; and the stretch is evaluated with :math:`G_{fair}` frozen at the query rather
than integrated along the path, so the stretch term has a relative error :math:`O(d)` (absolute
:math:`O(\alpha d^3)` in :math:`d_{fair}^2`). For a linear bias :math:`\langle a, x\rangle` on the sphere,
:math:`d_{fair}` differs from the :math:`G_{fair}`-length of the base geodesic by at most
:math:`\alpha |a| (|\langle a, q\rangle| d^2 / 2 + |\langle a, u\rangle| d^3 / 6)`, :math:`u` the
unit direction of :math:`\mathrm{Log}_q k`; ``tests/test_fairness.py`` derives the bound and checks
the formula against the minimal path length found numerically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import geoopt
import torch
from torch import nn

from ..manifolds import GeometryModule, ManifoldGeometry, geometry_for

__all__ = ["FairnessMetric", "AssociationBias", "LinearBias"]


class LinearBias(nn.Module):
    r"""Linear bias loss :math:`b(x) = \langle a, x \rangle` (projection on a bias direction, e.g. the
    gender direction of Bolukbasi et al. 2016, Sec. 5). ``x (..., d)`` -> ``(...)``; ``device``
    and ``dtype`` (default: the direction's) are those of the stored direction."""

    def __init__(
        self,
        direction: torch.Tensor,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if direction.dim() != 1:
            raise ValueError(f"direction must be a vector (d,), got {tuple(direction.shape)}")
        self.register_buffer("direction", direction.to(device=device, dtype=dtype, copy=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.direction.to(x)


class AssociationBias(nn.Module):
    r"""Difference of mean cosine association with two attribute sets,
    :math:`b(x) = \mathrm{mean}_{a \in A} \cos(x, a) - \mathrm{mean}_{b \in B} \cos(x, b)`
    (the WEAT association s(w, A, B) of Caliskan, Bryson & Narayanan 2017, eq. 1, without its
    standard-deviation normalisation). ``A (n_a, d)``, ``B (n_b, d)``; ``x (..., d)`` -> ``(...)``;
    ``device`` and ``dtype`` (default: the sets') are those of the stored direction.
    """

    def __init__(
        self,
        first: torch.Tensor,
        second: torch.Tensor,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if first.dim() != 2 or second.dim() != 2 or first.shape[-1] != second.shape[-1]:
            raise ValueError(
                f"attribute sets must be (n_a, d) and (n_b, d), got {tuple(first.shape)}, "
                f"{tuple(second.shape)}"
            )
        unit_a = first / first.norm(dim=-1, keepdim=True)
        unit_b = second / second.norm(dim=-1, keepdim=True)
        direction = unit_a.mean(0) - unit_b.mean(0)
        self.register_buffer("direction", direction.to(device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.direction.to(x)) / x.norm(dim=-1)


class FairnessMetric(GeometryModule):
    r"""Stretched metric :math:`G + \alpha \sum_m w_m g_m g_m^\top` used as a squared distance.

    Args:
        manifold: a geoopt manifold or its :class:`~manifoldnn.manifolds.ManifoldGeometry`.
        bias_losses: M differentiable functions ``x (..., *point_shape) -> (...)``.
        alpha: the stretch :math:`\alpha`; 0 gives the base metric. Negative values contract the
            metric along the bias gradients; they are accepted while
            :math:`1 + \alpha w_m |g_m|^2 > 0` at every query (positive definiteness, checked in
            :meth:`query_terms`). Default: ``1.0``.
        centres: ``(M, *point_shape)`` centres of the locality kernel
            :math:`w_m(x) = \exp(-d^2(x, c_m) / (2 \sigma^2))`; ``None``: :math:`w_m \equiv 1`.
            Default: ``None``.
        bandwidth: :math:`\sigma` of the locality kernel. Default: ``1.0``.
        distance: the geometry's distance for the locality kernel and :meth:`sq_dist`; ``None``:
            the geometry's default (the one attention uses). Default: ``None``.
        device: device of the stored centres; ``None``: that of ``centres``. Default: ``None``.
        dtype: dtype of the stored centres; ``None``: that of ``centres``. Default: ``None``.

    ``linear_directions`` is the ``(M, d)`` stack of directions when every bias loss is a
    :class:`LinearBias` (then the stretched distance runs through SDPA in Euclidean space).

    Shape:
        :meth:`sq_dist`: queries ``(..., L, *point_shape)`` and keys ``(..., S, *point_shape)``
        -> ``(..., L, S)``.

    Examples::

        >>> import torch
        >>> from manifoldnn.manifolds import Sphere
        >>> metric = FairnessMetric(Sphere(), [LinearBias(torch.tensor([1.0, 0.0, 0.0]))], 2.0)
        >>> x = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
        >>> metric.sq_dist(x, x).shape
        torch.Size([4, 4])
    """

    def __init__(
        self,
        manifold: geoopt.Manifold | ManifoldGeometry,
        bias_losses: Sequence[Callable[[torch.Tensor], torch.Tensor]],
        alpha: float = 1.0,
        *,
        centres: torch.Tensor | None = None,
        bandwidth: float = 1.0,
        distance: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(manifold)
        self.distance = self.geometry.check_distance(distance)
        if len(bias_losses) == 0:
            raise ValueError("FairnessMetric needs at least one bias loss")
        if bandwidth <= 0:
            raise ValueError(f"bandwidth must be positive, got {bandwidth}")
        self.bias_losses = nn.ModuleList(
            [b if isinstance(b, nn.Module) else _Wrapped(b) for b in bias_losses]
        )
        self.alpha = float(alpha)
        if centres is not None and centres.shape[0] != len(bias_losses):
            raise ValueError(
                f"centres must have one point per bias loss ({len(bias_losses)}), got "
                f"{tuple(centres.shape)}"
            )
        self.register_buffer(
            "centres",
            None if centres is None else centres.to(device=device, dtype=dtype, copy=True),
        )
        self.bandwidth = float(bandwidth)
        if all(isinstance(b, LinearBias) for b in self.bias_losses):
            self.register_buffer(
                "linear_directions", torch.stack([b.direction for b in self.bias_losses])
            )
        else:
            self.linear_directions = None

    def locality(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel weights ``(..., M)`` for points ``x (..., *point_shape)``."""
        nd = self.manifold.ndim
        m = len(self.bias_losses)
        if self.centres is None:
            return torch.ones(x.shape[: x.dim() - nd] + (m,), dtype=x.dtype, device=x.device)
        flat = x.reshape((-1,) + x.shape[x.dim() - nd :])
        d2 = self.geometry.pairwise_sq_dist(flat, self.centres.to(x), self.distance)
        return torch.exp(-d2 / (2 * self.bandwidth**2)).reshape(x.shape[: x.dim() - nd] + (m,))

    def bias_values_and_gradients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bias losses ``(..., M)`` and their Euclidean gradients ``(..., M, *point_shape)``,
        from one evaluation of each loss.

        Computed with :func:`torch.func.vjp` (each loss is per point, so the vector-Jacobian
        product with ones is the gradient at every point), which stays differentiable for outer
        autograd and traces under ``torch.compile``.
        """
        axis = x.dim() - self.manifold.ndim
        batch = x.shape[:axis]
        values, grads = [], []
        for loss in self.bias_losses:
            value, pullback = torch.func.vjp(loss, x)
            if value.shape != batch:
                raise ValueError(
                    f"a bias loss must map (..., *point_shape) to (...), got {tuple(value.shape)}"
                )
            values.append(value)
            grads.append(pullback(torch.ones_like(value))[0])
        return torch.stack(values, -1), torch.stack(grads, axis)

    def euclidean_gradients(self, x: torch.Tensor) -> torch.Tensor:
        """Euclidean gradients of the bias losses ``(..., M, *point_shape)``
        (:meth:`bias_values_and_gradients` without the values)."""
        return self.bias_values_and_gradients(x)[1]

    def query_terms(self, manifold: geoopt.Manifold, query: torch.Tensor):
        """``(egrad (..., Lq, M, *point), coeff (..., Lq, M))`` with ``coeff = alpha w_m(q)``.

        Raises ``ValueError`` if the metric is not positive definite at some query (alpha < 0).
        """
        used = self.geometry
        if manifold is not self.manifold and manifold is not self.geometry:
            used = geometry_for(manifold)
        if type(used) is not type(self.geometry):
            raise ValueError(
                f"FairnessMetric was built for {self.geometry.name}, used on {used.name}"
            )
        egrad = self.euclidean_gradients(query)
        coeff = self.alpha * self.locality(query)
        if self.alpha < 0 and not torch.compiler.is_compiling():
            sq = self.gradient_sq_norms(query, egrad)
            if bool((1 + coeff * sq <= 0).any()):
                raise ValueError(
                    f"alpha={self.alpha} makes the fairness metric indefinite at some query "
                    "(need 1 + alpha w |g|^2 > 0)"
                )
        return egrad, coeff

    def gradient_sq_norms(self, x: torch.Tensor, egrad: torch.Tensor) -> torch.Tensor:
        """Riemannian squared norms ``|g_m(x)|^2`` ``(..., M)``."""
        nd = self.manifold.ndim
        xb = x.unsqueeze(x.dim() - nd).expand_as(egrad)
        rgrad = self.manifold.egrad2rgrad(xb, egrad)
        sq = self.manifold.inner(xb, rgrad, rgrad, keepdim=True)
        return sq.reshape(sq.shape[: sq.dim() - nd])

    def extra_sq(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        r"""``alpha sum_m w_m(q) <g_m(q), Log_q k>^2`` for every pair: ``(..., Lq, Lk)``."""
        egrad, coeff = self.query_terms(self.manifold, query)
        diff = self.geometry.pairwise_differential(query, egrad, key)
        return (coeff.unsqueeze(-2) * diff.pow(2)).sum(-1)

    def sq_dist(self, query: torch.Tensor, key: torch.Tensor, distance: str | None = None):
        """First-order stretched squared distance ``(..., Lq, *s), (..., Lk, *s) -> (..., Lq, Lk)``."""
        distance = self.distance if distance is None else self.geometry.check_distance(distance)
        base = self.geometry.pairwise_sq_dist(query, key, distance)
        return base + self.extra_sq(query, key)

    def quadratic_form(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""``G_fair(x)(u, u) = <u, u>_x + alpha sum_m w_m(x) (db_m(x)[u])^2`` for tangent ``u``;
        ``x``, ``u``: ``(..., *point_shape)`` -> ``(...)``."""
        nd = self.manifold.ndim
        dims = tuple(range(-nd, 0))
        base = self.manifold.inner(x, u, u, keepdim=True).sum(dims)
        egrad = self.euclidean_gradients(x)  # (..., M, *s)
        pairing = (egrad * u.unsqueeze(u.dim() - nd)).sum(dims)
        return base + self.alpha * (self.locality(x) * pairing.pow(2)).sum(-1)

    def extra_repr(self) -> str:
        return f"{self.geometry.name}, losses={len(self.bias_losses)}, alpha={self.alpha}"


class _Wrapped(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)
