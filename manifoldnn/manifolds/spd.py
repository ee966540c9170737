r"""Riemannian metrics on symmetric positive-definite matrices, one geoopt manifold and one
geometry class each.

geoopt's :class:`~geoopt.manifolds.SymmetricPositiveDefinite` carries the affine-invariant metric
(its ``default_metric`` switches the distance only, with a warning, and leaves the exponential,
logarithm, inner product and transport affine-invariant), so each further metric is a small
subclass that overrides all of them consistently:

* :class:`LogEuclideanSPD` (Arsigny, Fillard, Pennec & Ayache 2007, "Geometric means in a novel
  vector space structure on symmetric positive-definite matrices"): flat, chart
  :math:`X \mapsto \log X`;
* :class:`LogCholeskySPD` (Lin 2019, "Riemannian geometry of symmetric positive definite matrices
  via Cholesky decomposition"): flat, chart :math:`X = LL^\top \mapsto \lfloor L \rfloor +
  \log \mathbb{D}(L)` (strictly lower part plus the logarithm of the diagonal);
* :class:`BuresWassersteinSPD` (Bhatia, Jain & Lim 2019, "On the Bures-Wasserstein distance
  between positive definite matrices"; Malagò, Montrucchio & Pistone 2018, "Wasserstein Riemannian
  geometry of Gaussian densities"): the 2-Wasserstein distance of centred Gaussians.

A manifold is an instance of its metric's class, so :func:`~manifoldnn.manifolds.geometry_for`
(which picks the most specific registered class) gives each its geometry:
:class:`~manifoldnn.manifolds.SPDGeometry` (affine-invariant, geoopt's class),
:class:`LogEuclideanGeometry`, :class:`LogCholeskyGeometry` and :class:`BuresWassersteinGeometry`.
The metric is chosen by choosing the manifold, e.g. ``karcher_mean(LogCholeskySPD(), points)``;
:func:`spd_manifold` maps the names in :data:`SPD_METRICS` to them. Being geoopt manifolds, they
also serve as the manifold of a :class:`geoopt.ManifoldParameter`.

Matrix square roots and logarithms go through :func:`manifoldnn.linalg.symmetric_functions`, whose
backward stays finite at repeated eigenvalues.
"""

from __future__ import annotations

import geoopt
import torch

from ..linalg import sym, sym_expm, sym_logm, symmetric_function_derivative, symmetric_functions
from ..linalg.spectral import EXP, INV_SQRT, LOG, SQRT
from ..validation import check_choice
from .geometry import _SPDMatrixGeometry

__all__ = [
    "LogEuclideanSPD",
    "LogCholeskySPD",
    "BuresWassersteinSPD",
    "LogEuclideanGeometry",
    "LogCholeskyGeometry",
    "BuresWassersteinGeometry",
    "SPD_METRICS",
    "spd_manifold",
]


def _trace(a: torch.Tensor) -> torch.Tensor:
    return a.diagonal(dim1=-2, dim2=-1).sum(-1)


def _frobenius(u: torch.Tensor, v: torch.Tensor, keepdim: bool) -> torch.Tensor:
    out = (u * v).sum((-2, -1))
    return out[..., None, None] if keepdim else out


class _FlatChartSPD(geoopt.SymmetricPositiveDefinite):
    r"""SPD matrices with the pull-back of the Frobenius metric by a global chart ``phi``.

    With :math:`c = \phi(X)` and :math:`\psi = \phi^{-1}`: :math:`\langle U, V \rangle_X =
    \langle D\phi_X U, D\phi_X V \rangle_F`, :math:`\mathrm{Exp}_X U = \psi(c + D\phi_X U)`,
    :math:`\mathrm{Log}_X Y = D\psi_c(\phi(Y) - c)`, :math:`d(X, Y) = \|\phi(X) - \phi(Y)\|_F`,
    parallel transport keeps the chart coordinates of a vector. A subclass supplies ``chart``,
    ``unchart`` and their differentials.
    """

    def chart(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def unchart(self, c: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def chart_differential(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def unchart_differential(self, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dist(self, x, y, keepdim=False):
        out = (self.chart(x) - self.chart(y)).flatten(-2).norm(dim=-1)
        return out[..., None, None] if keepdim else out

    def inner(self, x, u, v=None, keepdim=False):
        du = self.chart_differential(x, u)
        dv = du if v is None else self.chart_differential(x, v)
        return _frobenius(du, dv, keepdim)

    def expmap(self, x, u):
        return sym(self.unchart(self.chart(x) + self.chart_differential(x, u)))

    def retr(self, x, u):
        return self.expmap(x, u)

    def logmap(self, x, y):
        c = self.chart(x)
        return sym(self.unchart_differential(c, self.chart(y) - c))

    def transp(self, x, y, v):
        return sym(self.unchart_differential(self.chart(y), self.chart_differential(x, v)))

    def egrad2rgrad(self, x, u):
        # the metric's Gram operator is (D phi)^* D phi; its inverse is D psi (D psi)^*
        c = self.chart(x).detach()
        with torch.enable_grad():
            c_var = c.requires_grad_()
            (adjoint,) = torch.autograd.grad(self.unchart(c_var), c_var, sym(u))
        return sym(self.unchart_differential(c, adjoint))

    def extra_repr(self) -> str:
        return ""


class LogEuclideanSPD(_FlatChartSPD):
    r"""SPD matrices with the log-Euclidean metric (Arsigny et al. 2007, eqs. 3.5 and 3.8).

    .. math::

        d(X, Y) = \|\log X - \log Y\|_F, \quad
        \mathrm{Exp}_X U = \exp(\log X + D\log_X U), \quad
        \mathrm{Log}_X Y = D\exp_{\log X}(\log Y - \log X)

    The Fréchet derivatives :math:`D\log`, :math:`D\exp` are the Daleckii-Krein formula
    (:func:`manifoldnn.linalg.symmetric_function_derivative`). Flat: the weighted Fréchet mean is
    :math:`\exp \sum_i w_i \log X_i`.

    Examples::

        >>> import torch
        >>> from manifoldnn.manifolds import LogEuclideanSPD, karcher_mean
        >>> points = LogEuclideanSPD().random(5, 3, 3, dtype=torch.float64)
        >>> karcher_mean(LogEuclideanSPD(), points).shape
        torch.Size([3, 3])
    """

    name = "LogEuclideanSPD"

    def chart(self, x):
        return sym_logm(x)

    def unchart(self, c):
        return sym_expm(c)

    def chart_differential(self, x, u):
        return symmetric_function_derivative(x, LOG, sym(u))

    def unchart_differential(self, c, v):
        return symmetric_function_derivative(c, EXP, sym(v))


def _cholesky_factor(c: torch.Tensor) -> torch.Tensor:
    """``L = floor(c) + exp(D(c))`` from log-Cholesky coordinates ``c``."""
    return c.tril(-1) + torch.diag_embed(c.diagonal(dim1=-2, dim2=-1).exp())


class LogCholeskySPD(_FlatChartSPD):
    r"""SPD matrices with the log-Cholesky metric (Lin 2019, Prop. 8 and Thm. 11).

    With the Cholesky factors :math:`X = LL^\top`, :math:`Y = KK^\top`:

    .. math::

        d^2(X, Y) = \|\lfloor L \rfloor - \lfloor K \rfloor\|_F^2
            + \|\log \mathbb{D}(L) - \log \mathbb{D}(K)\|_F^2

    i.e. the Frobenius distance of the coordinates :math:`\phi(X) = \lfloor L \rfloor + \log
    \mathbb{D}(L)` (lower triangular). Flat: the weighted Fréchet mean is :math:`\phi^{-1}
    \sum_i w_i \phi(X_i)` (ibid., Prop. 12). Differentials from
    :math:`dL = L\, \Phi(L^{-1}\, dX\, L^{-\top})`, :math:`\Phi` the lower triangle with half the
    diagonal (ibid., Prop. 4). Cholesky factors need no eigendecomposition, so every map here is
    differentiable at repeated eigenvalues.

    Examples::

        >>> import torch
        >>> from manifoldnn.manifolds import LogCholeskySPD
        >>> x = LogCholeskySPD().random(4, 3, 3, dtype=torch.float64)
        >>> LogCholeskySPD().dist(x[0], x[1]).shape
        torch.Size([])
    """

    name = "LogCholeskySPD"

    def chart(self, x):
        factor = torch.linalg.cholesky(x)
        return factor.tril(-1) + torch.diag_embed(factor.diagonal(dim1=-2, dim2=-1).log())

    def unchart(self, c):
        factor = _cholesky_factor(c)
        return factor @ factor.transpose(-1, -2)

    def chart_differential(self, x, u):
        factor = torch.linalg.cholesky(x)
        left = torch.linalg.solve_triangular(factor, sym(u), upper=False)
        inner = torch.linalg.solve_triangular(factor, left.transpose(-1, -2), upper=False)
        half = inner.tril(-1) + 0.5 * torch.diag_embed(inner.diagonal(dim1=-2, dim2=-1))
        d_factor = factor @ half
        ratio = d_factor.diagonal(dim1=-2, dim2=-1) / factor.diagonal(dim1=-2, dim2=-1)
        return d_factor.tril(-1) + torch.diag_embed(ratio)

    def unchart_differential(self, c, v):
        factor = _cholesky_factor(c)
        diagonal = v.diagonal(dim1=-2, dim2=-1) * c.diagonal(dim1=-2, dim2=-1).exp()
        d_factor = v.tril(-1) + torch.diag_embed(diagonal)
        product = d_factor @ factor.transpose(-1, -2)
        return product + product.transpose(-1, -2)


def _lyapunov(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``L`` with ``X L + L X = U`` for SPD ``X`` and symmetric ``U``: ``Q (Q^T U Q / (l_i + l_j))
    Q^T``. No eigenvalue gap enters the value; its gradient with respect to ``X`` goes through
    ``torch.linalg.eigh``."""
    lam, q = torch.linalg.eigh(x)
    qt = q.transpose(-1, -2)
    return q @ ((qt @ u @ q) / (lam.unsqueeze(-1) + lam.unsqueeze(-2))) @ qt


def _transport_map_root(x: torch.Tensor, y: torch.Tensor):
    """``X^{1/2}``, ``X^{-1/2}`` and ``M = (X^{1/2} Y X^{1/2})^{1/2}``, gap-safe."""
    root, inv_root = symmetric_functions(x, SQRT, INV_SQRT)
    middle = symmetric_functions(sym(root @ y @ root), SQRT)[0]
    return root, inv_root, middle


class BuresWassersteinSPD(geoopt.SymmetricPositiveDefinite):
    r"""SPD matrices with the Bures-Wasserstein metric (Bhatia, Jain & Lim 2019, eqs. 1, 7, 9, 10;
    Malagò, Montrucchio & Pistone 2018, Prop. 5).

    .. math::

        d^2(X, Y) = \operatorname{tr} X + \operatorname{tr} Y
            - 2 \operatorname{tr}(X^{1/2} Y X^{1/2})^{1/2}, \quad
        \langle U, V \rangle_X = \tfrac12 \operatorname{tr}(\mathcal{L}_X[U]\, V),

        \mathrm{Log}_X Y = (XY)^{1/2} + (YX)^{1/2} - 2X, \quad
        \mathrm{Exp}_X U = X + U + \mathcal{L}_X[U]\, X\, \mathcal{L}_X[U]

    with :math:`\mathcal{L}_X[U]` the solution of :math:`XL + LX = U`. The exponential is a
    matrix exactly when :math:`I + \mathcal{L}_X[U]` is positive definite (the manifold is not
    geodesically complete; logarithms always satisfy it). ``transp`` is the identity on the
    common tangent space (symmetric matrices), a vector transport, not parallel transport.
    The Karcher mean is the Wasserstein barycentre of Gaussians; a unit step of the Karcher
    iteration is the fixed-point map :math:`M \mapsto M^{-1/2} (\sum_i w_i (M^{1/2} X_i
    M^{1/2})^{1/2})^2 M^{-1/2}` (Álvarez-Esteban et al. 2016, "A fixed-point approach to
    barycenters in Wasserstein space", Thm. 4.2).
    """

    name = "BuresWassersteinSPD"

    def dist(self, x, y, keepdim=False):
        # d = ||X^{-1/2} (M - X)||_F, M = (X^{1/2} Y X^{1/2})^{1/2}: equal to the trace form
        # (expand the square) without its cancellation near X = Y
        _, inv_root, middle = _transport_map_root(x, y)
        out = (inv_root @ (middle - x)).flatten(-2).norm(dim=-1)
        return out[..., None, None] if keepdim else out

    def inner(self, x, u, v=None, keepdim=False):
        v = u if v is None else v
        return _frobenius(0.5 * _lyapunov(x, sym(u)), sym(v), keepdim)

    def logmap(self, x, y):
        root, inv_root, middle = _transport_map_root(x, y)
        cross = root @ middle @ inv_root  # (XY)^{1/2}
        return sym(cross + cross.transpose(-1, -2)) - 2.0 * x

    def expmap(self, x, u):
        lyap = _lyapunov(x, sym(u))
        return sym(x + u + lyap @ x @ lyap)

    def retr(self, x, u):
        return self.expmap(x, u)

    def transp(self, x, y, v):
        return sym(v)

    def egrad2rgrad(self, x, u):
        # <grad, V>_X = tr(G V) for all V  <=>  L_X[grad] = 2 G  <=>  grad = 2 (X G + G X)
        g = sym(u)
        return 2.0 * (x @ g + g @ x)

    def extra_repr(self) -> str:
        return ""


SPD_METRICS: dict[str, type[geoopt.SymmetricPositiveDefinite]] = {
    "affine_invariant": geoopt.SymmetricPositiveDefinite,
    "log_euclidean": LogEuclideanSPD,
    "log_cholesky": LogCholeskySPD,
    "bures_wasserstein": BuresWassersteinSPD,
}


def spd_manifold(metric: str = "affine_invariant") -> geoopt.SymmetricPositiveDefinite:
    """The SPD manifold with the Riemannian metric ``metric``.

    Args:
        metric: a key of :data:`SPD_METRICS` (``"affine_invariant"``, ``"log_euclidean"``,
            ``"log_cholesky"``, ``"bures_wasserstein"``). Default: ``"affine_invariant"``.

    Returns:
        A geoopt manifold whose :func:`~manifoldnn.manifolds.geometry_for` is that metric's
        geometry class.

    Examples::

        >>> from manifoldnn.manifolds import geometry_for, spd_manifold
        >>> type(geometry_for(spd_manifold("log_cholesky"))).__name__
        'LogCholeskyGeometry'
    """
    metric = check_choice(metric, "metric", tuple(SPD_METRICS))
    return SPD_METRICS[metric]()


class _FlatChartGeometry(_SPDMatrixGeometry):
    r"""A metric flat in a global chart ``phi``: squared distances, SDPA features and the
    weighted Fréchet mean are Euclidean in the chart coordinates, so every aggregation is exact
    (``is_flat``) and the Karcher mean is closed form, :math:`\psi(\sum_i w_i \phi(X_i))`. Its
    backward is the implicit function theorem on :math:`\sum_i w_i \phi(X_i) - \phi(M) = 0`:
    :math:`\lambda = D\psi^*[\bar g]`."""

    is_flat = True

    def _coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """Chart coordinates as vectors ``(..., F)`` with the Frobenius inner product."""
        return self.manifold.chart(x).flatten(-2)

    def dist(self, x, y, distance=None):
        self.check_distance(distance)
        return self.manifold.dist(x, y)

    def pairwise_sq_dist(self, q, k, distance=None):
        cq, ck = self._coordinates(q), self._coordinates(k)
        return (cq.unsqueeze(-2) - ck.unsqueeze(-3)).pow(2).sum(-1)

    def sdpa_features(self, q, k, distance):
        q, k = self._coordinates(q), self._coordinates(k)
        one = torch.ones_like(q[..., :1])
        return torch.cat([2.0 * q, one], -1), torch.cat([k, -k.pow(2).sum(-1, keepdim=True)], -1)

    def value_features(self, v):
        return self._coordinates(v)

    def aggregate(self, mean, point_shape):
        return sym(self.manifold.unchart(mean.unflatten(-1, tuple(point_shape))))

    def karcher_warm_start(self, points, weights):
        """The closed-form mean :math:`\\psi(\\sum_i w_i \\phi(X_i))`."""
        chart = self.manifold.chart(points)
        return sym(self.manifold.unchart((weights[..., None, None] * chart).sum(1)))

    def karcher_adjoint(self, mean, points, weights, rhs):
        residual = (weights[..., None, None] * self.manifold.chart(points)).sum(1)
        with torch.enable_grad():
            c = self.manifold.chart(mean).detach().requires_grad_()
            (lam,) = torch.autograd.grad(self.manifold.unchart(c), c, rhs)
        return residual, lam


class LogEuclideanGeometry(_FlatChartGeometry):
    r"""The log-Euclidean metric (:class:`LogEuclideanSPD`; Arsigny et al. 2007):
    :math:`\|\log Q - \log K\|_F^2`, SDPA features ``phi = [2 vec log Q, 1]``,
    ``psi = [vec log K, -|log K|^2]``, exact weighted means :math:`\exp \sum_i w_i \log V_i`."""

    manifold_type = LogEuclideanSPD
    distances = ("log_euclidean",)
    sdpa_distances = frozenset({"log_euclidean"})


class LogCholeskyGeometry(_FlatChartGeometry):
    r"""The log-Cholesky metric (:class:`LogCholeskySPD`; Lin 2019): squared distances, SDPA
    features and exact weighted means in the coordinates :math:`\lfloor L \rfloor + \log
    \mathbb{D}(L)` of the Cholesky factor."""

    manifold_type = LogCholeskySPD
    distances = ("log_cholesky",)
    sdpa_distances = frozenset({"log_cholesky"})


class BuresWassersteinGeometry(_SPDMatrixGeometry):
    r"""The Bures-Wasserstein metric (:class:`BuresWassersteinSPD`; Bhatia, Jain & Lim 2019).

    Pairwise squared distances :math:`\|Q^{-1/2}(M - Q)\|_F^2` with :math:`M = (Q^{1/2} K
    Q^{1/2})^{1/2}` (the trace form expanded, without its cancellation near :math:`Q = K`), from
    one square root per query and one symmetric eigenvalue problem per pair. Extrinsic mean: the
    square of the weighted mean of the square roots, :math:`(\sum_i w_i V_i^{1/2})^2` (the mean
    in the total space of the submersion :math:`A \mapsto AA^\top` that defines the metric, at
    the symmetric roots; ibid., Sec. 3).
    The Karcher iteration from there is the Wasserstein barycentre's fixed point.
    """

    manifold_type = BuresWassersteinSPD
    distances = ("bures_wasserstein",)

    def dist(self, x, y, distance=None):
        self.check_distance(distance)
        return self.manifold.dist(x, y)

    def pairwise_sq_dist(self, q, k, distance=None):
        root, inv_root = (t.unsqueeze(-3) for t in symmetric_functions(q, SQRT, INV_SQRT))
        middle = symmetric_functions(sym(root @ k.unsqueeze(-4) @ root), SQRT)[0]
        return (inv_root @ (middle - q.unsqueeze(-3))).pow(2).sum((-2, -1))

    def value_features(self, v):
        return symmetric_functions(v, SQRT)[0].flatten(-2)

    def aggregate(self, mean, point_shape):
        root = sym(mean.unflatten(-1, tuple(point_shape)))
        return sym(root @ root)

    def karcher_warm_start(self, points, weights):
        return self.aggregate(
            (weights[..., None] * self.value_features(points)).sum(1), points.shape[2:]
        )
