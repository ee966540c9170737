r"""The Grassmann manifold Gr(n, p) as a geoopt manifold."""

from __future__ import annotations

import torch
from geoopt.manifolds.base import Manifold
from geoopt.tensor import ManifoldTensor
from geoopt.utils import broadcast_shapes, size2shape

from ..linalg import HALF_DTYPES, check_orthonormal, orthonormality_error, qr_positive, tolerance
from ..linalg.spectral import ACOS_SQRT_OVER_SIN_COS, COS_SQRT, SINC_SQRT, symmetric_functions
from .projection import distance_from_squared, projection_metric_distance

__all__ = ["Grassmann", "stack_columns", "weighted_logmap_sum_stacked"]


def _s_cot_s(s: torch.Tensor) -> torch.Tensor:
    """``s cot(s)`` (= 1 at 0), even in ``s``."""
    small = s.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(s), s)
    return torch.where(small, 1.0 - s * s / 3.0, safe / torch.tan(safe))


def _angle_over_sin_cos(sin2: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """``theta / (sin(theta) cos(theta))`` from ``sin(theta)^2`` and ``cos(theta)``, ``theta`` in [0, pi/2).

    ``theta = atan2(sin, cos)``; near ``theta = 0``, where ``sin`` is known only to absolute accuracy,
    the even series ``asin(s) / s = 1 + s^2 / 6 + 3 s^4 / 40 + 5 s^6 / 112`` (``s = sin theta``) is
    used, so the value stays accurate to rounding at every angle up to the cut locus.
    """
    small = sin2 < 1e-3
    safe_sin2 = torch.where(small, torch.ones_like(sin2), sin2)
    sin = safe_sin2.sqrt()
    closed = torch.atan2(sin, cos) / sin
    series = 1.0 + sin2 * (
        1.0 / 6.0 + sin2 * (3.0 / 40.0 + sin2 * (5.0 / 112.0 + sin2 * 35.0 / 1152.0))
    )
    return torch.where(small, series, closed) / cos


def _check_same_space(x: torch.Tensor, y: torch.Tensor, method: str) -> None:
    """Two bases must be of one Gr(n, p): a shape check, so it costs nothing and compiles."""
    if x.dim() < 2 or y.dim() < 2 or x.shape[-2:] != y.shape[-2:]:
        raise ValueError(
            f"Grassmann.{method}: both points must be bases (..., n, p) of the same Gr(n, p), got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )


def _check_near_orthonormal(y: torch.Tensor, name: str, method: str) -> None:
    """``ValueError`` unless ``max |Y^T Y - I|`` is within the Taylor radius of the spectral functions.

    Far beyond it a cosine of a principal angle can exceed 1 and the logarithm's ``acos`` returns
    NaN (the eigenvalues of ``M^T M``, ``M = X^T Y``, are at most ``lambda_max(Y^T Y) <= 1 +
    ||Y^T Y - I||_2``, and ``||E||_2 <= p max |E_ij|``). The shared check of
    :func:`manifoldnn.linalg.check_orthonormal` at the Taylor radius, not at the stricter
    ``"orthonormality"`` tolerance, so that the perturbations of finite differences and the
    rounding of half-precision bases stay accepted. Reads one number on the host.
    """
    check_orthonormal(y, f"Grassmann.{method}: {name}", tol=tolerance("taylor_switch", y.dtype))


def stack_columns(y: torch.Tensor) -> torch.Tensor:
    """Side-by-side bases ``[Y_1 ... Y_N]``: ``(B, N, n, p)`` -> ``(B, n, N p)``."""
    return y.transpose(1, 2).reshape(y.shape[0], y.shape[2], y.shape[1] * y.shape[3])


def weighted_logmap_sum_stacked(
    x: torch.Tensor, stacked: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``sum_i w_i Log_X(Y_i)`` for ``x (B, n, p)``, ``stacked = [Y_1 ... Y_N] (B, n, N p)``
    (:func:`stack_columns`), ``weights (B, N)``: the points laid side by side once, for repeated
    evaluation (the Karcher iteration). See ``Grassmann.weighted_logmap_sum`` for the formula."""
    p = x.shape[-1]
    count = weights.shape[-1]
    m = (x.transpose(-1, -2) @ stacked).reshape(-1, p, count, p).transpose(1, 2)  # X^T Y_i
    cos2, v = torch.linalg.eigh(m.transpose(-1, -2) @ m)
    mv = m @ v  # column norms cos(theta), accurate also near the cut locus
    factor = _angle_over_sin_cos((1.0 - cos2).clamp_min(0.0), mv.pow(2).sum(-2).sqrt())
    k = (v * (factor * weights.unsqueeze(-1)).unsqueeze(-2)) @ mv.transpose(-1, -2)
    # sum_i R_i K_i with R_i = (I - X X^T) Y_i: one product, then one projection
    total = stacked @ k.reshape(-1, count * p, p)
    return total - x @ (x.transpose(-1, -2) @ total)


class Grassmann(Manifold):
    r"""Grassmann manifold of ``p``-dimensional subspaces of :math:`\mathbb{R}^n`.

    .. math::

        \mathrm{Gr}(n, p) = \{\operatorname{span}(Y) : Y \in \mathbb{R}^{n \times p},\ Y^\top Y = I_p\}

    A point is stored as an orthonormal basis ``Y`` of shape ``(..., n, p)`` (any leading batch
    shape) and stands for ``span(Y)``: ``Y`` and ``Y R`` (``R`` orthogonal ``p x p``) are the same
    point. Tangent vectors at ``Y`` are horizontal: ``U`` of shape ``(..., n, p)`` with
    ``Y^T U = 0``. The metric is the canonical (Euclidean) one, ``<U, V>_Y = tr(U^T V)``, which makes
    ``Gr(n, p)`` the Riemannian quotient ``St(n, p) / O(p)`` (Edelman, Arias & Smith 1998, Sec. 2.5).
    Geodesic distance, ``logmap`` and ``dist`` depend on the subspaces only, never on the bases.

    geoopt has no Grassmann manifold; this class implements geoopt's ``Manifold`` contract, so
    ``geoopt.ManifoldParameter`` and ``geoopt.optim.RiemannianAdam/RiemannianSGD`` use it unchanged.

    Shape:
        points and tangent vectors ``(..., n, p)``; distances ``(...)``.

    Examples::

        >>> import torch
        >>> from manifoldnn.manifolds import Grassmann
        >>> manifold = Grassmann()
        >>> x, y = manifold.random(4, 6, 2), manifold.random(4, 6, 2)
        >>> u = manifold.logmap(x, y)
        >>> bool(manifold.dist(manifold.expmap(x, u), y).max() < 1e-3)
        True
    """

    ndim = 2
    name = "Grassmann"
    reversible = False

    # ------------------------------------------------------------------ checks
    def _check_shape(self, shape: tuple[int, ...], name: str) -> tuple[bool, str | None]:
        ok, reason = super()._check_shape(shape, name)
        if not ok:
            return False, reason
        if shape[-1] > shape[-2]:
            return False, f"`{name}` should have shape (..., n, p) with p <= n, got {tuple(shape)}"
        if shape[-1] < 1:
            return False, f"`{name}` should have p >= 1 columns, got {tuple(shape)}"
        return True, None

    def _check_point_on_manifold(
        self, x: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        err = float(orthonormality_error(x))
        if not err <= atol + rtol:
            return False, f"`X^T X != I`: max |X^T X - I| = {err:.3e} > atol={atol}, rtol={rtol}"
        return True, None

    def _check_vector_on_tangent(
        self, x: torch.Tensor, u: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        err = (x.transpose(-1, -2) @ u).abs().max().item() if u.numel() else 0.0
        if not err <= atol + rtol * u.abs().max().item():
            return False, f"`X^T U != 0`: max |X^T U| = {err:.3e} > atol={atol}, rtol={rtol}"
        return True, None

    # --------------------------------------------------------------- geometry
    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """Orthonormal basis of span(``x``) by sign-fixed QR; a valid basis comes back unchanged.

        Args:
            x: matrices ``(..., n, p)`` of full column rank.

        Returns:
            Orthonormal bases ``(..., n, p)`` (:func:`manifoldnn.linalg.qr_positive`).
        """
        return qr_positive(x)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Projection onto the horizontal space, ``(I - X X^T) U`` (Edelman et al. 1998, Sec. 2.5).

        Args:
            x: bases ``(..., n, p)``.
            u: ambient vectors ``(..., n, p)``.

        Returns:
            Horizontal vectors at ``x``, ``(..., n, p)``.
        """
        return u - x @ (x.transpose(-1, -2) @ u)

    egrad2rgrad = proju

    def inner(
        self,
        x: torch.Tensor,
        u: torch.Tensor,
        v: torch.Tensor | None = None,
        *,
        keepdim: bool = False,
    ) -> torch.Tensor:
        """Canonical metric ``tr(U^T V)``: ``(..., n, p)`` -> ``(...)`` (``(..., 1, 1)`` if keepdim)."""
        if v is None:
            v = u
        product = (u * v).sum(dim=(-2, -1), keepdim=keepdim)
        target = broadcast_shapes(x.shape[:-2] + (1, 1) * keepdim, product.shape)
        return product.expand(target)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """QR retraction ``qf(X + U)`` (Absil, Mahony & Sepulchre 2008, Sec. 4.1)."""
        return qr_positive(x + u)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""Exponential map along the geodesic (Edelman, Arias & Smith 1998, Thm. 2.3).

        With ``U = W diag(s) V^T``, ``Exp_X(U) = X V cos(s) V^T + W sin(s) V^T``, computed without an
        SVD as ``X cos(sqrt(U^T U)) + U sinc(sqrt(U^T U))`` from one ``p x p`` eigendecomposition.

        Args:
            x: bases ``(..., n, p)``.
            u: horizontal tangent vectors at ``x``, ``(..., n, p)``.

        Returns:
            Orthonormal bases ``(..., n, p)``.
        """
        c, s = symmetric_functions(u.transpose(-1, -2) @ u, COS_SQRT, SINC_SQRT)
        return x @ c + u @ s

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""Logarithm map: the horizontal ``U`` at ``X`` with ``span(Exp_X(U)) = span(Y)``.

        With ``M = X^T Y``, ``R = (I - X X^T) Y`` and the CS decomposition ``Y V = X U cos(Theta) +
        W sin(Theta)`` (principal angles ``Theta``; Golub & Van Loan, *Matrix Computations*), the
        logarithm ``W Theta U^T`` (Absil, Mahony & Sepulchre 2004, Acta Appl. Math. 80) equals
        ``R f(M^T M) M^T`` with ``f(cos^2 theta) = theta / (sin theta cos theta)``, a spectral
        function of the ``p x p`` matrix ``M^T M`` (one eigendecomposition, gap-safe backward). No
        solve with ``X^T Y``, and the eigenvalues ``cos^2 theta`` are the Rayleigh quotients
        ``||M v||^2``, so the result stays finite up to the cut locus and accurate to about
        ``eps / cos(theta_max)`` (tested to pi/2 - 1e-5 in float32 and float64).
        Defined when no principal angle equals pi/2 (the cut locus: there the result is finite,
        ``cos^2 theta`` being floored at the smallest normal number, but it is not a logarithm).

        Args:
            x: bases ``(..., n, p)``, orthonormal to the Taylor radius
                (``tolerance("taylor_switch")``).
            y: bases ``(..., n, p)``, likewise.

        Returns:
            Horizontal tangent vectors at ``x``, ``(..., n, p)``, independent of the basis of ``y``.

        Raises:
            ValueError: if the bases are of different ``Gr(n, p)`` or far from orthonormal.
        """
        _check_same_space(x, y, "logmap")
        if not torch.compiler.is_compiling():
            _check_near_orthonormal(x, "x", "logmap")
            _check_near_orthonormal(y, "y", "logmap")
        xty = x.transpose(-1, -2) @ y
        residual = y - x @ xty
        (f,) = symmetric_functions(xty.transpose(-1, -2) @ xty, ACOS_SQRT_OVER_SIN_COS, factor=xty)
        return residual @ (f @ xty.transpose(-1, -2))

    def weighted_logmap_sum(
        self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        r"""Weighted sum of logarithms ``sum_i w_i Log_X(Y_i)``: the Karcher-mean descent direction.

        With ``M_i = X^T Y_i`` and ``R_i = Y_i - X M_i``, the CS decomposition
        ``Y_i V = X U cos(Theta) + W sin(Theta)`` (Golub & Van Loan, *Matrix Computations*; principal
        angles ``Theta``) turns ``Log_X(Y_i) = W Theta U^T`` (Absil, Mahony & Sepulchre 2004) into
        ``R_i K_i`` with ``K_i = V diag(theta / (sin theta cos theta)) V^T M_i^T`` and
        ``V, cos^2(theta)`` the eigenpairs of the ``p x p`` matrix ``M_i^T M_i``. No solve with
        ``X^T Y_i`` and no ``n x p`` product per point is needed: the ``n``-sized work is two matrix
        products per set, ``X^T [Y_1 ... Y_N]`` and ``[Y_1 ... Y_N] [K_1; ...; K_N]`` followed by one
        projection, the rest is ``p x p``. Equal to
        ``(weights[..., None, None] * logmap(x.unsqueeze(-3), y)).sum(-3)``; where autograd is
        recording through an input, that differentiable form is what is computed.

        ``x``: ``(..., n, p)``, ``y``: ``(..., N, n, p)``, ``weights``: ``(..., N)`` -> ``(..., n, p)``.
        """
        _check_same_space(x, y, "weighted_logmap_sum")
        if weights.shape[-1] != y.shape[-3]:
            raise ValueError(
                f"Grassmann.weighted_logmap_sum: weights (..., N) must match the N = {y.shape[-3]} "
                f"points of y, got {tuple(weights.shape)}"
            )
        if torch.is_grad_enabled() and (
            x.requires_grad or y.requires_grad or weights.requires_grad
        ):
            return (weights[..., None, None] * self.logmap(x.unsqueeze(-3), y)).sum(-3)
        n, p, count = y.shape[-2], y.shape[-1], y.shape[-3]
        batch = broadcast_shapes(x.shape[:-2], y.shape[:-3], weights.shape[:-1])
        x = x.expand(batch + (n, p)).reshape(-1, n, p)
        y = y.expand(batch + (count, n, p)).reshape(-1, count, n, p)
        weights = weights.expand(batch + (count,)).reshape(-1, count)
        total = weighted_logmap_sum_stacked(x, stack_columns(y), weights)
        return total.reshape(batch + (n, p))

    def principal_angles(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""Principal angles between span(``x``) and span(``y``), ascending, in ``[0, pi/2]``.

        Sine-cosine form (Björck & Golub 1973; Knyazev & Argentati 2002): cosines are the singular
        values of ``X^T Y`` (descending), sines those of ``(I - X X^T) Y`` (ascending), paired by rank
        and combined as ``atan2(sin, cos)``, so small angles keep full relative accuracy.

        Args:
            x: bases ``(..., n, p)``.
            y: bases ``(..., n, p)``.

        Returns:
            Angles ``(..., p)``.
        """
        _check_same_space(x, y, "principal_angles")
        if x.dtype in HALF_DTYPES or y.dtype in HALF_DTYPES:  # no half SVD: float32, cast back
            return self.principal_angles(x.float(), y.float()).to(
                torch.promote_types(x.dtype, y.dtype)
            )
        xty = x.transpose(-1, -2) @ y
        cosines = torch.linalg.svdvals(xty)
        sines = torch.linalg.svdvals(y - x @ xty).flip(-1)
        return torch.atan2(sines, cosines)

    def dist2(self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Squared geodesic distance ``sum(theta^2)``: ``(..., n, p)`` -> ``(...)``."""
        d2 = self.principal_angles(x, y).pow(2).sum(-1)
        return d2[..., None, None] if keepdim else d2

    def dist(self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Geodesic distance ``||theta||_2`` (Edelman et al. 1998, Sec. 4.3); zero gradient at x == y.

        Below the floor of :func:`manifoldnn.manifolds.projection.distance_from_squared` the
        distance is exactly 0.

        Args:
            x: bases ``(..., n, p)``.
            y: bases ``(..., n, p)``.
            keepdim: keep the two point dimensions as ``(..., 1, 1)``. Default: ``False``.

        Returns:
            Distances ``(...)``.
        """
        return distance_from_squared(self.dist2(x, y, keepdim=keepdim), x.shape[-1])

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Vector transport by projection onto the horizontal space at ``y`` (Absil et al. 2008, 8.1)."""
        return self.proju(y, v)

    def retr_transp(
        self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.retr(x, u)
        return y, self.transp(x, y, v)

    def expmap_transp(
        self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.expmap(x, u)
        return y, self.transp(x, y, v)

    def transp_follow_retr(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.transp(x, self.retr(x, u), v)

    def transp_follow_expmap(
        self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        return self.transp(x, self.expmap(x, u), v)

    def squared_distance_hessian(
        self, y: torch.Tensor, log: torch.Tensor, u: torch.Tensor
    ) -> torch.Tensor:
        r"""Riemannian Hessian of ``1/2 d^2(., X)`` at ``Y`` applied to ``U``, given ``log = Log_Y(X)``.

        On a symmetric space, ``Hess(1/2 d_X^2)(Y) = f(R_v)`` with ``v = Log_Y(X)``, ``R_v = R(., v) v``
        the Jacobi operator and ``f(lambda) = sqrt(lambda) cot(sqrt(lambda))`` (Karcher 1977; Ferreira,
        Xavier, Costeira & Barroso 2013). With ``v = W diag(theta) V^T`` (thin SVD), the eigenvectors
        of ``R_v`` on the Grassmannian are ``w_k v_l^T + w_l v_k^T`` with eigenvalue
        ``(theta_k - theta_l)^2`` and ``w_k v_l^T - w_l v_k^T`` with ``(theta_k + theta_l)^2`` (k < l),
        ``w_k v_k^T`` with 0, and ``z v_l^T`` (``z`` orthogonal to ``Y`` and ``W``) with ``theta_l^2``.

        ``y``, ``log``, ``u``: ``(..., n, p)`` (``u`` horizontal at ``y``) -> ``(..., n, p)``.
        """
        return self.squared_distance_hessian_operator(y, log)(u)

    def squared_distance_hessian_operator(self, y: torch.Tensor, log: torch.Tensor):
        """The map ``U -> Hess(1/2 d^2(., X))(Y)[U]`` of ``squared_distance_hessian``, with the SVD of
        ``log`` computed once (for repeated application, e.g. in conjugate gradients)."""
        w, theta, vt = torch.linalg.svd(log, full_matrices=False)
        v = vt.transpose(-1, -2)
        column_factor = _s_cot_s(theta).unsqueeze(-2)
        symmetric_factor = _s_cot_s(theta.unsqueeze(-1) - theta.unsqueeze(-2))
        skew_factor = _s_cot_s(theta.unsqueeze(-1) + theta.unsqueeze(-2))
        diagonal = torch.eye(theta.shape[-1], dtype=torch.bool, device=theta.device)

        def apply(u: torch.Tensor) -> torch.Tensor:
            uv = u @ v
            c = w.transpose(-1, -2) @ uv
            rest = (uv - w @ c) * column_factor
            sym, skew = 0.5 * (c + c.transpose(-1, -2)), 0.5 * (c - c.transpose(-1, -2))
            top = torch.where(diagonal, c, symmetric_factor * sym + skew_factor * skew)
            return self.proju(y, (w @ top + rest) @ vt)

        return apply

    # --------------------------------------------------------------- helpers
    @staticmethod
    def projector(y: torch.Tensor) -> torch.Tensor:
        """Orthogonal projector ``Y Y^T``: ``(..., n, p)`` -> ``(..., n, n)``."""
        return y @ y.transpose(-1, -2)

    def projection_distance(
        self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False
    ) -> torch.Tensor:
        r"""Projection distance ``||X X^T - Y Y^T||_F / sqrt(2) = ||sin(theta)||_2``.

        The element-wise :func:`manifoldnn.manifolds.projection_metric_distance`:
        ``||sin theta||^2 = ||(I - X X^T) Y||_F^2`` (Edelman et al. 1998, Sec. 4.3), which keeps
        full accuracy near 0 and has a zero (finite) gradient at ``x == y``.

        Args:
            x: bases ``(..., n, p)``.
            y: bases ``(..., n, p)``.
            keepdim: keep the two point dimensions as ``(..., 1, 1)``. Default: ``False``.

        Returns:
            Distances ``(...)`` in ``[0, sqrt(p)]``.
        """
        _check_same_space(x, y, "projection_distance")
        distance = projection_metric_distance(x, y, pairwise=False)
        return distance[..., None, None] if keepdim else distance

    def chordal_distance(
        self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False
    ) -> torch.Tensor:
        r"""Chordal (Procrustes) distance ``||2 sin(theta / 2)||_2 = min_Q ||X Q - Y||_F``.

        Edelman et al. 1998, Sec. 4.3. Arguments and returned shape as :meth:`dist`.
        """
        half_chords = 2.0 * torch.sin(0.5 * self.principal_angles(x, y))
        d2 = half_chords.pow(2).sum(-1)
        d2 = d2[..., None, None] if keepdim else d2
        return distance_from_squared(d2, x.shape[-1])

    # ------------------------------------------------------------ generators
    def random(self, *size, dtype=None, device=None, **kwargs) -> ManifoldTensor:
        """Haar-uniform random subspaces: ``qf`` of a Gaussian ``(..., n, p)`` matrix.

        The Q factor (positive ``diag R``) of a Gaussian matrix is Haar-distributed on the Stiefel
        manifold, so its span is uniform on Gr(n, p) (Mezzadri 2007, Sec. 5).
        """
        shape = size2shape(*size)
        self._assert_check_shape(shape, "x")
        gaussian = torch.randn(shape, dtype=dtype, device=device, **kwargs)
        return ManifoldTensor(qr_positive(gaussian), manifold=self)

    random_uniform = random

    def origin(self, *size, dtype=None, device=None, seed: int | None = 42) -> ManifoldTensor:
        """The span of the first ``p`` coordinate axes, ``[I_p; 0]``, broadcast to ``(..., n, p)``."""
        shape = size2shape(*size)
        self._assert_check_shape(shape, "x")
        eye = torch.eye(shape[-2], shape[-1], dtype=dtype, device=device).expand(shape).clone()
        return ManifoldTensor(eye, manifold=self)

    def extra_repr(self) -> str:
        return ""
