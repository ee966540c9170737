r"""Pairwise geometry of a manifold: what attention and metrics need to know about it.

One class per manifold says how to compute, for a set of queries and a set of keys,

* squared distances (``pairwise_sq_dist``), logarithms (``pairwise_log``) and the differential of a
  function along them (``pairwise_differential``);
* features whose inner product is minus a squared distance (``sdpa_features``), so that attention
  runs through :func:`torch.nn.functional.scaled_dot_product_attention` or random features;
* an extrinsic mean: ``value_features`` (points as vectors) and ``aggregate`` (a weighted mean of
  those vectors mapped back to the manifold);
* a learnable map that keeps points on the manifold (``map_points``), for query/key/value maps;
* the pieces of the Karcher mean (:func:`manifoldnn.manifolds.karcher_mean`): the logarithm
  (``logmap``), a warm start (``karcher_warm_start``), the descent direction
  ``sum_i w_i Log_m(x_i)`` evaluated repeatedly (``karcher_gradient``) and the adjoint solve of its
  implicit backward (``karcher_adjoint``), each with a generic default.

:func:`geometry_for` picks the class of a geoopt manifold; a new manifold is one new subclass of
:class:`ManifoldGeometry` naming its ``manifold_type`` (registered when the class is created).
The base class is generic: it works on any geoopt manifold with ``dist``, ``logmap``, ``expmap``
and ``projx``, so a subclass overrides only what it can do better, and a new manifold is one class
for attention and for the Karcher mean alike.

Token shapes (``...`` batch dimensions, ``L`` the sequence length): vectors ``(..., L, d)``
(Euclidean, sphere, Poincaré ball), orthonormal bases ``(..., L, n, p)`` (Grassmann), symmetric
matrices ``(..., L, n, n)`` (SPD).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import geoopt
import torch
from geoopt.manifolds.stereographic import math as stereographic

from ..linalg import (
    conjugate_gradient,
    qr_positive,
    sym,
    sym_expm,
    sym_logm,
    symmetric_functions,
    symmetric_vectorize,
    tolerance,
)
from ..linalg.spectral import INV_SQRT, SQRT
from .extrinsic import extrinsic_mean, top_eigenspace
from .grassmann import Grassmann, stack_columns, weighted_logmap_sum_stacked
from .lorentz import (
    Lorentz,
    ball_to_hyperboloid,
    hyperboloid_to_ball,
    lorentz_centroid,
    lorentz_distance,
    lorentz_expmap,
    lorentz_logmap,
    lorentz_transport,
)
from .projection import projection_metric_distance
from .sphere import Sphere, arc_length, sphere_logmap

__all__ = [
    "ManifoldGeometry",
    "EuclideanGeometry",
    "SphereGeometry",
    "GrassmannGeometry",
    "SPDGeometry",
    "PoincareBallGeometry",
    "LorentzGeometry",
    "geometry_for",
    "registered_geometries",
    "GeometryModule",
]

_REGISTRY: list[type[ManifoldGeometry]] = []


def _upper_triangle(matrix: torch.Tensor) -> torch.Tensor:
    n = matrix.shape[-1]
    rows, cols = torch.triu_indices(n, n, device=matrix.device)
    return matrix.flatten(-2).index_select(-1, rows * n + cols)


def _symmetric_from_upper(upper: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``_upper_triangle``: ``(..., n (n + 1) / 2) -> (..., n, n)`` symmetric."""
    rows, cols = torch.triu_indices(n, n, device=upper.device)
    flat = upper.new_zeros(upper.shape[:-1] + (n * n,))
    flat = flat.index_copy(-1, rows * n + cols, upper).index_copy(-1, cols * n + rows, upper)
    return flat.unflatten(-1, (n, n))


def _expand(w: torch.Tensor, ndim: int) -> torch.Tensor:
    return w.reshape(w.shape + (1,) * ndim)


def _batched_vjp(output: torch.Tensor, wrt: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """Stack of vector-Jacobian products, one per leading slice of ``cotangents``."""
    try:
        (out,) = torch.autograd.grad(
            output, wrt, grad_outputs=cotangents, retain_graph=True, is_grads_batched=True
        )
        return out
    except RuntimeError:
        rows = [
            torch.autograd.grad(output, wrt, grad_outputs=c, retain_graph=True)[0]
            for c in cotangents
        ]
        return torch.stack(rows)


KarcherGradient = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class ManifoldGeometry:
    r"""Pairwise geometry of a geoopt manifold (generic base class).

    Args:
        manifold: the geoopt manifold; it must be an instance of ``manifold_type``.

    Class attributes a subclass sets: ``manifold_type`` (the geoopt class it handles; setting it
    registers the subclass with :func:`geometry_for`), ``distances`` (names, the first being the
    default), ``sdpa_distances`` (those with ``sdpa_features``), ``rank_preserving_map`` (the
    learnable map needs ``out_size <= in_size``), ``affine_map`` (the map takes a bias) and
    ``is_flat`` (zero curvature: every aggregation is the weighted mean of the values).

    Shapes: ``q (..., L_q, *point_shape)``, ``k (..., L_k, *point_shape)``; pairwise results are
    ``(..., L_q, L_k)`` (scalars) or ``(..., L_q, L_k, *point_shape)`` (tangent vectors).
    """

    manifold_type: ClassVar[type] = geoopt.Manifold
    distances: ClassVar[tuple[str, ...]] = ("geodesic",)
    sdpa_distances: ClassVar[frozenset[str]] = frozenset()
    rank_preserving_map: ClassVar[bool] = False
    affine_map: ClassVar[bool] = False
    is_flat: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "manifold_type" in cls.__dict__:
            _REGISTRY.append(cls)

    def __init__(self, manifold: geoopt.Manifold) -> None:
        if not isinstance(manifold, self.manifold_type):
            raise ValueError(
                f"{type(self).__name__} needs a {self.manifold_type.__name__}, got "
                f"{type(manifold).__name__}"
            )
        self.manifold = manifold

    @classmethod
    def example_manifold(cls) -> geoopt.Manifold:
        """A manifold this class handles, with default settings (for tests and examples).

        Returns:
            ``manifold_type()``; a subclass whose manifold needs arguments overrides this.
        """
        return cls.manifold_type()

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        """Short name of the manifold, for messages and ``repr``."""
        return type(self.manifold).__name__

    @property
    def point_ndim(self) -> int:
        """Number of trailing dimensions of one point (1 for vectors, 2 for matrices)."""
        return self.manifold.ndim

    @property
    def default_distance(self) -> str:
        return self.distances[0]

    def check_distance(self, distance: str | None) -> str:
        """The distance name to use (``None``: the default); ``ValueError`` if unavailable."""
        distance = self.default_distance if distance is None else distance
        if distance not in self.distances:
            raise ValueError(
                f"distance {distance!r} is not available on {self.name}; choose from "
                f"{self.distances}"
            )
        return distance

    def check_points(self, x: torch.Tensor, name: str) -> None:
        """Shape checks of tokens ``(..., L, *point_shape)`` (no tensor values are read)."""
        if x.dim() < self.point_ndim + 1:
            raise ValueError(
                f"{name} must have shape (..., L, *point_shape) with {self.point_ndim} point "
                f"dimension(s) on {self.name}, got {tuple(x.shape)}"
            )

    def check_point_on_manifold(
        self, x: torch.Tensor, *, atol: float | None = None, rtol: float | None = None
    ) -> tuple[bool, str | None]:
        """Whether ``x`` holds points of the manifold. Generic: the manifold's own check.

        Args:
            x: points ``(..., *point_shape)``.
            atol: absolute tolerance. Default: ``None`` (the manifold's default).
            rtol: relative tolerance. Default: ``None`` (the manifold's default).

        Returns:
            ``(ok, reason)``, ``reason`` ``None`` when ``ok``.
        """
        tolerances = {name: v for name, v in (("atol", atol), ("rtol", rtol)) if v is not None}
        return self.manifold.check_point_on_manifold(x, explain=True, **tolerances)

    def dist(self, x: torch.Tensor, y: torch.Tensor, distance: str | None = None) -> torch.Tensor:
        """Element-wise distance ``distance`` (``None``: the default), whose square
        :meth:`pairwise_sq_dist` computes for every pair. Generic: the manifold's ``dist`` for the
        one distance ``"geodesic"``.

        Args:
            x: points ``(..., *point_shape)``.
            y: points ``(..., *point_shape)``, broadcast against ``x``.
            distance: a name in ``distances``. Default: ``None``.

        Returns:
            Distances ``(...)``.
        """
        self.check_distance(distance)
        return self.manifold.dist(x, y)

    # ------------------------------------------------------------ pairwise maps
    def _pairs(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nd = self.point_ndim
        qb, kb = q.unsqueeze(-1 - nd), k.unsqueeze(-2 - nd)
        shape = torch.broadcast_shapes(qb.shape, kb.shape)
        return qb.expand(shape), kb.expand(shape)

    def pairwise_sq_dist(
        self, q: torch.Tensor, k: torch.Tensor, distance: str | None = None
    ) -> torch.Tensor:
        """Squared distances between every query and key: ``(..., L_q, L_k)``."""
        qb, kb = self._pairs(q, k)
        return self.manifold.dist(qb, kb).pow(2)

    def pairwise_log(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{Log}_{q_i} v_j` for every pair: ``(..., L_q, L_k, *point_shape)``."""
        qb, vb = self._pairs(q, v)
        return self.manifold.logmap(qb, vb)

    def pairwise_differential(
        self, q: torch.Tensor, egrad: torch.Tensor, k: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`db(q_i)[\mathrm{Log}_{q_i} k_j] = \langle e_i, \mathrm{Log}_{q_i} k_j \rangle`
        (ambient pairing of Euclidean gradients with logarithms) for every pair.

        ``q (..., L_q, *s)``, ``egrad (..., L_q, M, *s)`` (M functions), ``k (..., L_k, *s)`` ->
        ``(..., L_q, L_k, M)``.
        """
        nd = self.point_ndim
        logs = self.pairwise_log(q, k)  # (..., Lq, Lk, *s)
        dims = tuple(range(-nd, 0))
        return (logs.unsqueeze(-1 - nd) * egrad.unsqueeze(-2 - nd)).sum(dims)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Exponential map, re-projected on the manifold: ``(..., *s), (..., *s) -> (..., *s)``."""
        return self.manifold.projx(self.manifold.expmap(x, u))

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Transport of tangent vectors ``v`` at ``x`` to ``y`` (the Karcher solver's step
        sizes). Generic: the manifold's ``transp``.

        Args:
            x: points ``(..., *point_shape)``.
            y: points ``(..., *point_shape)``.
            v: tangent vectors at ``x``, ``(..., *point_shape)``.

        Returns:
            Tangent vectors at ``y``, ``(..., *point_shape)``.
        """
        return self.manifold.transp(x, y, v)

    def retraction(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The chart around a point used by :meth:`karcher_adjoint`. Generic: the manifold's
        ``retr``.

        Args:
            x: points ``(..., *point_shape)``.
            u: tangent vectors at ``x``, ``(..., *point_shape)``.

        Returns:
            Points ``(..., *point_shape)``.
        """
        return self.manifold.retr(x, u)

    # -------------------------------------------------------- features and means
    def sdpa_features(
        self, q: torch.Tensor, k: torch.Tensor, distance: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Features ``phi (..., L_q, F)``, ``psi (..., L_k, F)`` with
        :math:`\langle \phi(q), \psi(k) \rangle = -d^2(q, k) + c(q)` (``c`` cancels in a softmax
        over keys); only for the distances in ``sdpa_distances``."""
        raise ValueError(f"no inner-product features for {self.name} with distance {distance!r}")

    def value_features(self, v: torch.Tensor) -> torch.Tensor:
        """Points as vectors ``(..., L, F)`` whose weighted mean :meth:`aggregate` maps back.
        Generic: the ambient coordinates."""
        return v.flatten(v.dim() - self.point_ndim)

    def aggregate(self, mean: torch.Tensor, point_shape: torch.Size) -> torch.Tensor:
        """A weighted mean of :meth:`value_features` ``(..., F)`` mapped back to the manifold
        ``(..., *point_shape)``. Generic: the manifold's projection of the ambient mean."""
        return self.manifold.projx(mean.unflatten(-1, tuple(point_shape)))

    # ----------------------------------------------------------- learnable maps
    def map_points(
        self, weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply ``weight (H, out, in)`` to points ``x (..., L, *point_shape)`` keeping them on the
        manifold: ``(..., L, H, *head_point_shape)``."""
        raise ValueError(f"no manifold-preserving linear map is defined on {self.name}")

    def map_input_size(self, x: torch.Tensor) -> int:
        """The size a map's ``in_size`` must match (the first point dimension)."""
        return x.shape[x.dim() - self.point_ndim]

    # ------------------------------------------------------------ Karcher mean
    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""Logarithm :math:`\mathrm{Log}_x y` (broadcast). Generic: the manifold's ``logmap``.

        Args:
            x: points ``(..., *point_shape)``.
            y: points ``(..., *point_shape)``, broadcast against ``x``.

        Returns:
            Tangent vectors at ``x``, ``(..., *point_shape)``.
        """
        return self.manifold.logmap(x, y)

    def weighted_logmap_sum(
        self, mean: torch.Tensor, points: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        r"""Minus the Riemannian gradient of :math:`\tfrac12 \sum_i w_i d^2(m, x_i)`:
        :math:`\sum_i w_i \mathrm{Log}_m x_i`.

        Args:
            mean: points ``(B, *point_shape)``.
            points: sets of points ``(B, N, *point_shape)``.
            weights: weights ``(B, N)``.

        Returns:
            Tangent vectors at ``mean``, ``(B, *point_shape)``.
        """
        logs = self.logmap(mean.unsqueeze(1), points)
        return (_expand(weights, self.point_ndim) * logs).sum(1)

    def karcher_warm_start(self, points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """A starting point near the Karcher mean. Generic: the manifold's projection of the
        weighted ambient mean.

        Args:
            points: sets of points ``(B, N, *point_shape)``.
            weights: weights ``(B, N)`` summing to one per set.

        Returns:
            Points ``(B, *point_shape)``.
        """
        return self.manifold.projx((_expand(weights, self.point_ndim) * points).sum(1))

    def karcher_gradient(self, points: torch.Tensor, weights: torch.Tensor) -> KarcherGradient:
        """The descent direction of the Karcher iteration, prepared once for repeated evaluation.

        Args:
            points: sets of points ``(B, N, *point_shape)``.
            weights: weights ``(B, N)`` summing to one per set.

        Returns:
            ``gradient(mean, index)``: :meth:`weighted_logmap_sum` at ``mean (b, *point_shape)`` for
            the sets ``index`` (a ``(b,)`` index tensor; ``None``: all ``B`` sets).
        """

        def gradient(mean: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
            if index is None:
                return self.weighted_logmap_sum(mean, points, weights)
            return self.weighted_logmap_sum(mean, points[index], weights[index])

        return gradient

    def karcher_adjoint(
        self, mean: torch.Tensor, points: torch.Tensor, weights: torch.Tensor, rhs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The optimality residual at the Karcher mean and the adjoint that back-propagates it.

        With :math:`F(m, X, w) = P_m \sum_i w_i \mathrm{Log}_m x_i` (zero at the mean), returns
        ``F`` at ``mean`` as a function of ``points`` and ``weights`` (recorded by autograd) and
        :math:`\lambda` with :math:`-J^\top \lambda = P_m\, \mathrm{rhs}`, :math:`J = \partial F /
        \partial \xi` in the chart :math:`m = R_{\mathrm{mean}}(\xi)`, so that the gradients are
        ``autograd.grad(F, (points, weights), lambda)`` (Gould et al. 2016, "On differentiating
        parameterized argmin and argmax problems"; Lou et al. 2020, "Differentiating through the
        Fréchet mean"). Generic: ``J`` built densely from one vector-Jacobian product per ambient
        coordinate, then one linear solve.

        Args:
            mean: the Karcher means ``(B, *point_shape)`` (detached).
            points: sets of points ``(B, N, *point_shape)`` (leaves autograd records through).
            weights: weights ``(B, N)`` normalised to sum to one (a function of the leaves).
            rhs: ``P_m`` of the incoming gradient, ``(B, *point_shape)``.

        Returns:
            ``(residual, lam)``, both ``(B, *point_shape)``.
        """
        manifold = self.manifold
        xi = torch.zeros_like(mean, requires_grad=True)
        moved = self.retraction(mean, manifold.proju(mean, xi))
        residual = manifold.proju(mean, self.weighted_logmap_sum(moved, points, weights))
        batch, point_shape = mean.shape[0], mean.shape[1:]
        dim = math.prod(point_shape)
        basis = torch.eye(dim, dtype=mean.dtype, device=mean.device)
        basis = basis.reshape((dim, 1) + point_shape).expand((dim, batch) + point_shape)
        jac = _batched_vjp(residual, xi, basis)  # (dim, B, *shape): slice k is J^T e_k
        jac = jac.reshape(dim, batch, dim).transpose(0, 1)  # (B, dim, dim) = J
        proj = manifold.proju(mean.unsqueeze(0), basis).reshape(dim, batch, dim).transpose(0, 1)
        eye = torch.eye(dim, dtype=mean.dtype, device=mean.device)
        lam = torch.linalg.solve(-jac.transpose(-1, -2) + (eye - proj), rhs.reshape(batch, dim, 1))
        return residual, lam.reshape((batch,) + point_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.manifold!r})"


class EuclideanGeometry(ManifoldGeometry):
    r"""Euclidean space :math:`\mathbb{R}^d` (``geoopt.Euclidean(ndim=1)``): ``||q - k||^2``,
    features ``phi = [2q, 1]``, ``psi = [k, -|k|^2]``, affine maps :math:`x \mapsto Wx + b`."""

    manifold_type = geoopt.Euclidean
    distances = ("euclidean",)
    sdpa_distances = frozenset({"euclidean"})
    affine_map = True
    is_flat = True

    def __init__(self, manifold: geoopt.Manifold) -> None:
        super().__init__(manifold)
        if manifold.ndim != 1:
            raise ValueError(f"EuclideanGeometry needs Euclidean(ndim=1), got ndim={manifold.ndim}")

    @classmethod
    def example_manifold(cls):
        return geoopt.Euclidean(ndim=1)

    def dist(self, x, y, distance=None):
        self.check_distance(distance)
        return (x - y).norm(dim=-1)

    def pairwise_sq_dist(self, q, k, distance=None):
        return (q.unsqueeze(-2) - k.unsqueeze(-3)).pow(2).sum(-1)

    def pairwise_log(self, q, v):
        return v.unsqueeze(-3) - q.unsqueeze(-2)

    def pairwise_differential(self, q, egrad, k):
        ek = egrad @ k.unsqueeze(-3).transpose(-1, -2)  # (..., Lq, M, Lk)
        eq = (egrad * q.unsqueeze(-2)).sum(-1)
        return (ek - eq.unsqueeze(-1)).transpose(-1, -2)

    def expmap(self, x, u):
        return x + u

    def sdpa_features(self, q, k, distance):
        one = torch.ones_like(q[..., :1])
        return torch.cat([2.0 * q, one], -1), torch.cat([k, -k.pow(2).sum(-1, keepdim=True)], -1)

    def value_features(self, v):
        return v

    def aggregate(self, mean, point_shape):
        return mean

    def map_points(self, weight, x, bias=None):
        y = torch.einsum("hoi,...i->...ho", weight, x)
        return y if bias is None else y + bias


def _sphere_chord_sq(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise ``||q - k||^2`` and cosines of unit vectors ``(..., L_q, d), (..., L_k, d)``.

    ``2 - 2 <q, k>`` from one matrix product loses all relative accuracy near 0, so pairs with a
    squared chord below ``tolerance("cancellation_switch")`` take the explicit difference. In eager
    mode only those pairs are gathered (few, so memory stays ``O(L_q L_k)``); under
    ``torch.compile``, where shapes must not depend on values, the differences of the whole block
    are formed and selected with ``torch.where`` (memory ``O(L_q L_k d)``). Both give the same values.
    """
    cos = q @ k.transpose(-1, -2)
    chord_sq = (2.0 - 2.0 * cos).clamp_min(0.0)
    close = chord_sq < tolerance("cancellation_switch", chord_sq.dtype)
    if torch.compiler.is_compiling():
        exact = (q.unsqueeze(-2) - k.unsqueeze(-3)).pow(2).sum(-1)
        return torch.where(close, exact, chord_sq), cos
    if bool(close.any()):
        idx = close.nonzero(as_tuple=True)
        qb = q.expand(cos.shape[:-1] + q.shape[-1:])
        kb = k.unsqueeze(-3).expand(cos.shape + k.shape[-1:])
        exact = (qb[idx[:-1]] - kb[idx]).pow(2).sum(-1)
        chord_sq = chord_sq.index_put(idx, exact)
    return chord_sq, cos


def _chord_to_angle(chord_sq: torch.Tensor) -> torch.Tensor:
    """Arc length from the squared chord ``c^2`` of unit vectors (:func:`arc_length` with
    ``||x + y|| = sqrt(4 - c^2)``)."""
    return arc_length(chord_sq.sqrt(), (4.0 - chord_sq).clamp_min(0.0).sqrt())


class SphereGeometry(ManifoldGeometry):
    r"""Unit sphere (the full ``geoopt.Sphere`` or :class:`manifoldnn.manifolds.Sphere`).

    Distances: arc length (``"geodesic"``, :func:`manifoldnn.manifolds.sphere.arc_length` of the
    chord) and chord (``"chordal"``, :math:`2 - 2\langle q, k\rangle`, SDPA features ``phi = 2q``,
    ``psi = k``). Extrinsic mean: radial projection of the weighted mean (Bhattacharya &
    Patrangenaru 2003). Map: :math:`x \mapsto Wx / \|Wx\|`. The pairwise maps need the full
    sphere; the Karcher pieces also take geoopt's subspace spheres.
    """

    manifold_type = geoopt.Sphere
    distances = ("geodesic", "chordal")
    sdpa_distances = frozenset({"chordal"})

    def _require_full_sphere(self) -> None:
        if self.manifold.projector is not None:
            raise ValueError("SphereGeometry supports the full sphere only (no subspace sphere)")

    def check_points(self, x, name):
        self._require_full_sphere()
        super().check_points(x, name)

    def dist(self, x, y, distance=None):
        if self.check_distance(distance) == "chordal":
            return (x - y).norm(dim=-1)
        return Sphere.dist(self.manifold, x, y)

    def logmap(self, x, y):
        """The accurate logarithm of :class:`manifoldnn.manifolds.Sphere`, also for geoopt's own
        sphere (whose ``acos`` form fails below an angle of about ``sqrt(eps)``)."""
        return Sphere.logmap(self.manifold, x, y)

    def pairwise_sq_dist(self, q, k, distance=None):
        self._require_full_sphere()
        chord_sq, _ = _sphere_chord_sq(q, k)
        return chord_sq if distance == "chordal" else _chord_to_angle(chord_sq).pow(2)

    def pairwise_log(self, q, v):
        r"""``atan2(|w|, <q, v>) w / |w|`` with ``w = v - <q, v> q`` (finite at ``v == q``)."""
        return sphere_logmap(q.unsqueeze(-2), v.unsqueeze(-3))

    def pairwise_differential(self, q, egrad, k):
        r"""``<e, Log_q k> = theta / sin(theta) (<e, k> - <q, k> <e, q>)``, from matrix products
        without forming the ``(L_q, L_k, d)`` logarithms."""
        chord_sq, cos = _sphere_chord_sq(q, k)
        theta = _chord_to_angle(chord_sq)
        sin = torch.sin(theta)
        factor = torch.where(sin > 0, theta / torch.where(sin > 0, sin, 1.0), 1.0)
        ek = egrad @ k.unsqueeze(-3).transpose(-1, -2)  # (..., Lq, M, Lk)
        eq = (egrad * q.unsqueeze(-2)).sum(-1)  # (..., Lq, M)
        tangential = ek - cos.unsqueeze(-2) * eq.unsqueeze(-1)
        return (factor.unsqueeze(-2) * tangential).transpose(-1, -2)

    def expmap(self, x, u):
        """``cos|u| x + sin|u| u/|u|``, re-normalised."""
        norm = u.norm(dim=-1, keepdim=True)
        positive = norm > 0
        safe = torch.where(positive, norm, torch.ones_like(norm))
        y = torch.cos(norm) * x + torch.where(positive, torch.sin(norm) / safe, 1.0) * u
        return y / y.norm(dim=-1, keepdim=True)

    def sdpa_features(self, q, k, distance):
        return 2.0 * q, k

    def value_features(self, v):
        return v

    def aggregate(self, mean, point_shape):
        return mean / mean.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(mean.dtype).tiny)

    def map_points(self, weight, x, bias=None):
        y = torch.einsum("hoi,...i->...ho", weight, x)
        return y / y.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)


def _grassmann_adjoint(manifold, m, logs, w, rhs):
    """Solve ``H lambda = rhs`` by conjugate gradients, ``H = sum_i w_i Hess(1/2 d^2(., x_i))(m)``.

    ``H = -J`` is the Riemannian Hessian of the Karcher cost, in closed form on the Grassmannian
    (``Grassmann.squared_distance_hessian``), symmetric and positive definite at a strict minimum.
    Returns ``None`` (the caller then builds ``J`` densely) if CG meets negative curvature or does
    not converge within the dimension of the tangent space.
    """
    operators = manifold.squared_distance_hessian_operator(m.unsqueeze(1), logs)
    weights = _expand(w, 2)

    def hessian(u):
        return (weights * operators(u.unsqueeze(1))).sum(1)

    lam, converged = conjugate_gradient(
        hessian,
        rhs,
        rtol=tolerance("adjoint_cg", m.dtype),
        max_iter=m.shape[-1] * m.shape[-2] + 1,
    )
    return lam if converged else None


class GrassmannGeometry(ManifoldGeometry):
    r"""Grassmann manifold, points as orthonormal bases ``(n, p)``.

    Distances: projection :math:`p - \|Q^\top K\|_F^2 = \|\sin\theta\|^2` (default; SDPA features
    :math:`\phi = \psi = \mathrm{vec}(YY^\top)`, Hamm & Lee 2008, "Grassmann discriminant
    analysis", projection kernel), geodesic :math:`\|\theta\|^2` (Edelman, Arias & Smith 1998,
    Sec. 4.3) and chordal :math:`\|2\sin(\theta/2)\|^2`. Extrinsic mean: top-p eigenvectors of the
    weighted mean projector (:func:`manifoldnn.manifolds.extrinsic_mean`). Map: FRMap + ReOrth
    :math:`Y \mapsto \mathrm{qf}(WY)` (GrNet, Huang, Wu & Van Gool 2018, eqs. 1-2).
    """

    manifold_type = Grassmann
    distances = ("projection", "geodesic", "chordal")
    sdpa_distances = frozenset({"projection"})
    rank_preserving_map = True

    def check_points(self, x, name):
        super().check_points(x, name)
        if x.shape[-2] < x.shape[-1]:
            raise ValueError(
                f"{name}: Grassmann tokens must be bases (..., n, p) with n >= p, got "
                f"{tuple(x.shape)}"
            )

    def dist(self, x, y, distance=None):
        distance = self.check_distance(distance)
        if distance == "projection":
            return self.manifold.projection_distance(x, y)
        if distance == "chordal":
            return self.manifold.chordal_distance(x, y)
        return self.manifold.dist(x, y)

    def pairwise_sq_dist(self, q, k, distance=None):
        if distance in (None, "projection"):
            return projection_metric_distance(q, k, squared=True)
        qb, kb = q.unsqueeze(-3), k.unsqueeze(-4)
        theta = self.manifold.principal_angles(qb, kb)
        if distance == "chordal":
            return (2.0 * torch.sin(0.5 * theta)).pow(2).sum(-1)
        return theta.pow(2).sum(-1)

    def sdpa_features(self, q, k, distance):
        return (
            symmetric_vectorize(q @ q.transpose(-1, -2)),
            symmetric_vectorize(k @ k.transpose(-1, -2)),
        )

    def value_features(self, v):
        return _upper_triangle(v @ v.transpose(-1, -2))

    def aggregate(self, mean, point_shape):
        n, p = point_shape
        return top_eigenspace(_symmetric_from_upper(mean, n), p)

    def map_points(self, weight, x, bias=None):
        if x.shape[-1] > weight.shape[-2]:
            raise ValueError(
                f"Grassmann bases with p={x.shape[-1]} columns cannot be mapped to "
                f"{weight.shape[-2]} rows: the map's output size must be >= p"
            )
        return qr_positive(weight @ x.unsqueeze(-3))  # (..., L, H, out, p)

    def karcher_warm_start(self, points, weights):
        """The extrinsic mean (:func:`manifoldnn.manifolds.extrinsic_mean`), the minimiser of the
        summed squared projection distances."""
        return extrinsic_mean(points, weights)

    def karcher_gradient(self, points, weights):
        """The points laid side by side once (``[Y_1 ... Y_N]`` per set), so that each evaluation
        is two matrix products per set plus ``p x p`` work per point
        (``Grassmann.weighted_logmap_sum``)."""
        stacked = stack_columns(points)

        def gradient(mean, index):
            if index is None:
                return weighted_logmap_sum_stacked(mean, stacked, weights)
            return weighted_logmap_sum_stacked(mean, stacked[index], weights[index])

        return gradient

    def karcher_adjoint(self, mean, points, weights, rhs):
        """Conjugate gradients on the closed-form Riemannian Hessian of the Karcher cost
        (``Grassmann.squared_distance_hessian_operator``), symmetric positive definite at a strict
        minimum; the generic dense solve where CG meets negative curvature or does not converge
        within the dimension of the tangent space."""
        logs = self.logmap(mean.unsqueeze(1), points)
        residual = self.manifold.proju(mean, (_expand(weights, 2) * logs).sum(1))
        lam = _grassmann_adjoint(self.manifold, mean, logs.detach(), weights.detach(), rhs)
        if lam is None:
            return super().karcher_adjoint(mean, points, weights, rhs)
        return residual, lam


def _t_coth_t(t: torch.Tensor) -> torch.Tensor:
    """``t coth t`` (= 1 at 0, Taylor ``1 + t^2 / 3`` below ``sqrt(eps)``)."""
    small = t.abs() < math.sqrt(torch.finfo(t.dtype).eps)
    safe = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, 1.0 + t * t / 3.0, safe / torch.tanh(safe))


def _spd_adjoint(mean, points, w, rhs):
    r"""Solve :math:`\mathrm{Hess} f(M)^\top \lambda = \mathrm{rhs}` (Frobenius transpose) for
    the affine-invariant Karcher cost :math:`f = \tfrac12 \sum_i w_i d^2(\cdot, X_i)`.

    Whitened at the mean, :math:`Y_i = M^{-1/2} X_i M^{-1/2} = Q_i e^{\mu_i} Q_i^\top`, the
    Hessian of :math:`\tfrac12 d^2(\cdot, Y_i)` at :math:`I` is diagonal in the basis
    :math:`q_j q_k^\top`, with eigenvalue :math:`t \coth t`, :math:`t = (\mu_j - \mu_k)/2`
    (the Jacobi field of a direction of curvature :math:`-t^2` in a symmetric space of
    non-compact type; the curvature of the affine-invariant metric at :math:`I` is
    :math:`R(X, Y)Z = -\tfrac14 [[X, Y], Z]`, Pennec, Fillard & Ayache 2006). The Hessian is
    symmetric positive definite with eigenvalues at least 1, so conjugate gradients converge in a
    few steps. With the congruence isometry and the metric's Gram map :math:`U \mapsto M^{-1} U
    M^{-1}`: :math:`\lambda = M^{-1/2} H_I^{-1}[M^{1/2}\, \mathrm{rhs}\, M^{1/2}] M^{-1/2}`.
    """
    root, inv_root = symmetric_functions(mean, SQRT, INV_SQRT)
    whitened = sym(inv_root.unsqueeze(1) @ points @ inv_root.unsqueeze(1))
    lam, q = torch.linalg.eigh(whitened)  # (B, N, n), (B, N, n, n)
    mu = lam.clamp_min(torch.finfo(lam.dtype).tiny).log()
    factors = _t_coth_t(0.5 * (mu.unsqueeze(-1) - mu.unsqueeze(-2)))  # (B, N, n, n)
    weights = _expand(w, 2)
    qt = q.transpose(-1, -2)

    def hessian(u):
        return (weights * (q @ (factors * (qt @ u.unsqueeze(1) @ q)) @ qt)).sum(1)

    n = mean.shape[-1]
    # the Hessian's eigenvalues are at least 1: the solve converges; its iterate is used either way
    solution, _ = conjugate_gradient(
        hessian,
        sym(root @ rhs @ root),
        rtol=tolerance("adjoint_cg", mean.dtype),
        max_iter=n * (n + 1) // 2 + 1,
    )
    return sym(inv_root @ solution @ inv_root)


class _SPDMatrixGeometry(ManifoldGeometry):
    """What every SPD metric shares: square tokens and the congruence map ``W X W^T`` (SPDNet
    BiMap, Huang & Van Gool 2017, eq. 1), which keeps SPD for W of full row rank."""

    rank_preserving_map = True

    def check_points(self, x, name):
        super().check_points(x, name)
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"{name}: SPD tokens must be square (..., n, n), got {tuple(x.shape)}")

    def map_points(self, weight, x, bias=None):
        return sym(weight @ x.unsqueeze(-3) @ weight.transpose(-1, -2))

    def expmap(self, x, u):
        return self.manifold.expmap(x, u)


class SPDGeometry(_SPDMatrixGeometry):
    r"""Symmetric positive-definite matrices ``(n, n)``.

    Distances: affine-invariant :math:`\|\log(Q^{-1/2} K Q^{-1/2})\|_F^2` (default; Pennec, Fillard
    & Ayache 2006, eq. 3) and log-Euclidean :math:`\|\log Q - \log K\|_F^2` (Arsigny et al. 2007,
    eq. 3.5; SDPA features ``phi = [2 vec log Q, 1]``, ``psi = [vec log K, -|log K|^2]``).
    Extrinsic mean: log-Euclidean mean (ibid., eq. 3.8). Map: congruence :math:`X \mapsto WXW^\top`
    with W of full row rank (SPDNet BiMap, Huang & Van Gool 2017, eq. 1).
    """

    manifold_type = geoopt.SymmetricPositiveDefinite
    distances = ("affine", "log_euclidean")
    sdpa_distances = frozenset({"log_euclidean"})

    def dist(self, x, y, distance=None):
        if self.check_distance(distance) == "log_euclidean":
            return (sym_logm(x) - sym_logm(y)).flatten(-2).norm(dim=-1)
        return self.manifold.dist(x, y)

    def pairwise_sq_dist(self, q, k, distance=None):
        if distance == "log_euclidean":
            diff = sym_logm(q).unsqueeze(-3) - sym_logm(k).unsqueeze(-4)
            return diff.pow(2).sum((-2, -1))
        chol = torch.linalg.cholesky(q).unsqueeze(-3)
        left = torch.linalg.solve_triangular(chol, k.unsqueeze(-4), upper=False)
        whitened = torch.linalg.solve_triangular(chol, left.transpose(-1, -2), upper=False)
        eigenvalues = torch.linalg.eigvalsh(sym(whitened))
        return eigenvalues.log().pow(2).sum(-1)

    def pairwise_log(self, q, v):
        r"""Affine-invariant :math:`\mathrm{Log}_Q V = Q^{1/2} \log(Q^{-1/2} V Q^{-1/2}) Q^{1/2}`
        (Pennec, Fillard & Ayache 2006, eq. 4)."""
        root, inv_root = (t.unsqueeze(-3) for t in symmetric_functions(q, SQRT, INV_SQRT))
        return root @ sym_logm(sym(inv_root @ v.unsqueeze(-4) @ inv_root)) @ root

    def logmap(self, x, y):
        r"""The same logarithm element-wise, through the gap-safe spectral functions (geoopt's
        own logarithm back-propagates through ``torch.linalg.eigh``, NaN at repeated eigenvalues,
        e.g. in the Karcher mean's backward after a ReEig layer)."""
        root, inv_root = symmetric_functions(x, SQRT, INV_SQRT)
        return sym(root @ sym_logm(sym(inv_root @ y @ inv_root)) @ root)

    def karcher_adjoint(self, mean, points, weights, rhs):
        """Conjugate gradients on the closed-form Hessian of the affine-invariant Karcher cost
        (``t coth t`` in each whitened point's eigenbasis), in place of the generic dense solve."""
        residual = self.weighted_logmap_sum(mean, points, weights)
        return residual, _spd_adjoint(mean, points.detach(), weights.detach(), rhs)

    def expmap(self, x, u):
        r""":math:`\mathrm{Exp}_X U = X^{1/2} \exp(X^{-1/2} U X^{-1/2}) X^{1/2}` (ibid., eq. 3)."""
        root, inv_root = symmetric_functions(x, SQRT, INV_SQRT)
        return sym(root @ sym_expm(sym(inv_root @ u @ inv_root)) @ root)

    def sdpa_features(self, q, k, distance):
        q, k = symmetric_vectorize(sym_logm(q)), symmetric_vectorize(sym_logm(k))
        one = torch.ones_like(q[..., :1])
        return torch.cat([2.0 * q, one], -1), torch.cat([k, -k.pow(2).sum(-1, keepdim=True)], -1)

    def value_features(self, v):
        return _upper_triangle(sym_logm(v))

    def aggregate(self, mean, point_shape):
        return sym_expm(_symmetric_from_upper(mean, point_shape[-1]))


class PoincareBallGeometry(ManifoldGeometry):
    r"""Poincaré ball of curvature :math:`-c` (``geoopt.PoincareBall``, ``c = -k``).

    .. math::

        d(q, k) = \tfrac{2}{\sqrt c} \operatorname{artanh}\big(\sqrt c\, \|{-q} \oplus_c k\|\big),
        \quad \exp_0 v = \tanh(\sqrt c \|v\|) \frac{v}{\sqrt c \|v\|},
        \quad \log_0 y = \operatorname{artanh}(\sqrt c \|y\|) \frac{y}{\sqrt c \|y\|}

    with Möbius addition :math:`\oplus_c` (Ganea, Bécigneul & Hofmann 2018, "Hyperbolic neural
    networks", eqs. 4, 13 and Lemma 2) taken from geoopt
    (``geoopt.manifolds.stereographic.math.mobius_add``); the radial maps are written here without
    branches on tensor values so that they trace under ``torch.compile``. Extrinsic mean through the tangent space at the origin; map:
    Möbius matrix-vector product :math:`\exp_0(W \log_0 x)` (ibid., eq. 26).
    """

    manifold_type = geoopt.PoincareBall

    def __init__(self, manifold: geoopt.Manifold) -> None:
        super().__init__(manifold)
        if not isinstance(manifold.k, torch.Tensor):
            raise ValueError("PoincareBallGeometry needs geoopt's curvature tensor manifold.k")

    def _sqrt_c(self, like: torch.Tensor) -> torch.Tensor:
        return (-self.manifold.k).to(like).clamp_min(torch.finfo(like.dtype).tiny).sqrt()

    def _radial(self, y: torch.Tensor, fn) -> torch.Tensor:
        """``fn(sqrt(c) |y|) y / (sqrt(c) |y|)`` with the value ``y`` at ``y = 0``."""
        scaled = self._sqrt_c(y) * y.norm(dim=-1, keepdim=True)
        positive = scaled > 0
        safe = torch.where(positive, scaled, torch.ones_like(scaled))
        return y * torch.where(positive, fn(safe) / safe, torch.ones_like(scaled))

    def pairwise_sq_dist(self, q, k, distance=None):
        sqrt_c = self._sqrt_c(q)
        k_curv = self.manifold.k.to(q)
        diff = stereographic.mobius_add(-q.unsqueeze(-2), k.unsqueeze(-3), k=k_curv)
        # artanh is taken below 1 - eps (points at the boundary are infinitely far)
        radius = (sqrt_c * diff.norm(dim=-1)).clamp_max(1 - torch.finfo(q.dtype).eps)
        return (2 * torch.atanh(radius) / sqrt_c).pow(2)

    def value_features(self, v):
        return self._radial(v, torch.atanh)

    def aggregate(self, mean, point_shape):
        return self._radial(mean, torch.tanh)

    def map_points(self, weight, x, bias=None):
        y = torch.einsum("hoi,...i->...ho", weight, self._radial(x, torch.atanh))
        return self._radial(y, torch.tanh)

    def karcher_warm_start(self, points, weights):
        r"""The Einstein midpoint: the Lorentzian centroid of the points mapped to the hyperboloid,
        mapped back (Ungar 2008, "Analytic hyperbolic geometry", Sec. 6.20; in Klein coordinates
        :math:`\sum_i w_i \gamma_i k_i / \sum_i w_i \gamma_i`), exact for two points."""
        k = 1.0 / self._sqrt_c(points).pow(2)
        lifted = ball_to_hyperboloid(points, k)
        centroid = lorentz_centroid((weights.unsqueeze(-1) * lifted).sum(1), k)
        return self.manifold.projx(hyperboloid_to_ball(centroid, k))


class LorentzGeometry(ManifoldGeometry):
    r"""The hyperboloid :math:`\{x : \langle x, x\rangle_L = -k,\ x_0 > 0\}` of curvature
    :math:`-1/k` (``geoopt.Lorentz``, points ``(d + 1,)``).

    .. math::

        d(q, x) = 2\sqrt k\,\operatorname{arsinh}\sqrt{\langle x - q, x - q\rangle_L / 4k}
        = \sqrt k \operatorname{arcosh}(-\langle q, x\rangle_L / k)

    (Nickel & Kiela 2018, "Learning continuous hierarchies in the Lorentz model of hyperbolic
    geometry", eq. 4). Logarithm, exponential and transport are the accurate forms of
    :mod:`manifoldnn.manifolds.lorentz` (also for geoopt's own ``Lorentz``, whose maps are off by
    about ``1e-8`` below a length of ``1e-4``), in the dtype of the points whatever the dtype of
    ``k``. Extrinsic mean and Karcher warm start: the Lorentzian centroid (Law et al. 2019,
    "Lorentzian distance learning for hyperbolic representations", eq. 8).
    """

    manifold_type = geoopt.Lorentz

    @classmethod
    def example_manifold(cls):
        return Lorentz()

    def check_point_on_manifold(self, x, *, atol=None, rtol=None):
        """The hyperboloid's check with ``k`` cast to the dtype of ``x`` (geoopt's own check fails
        on float64 points with its default float32 ``k``)."""
        ok, reason = self.manifold._check_shape(tuple(x.shape), "x")
        if not ok:
            return ok, reason
        return Lorentz._check_point_on_manifold(
            self.manifold,
            x,
            atol=1e-5 if atol is None else atol,
            rtol=1e-5 if rtol is None else rtol,
        )

    def _k(self, like: torch.Tensor) -> torch.Tensor:
        return self.manifold.k.to(like)

    def dist(self, x, y, distance=None):
        self.check_distance(distance)
        return lorentz_distance(x, y, self._k(x))

    def pairwise_sq_dist(self, q, k, distance=None):
        r"""From the Minkowski Gram matrix: :math:`c = -2k - 2\langle q_i, k_j\rangle_L`, exact
        to ``eps x_0^2`` in absolute terms."""
        curvature = self._k(q)
        gram = q[..., 1:] @ k[..., 1:].transpose(-1, -2) - q[..., :1] @ k[..., :1].transpose(-1, -2)
        chord_sq = (-2 * curvature - 2 * gram).clamp_min(0.0)
        # d^2 = c (arsinh(s) / s)^2 with s = sqrt(c / 4k): smooth in c at c = 0
        positive = chord_sq > 0
        s = torch.where(positive, chord_sq, torch.ones_like(chord_sq)).sqrt() / (
            2 * curvature.sqrt()
        )
        ratio = torch.where(positive, torch.asinh(s) / s, torch.ones_like(s))
        return chord_sq * ratio.pow(2)

    def logmap(self, x, y):
        return lorentz_logmap(x, y, self._k(x))

    def pairwise_log(self, q, v):
        return self.logmap(*self._pairs(q, v))

    def expmap(self, x, u):
        return lorentz_expmap(x, u, self._k(x))

    def transp(self, x, y, v):
        return lorentz_transport(x, y, v, self._k(x))

    def retraction(self, x, u):
        return lorentz_expmap(x, u, self._k(x))

    def value_features(self, v):
        return v

    def aggregate(self, mean, point_shape):
        return lorentz_centroid(mean, self._k(mean))

    def karcher_warm_start(self, points, weights):
        """The Lorentzian centroid of the weighted points."""
        return lorentz_centroid((weights.unsqueeze(-1) * points).sum(1), self._k(points))


def registered_geometries() -> tuple[type[ManifoldGeometry], ...]:
    """Every registered :class:`ManifoldGeometry` subclass, in registration order.

    The classes :func:`geometry_for` chooses from; a subclass that sets ``manifold_type`` is
    registered when it is created (the property tests iterate this tuple).

    Returns:
        A tuple of classes.
    """
    return tuple(_REGISTRY)


def geometry_for(manifold: geoopt.Manifold | ManifoldGeometry) -> ManifoldGeometry:
    """The :class:`ManifoldGeometry` of ``manifold`` (returned as is if it already is one).

    The most specific registered class whose ``manifold_type`` the manifold is an instance of is
    chosen; a manifold no subclass claims gets the generic :class:`ManifoldGeometry` if it has
    ``dist``, ``logmap`` and ``expmap``.
    """
    if isinstance(manifold, ManifoldGeometry):
        return manifold
    if not isinstance(manifold, geoopt.Manifold):
        raise ValueError(f"expected a geoopt manifold, got {type(manifold).__name__}")
    matches = [cls for cls in _REGISTRY if isinstance(manifold, cls.manifold_type)]
    if not matches:
        return ManifoldGeometry(manifold)
    # most specific manifold type first (longest MRO), later registrations win ties
    best = max(reversed(matches), key=lambda cls: len(cls.manifold_type.__mro__))
    return best(manifold)


class GeometryModule(torch.nn.Module):
    """Base of the modules that work on one manifold: it resolves the ``manifold`` argument once.

    Sets ``geometry`` (the :class:`ManifoldGeometry` of :func:`geometry_for`) and ``manifold``
    (its geoopt manifold, a submodule), in that order.

    Args:
        manifold: a geoopt manifold or a :class:`ManifoldGeometry`.

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> GeometryModule(Grassmann()).geometry
        GrassmannGeometry(Grassmann manifold)
    """

    def __init__(self, manifold: geoopt.Manifold | ManifoldGeometry) -> None:
        super().__init__()
        self.geometry = geometry_for(manifold)
        self.manifold = self.geometry.manifold
