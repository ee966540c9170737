r"""Batched, differentiable Karcher (Fréchet) mean on any geoopt manifold with exp and log maps."""

from __future__ import annotations

import math
import warnings

import geoopt
import torch

from ..linalg import HALF_DTYPES, tolerance
from ..validation import check_nonnegative_float, check_nonnegative_int, check_positive_float
from .geometry import ManifoldGeometry, geometry_for

__all__ = ["karcher_mean"]


def _tangent_norm(manifold: geoopt.Manifold, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Riemannian norm of ``u`` at ``x``, shape ``x.shape[:-ndim]``.

    ``keepdim=True`` is used because geoopt's ``PoincareBall.inner`` broadcasts wrongly without it.
    """
    sq = manifold.inner(x, u, u, keepdim=True)
    sq = sq.expand(x.shape[: x.dim() - manifold.ndim] + sq.shape[sq.dim() - manifold.ndim :])
    return sq.reshape(x.shape[: x.dim() - manifold.ndim]).clamp_min(0.0).sqrt()


def _inner(manifold: geoopt.Manifold, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
    """Riemannian inner product ``<u, v>_x`` with shape ``x.shape[:-ndim]``."""
    product = manifold.inner(x, u, v, keepdim=True)
    batch = x.shape[: x.dim() - manifold.ndim]
    return product.expand(batch + product.shape[product.dim() - manifold.ndim :]).reshape(batch)


def _solve(geometry: ManifoldGeometry, points, w, init, *, max_iter, tol, step_size):
    """Riemannian gradient descent ``m <- Exp_m(t * sum_i w_i Log_m(x_i))``, per set.

    The first step is ``t = step_size`` (1 gives the classical fixed-point iteration); later steps
    are Barzilai-Borwein steps ``t = <s, s> / <s, y>`` (Iannazzo & Porcelli 2018, "The Riemannian
    Barzilai-Borwein method with nonmonotone line search and the matrix geometric mean"), with
    ``s`` the last step and ``y`` the change of the (transported) gradient. Where the gradient norm
    grows more than tenfold, the set goes back to its previous iterate with half its last step.
    Each set stops when its own gradient norm is at most ``tol``.
    """
    manifold = geometry.manifold
    batch = init.shape[0]
    mean = init.clone()
    previous = init.clone()
    previous_grad = torch.zeros_like(init)
    previous_norm = torch.full((batch,), math.inf, dtype=mean.dtype, device=mean.device)
    step = torch.full((batch,), float(step_size), dtype=mean.dtype, device=mean.device)
    grad_norm = torch.full_like(previous_norm, math.inf)
    iterations = torch.zeros((batch,), dtype=torch.long, device=mean.device)
    active = torch.arange(batch, device=mean.device)
    shape = (-1,) + (1,) * manifold.ndim
    gradient = geometry.karcher_gradient(points, w)
    for _ in range(max_iter + 1):
        everyone = active.numel() == batch
        m = mean.clone() if everyone else mean[active]
        grad = gradient(m, None if everyone else active)
        norm = _tangent_norm(manifold, m, grad)
        if torch.isnan(norm).any():
            grad_norm[active] = norm
            break
        started = iterations[active] > 0
        worse = started & (norm > 10 * previous_norm[active])
        if bool(worse.any()):
            back = active[worse]
            m[worse], grad[worse], norm[worse] = (
                previous[back],
                previous_grad[back],
                previous_norm[back],
            )
            step[back] *= 0.5
        bb = started & ~worse
        if bool(bb.any()):
            idx = active[bb]
            old_grad = geometry.transp(previous[idx], m[bb], previous_grad[idx])
            s = step[idx].reshape(shape) * old_grad
            y = old_grad - grad[bb]
            ss, sy = _inner(manifold, m[bb], s, s), _inner(manifold, m[bb], s, y)
            ok = sy > 0
            step[idx] = torch.where(ok, ss / torch.where(ok, sy, 1.0), step[idx]).clamp(1e-3, 1e3)
        grad_norm[active] = norm
        moving = norm > tol
        if not bool(moving.any()) or int(iterations[active].max()) >= max_iter:
            break
        previous[active], previous_grad[active], previous_norm[active] = m, grad, norm
        active = active[moving]
        tangent = step[active].reshape(shape) * grad[moving]
        # the geometry re-projects: rounding errors of repeated exponential maps otherwise grow
        mean[active] = geometry.expmap(m[moving], tangent)
        iterations[active] += 1
    return mean, grad_norm, iterations


class _KarcherMean(torch.autograd.Function):
    """Identity in the forward pass; implicit differentiation of the optimality condition backward.

    At the mean ``m*``, ``F(m, X, w) = P_{m*} sum_i w_i Log_m(x_i) = 0``. In the chart
    ``m = R_{m*}(xi)`` (a retraction, ``DR(0) = id``), the implicit function theorem gives
    ``d xi = -J^{-1} dF`` with ``J = dF/d xi`` on the tangent space at ``m*``, hence
    ``grad_theta = -(dF/d theta)^T lambda`` with ``J^T lambda = P_{m*} grad_m`` (Gould et al. 2016,
    "On differentiating parameterized argmin and argmax problems"; Lou et al. 2020, ICML,
    "Differentiating through the Fréchet mean"). Only first derivatives of ``Log`` are needed; the
    solve for ``lambda`` is the geometry's ``karcher_adjoint``.
    """

    @staticmethod
    def forward(ctx, geometry, points, weights, mean):
        ctx.geometry = geometry
        ctx.save_for_backward(points, weights, mean)
        return mean.clone()

    @staticmethod
    def backward(ctx, grad_mean):
        geometry = ctx.geometry
        points, weights, mean = ctx.saved_tensors
        need_points, need_weights = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if not (need_points or need_weights):
            return None, None, None, None
        m = mean.detach()
        rhs = geometry.manifold.proju(m, grad_mean)
        with torch.enable_grad():
            x = points.detach().requires_grad_(need_points)
            w = weights.detach().requires_grad_(need_weights)
            w_normalised = w / w.sum(-1, keepdim=True)
            residual, lam = geometry.karcher_adjoint(m, x, w_normalised, rhs)
            inputs = [t for t, need in ((x, need_points), (w, need_weights)) if need]
            grads = list(torch.autograd.grad(residual, inputs, grad_outputs=lam, allow_unused=True))
        grad_points = grads.pop(0) if need_points else None
        grad_weights = grads.pop(0) if need_weights else None
        if grad_points is None and need_points:
            grad_points = torch.zeros_like(points)
        if grad_weights is None and need_weights:
            grad_weights = torch.zeros_like(weights)
        return None, grad_points, grad_weights, None


# The solver is iterative with per-set stopping (host reads of convergence flags): under
# torch.compile it runs as one opaque call, a single graph break around it.
@torch.compiler.disable
def karcher_mean(
    manifold: geoopt.Manifold,
    points: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    max_iter: int = 100,
    tol: float | None = None,
    step_size: float = 1.0,
    init: torch.Tensor | None = None,
    check: bool = True,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Weighted Karcher (Fréchet) mean :math:`\arg\min_m \sum_i w_i d^2(m, x_i)` of sets of points.

    Riemannian gradient descent with unit step, ``m <- Exp_m(sum_i w_i Log_m(x_i))`` (Karcher 1977;
    Afsari, Tron & Vidal 2013), run for a whole batch of sets at once; each set stops when its own
    gradient norm ``||sum_i w_i Log_m(x_i)||_m`` is at most ``tol`` (converged sets stop changing).
    It starts from the geometry's warm start: on the Grassmannian the extrinsic mean (top-p
    eigenvectors of the weighted mean projector), on the hyperboloid the Lorentzian centroid, on
    the Poincaré ball the Einstein midpoint, by default the manifold projection of the weighted
    Euclidean mean.
    The backward pass is implicit differentiation at the optimum (see ``_KarcherMean``), not
    back-propagation through the iterations: gradients reach ``points`` and ``weights``.

    .. math::

        \bar m = \operatorname*{arg\,min}_m \sum_i w_i\, d^2(m, x_i), \qquad
        m \leftarrow \mathrm{Exp}_m\Big(t \sum_i w_i \mathrm{Log}_m x_i\Big)

    The manifold's :class:`~manifoldnn.manifolds.ManifoldGeometry` (:func:`geometry_for`) supplies
    the logarithm, the warm start, the descent direction and the backward's adjoint solve, so a
    new manifold is one geometry class for the Karcher mean too.

    Args:
        manifold: a geoopt manifold with ``expmap`` and ``logmap`` (``Grassmann``, ``Sphere``,
            ``SymmetricPositiveDefinite``, ``PoincareBall``, ``Lorentz``, ``Euclidean(ndim=1)``,
            ...).
        points: ``(..., N, *point_shape)`` with ``len(point_shape) == manifold.ndim``.
        weights: non-negative ``(..., N)`` (broadcast against the batch shape ``...``), normalised
            to sum to one per set. Default: ``None`` (uniform).
        max_iter: maximum number of iterations per set. Default: ``100``.
        tol: gradient-norm tolerance. Default: ``None`` (``tolerance("karcher_tol", dtype)``).
        step_size: first step along the Riemannian gradient (1 is the classical fixed point
            iteration). Default: ``1.0``.
        init: starting points ``(..., *point_shape)``. Default: ``None`` (the geometry's warm start).
        check: check that the points lie on the manifold. Default: ``True``.
        return_info: also return the final gradient norms ``(...)`` and iteration counts ``(...)``.
            Default: ``False``.

    Returns:
        The means ``(..., *point_shape)`` (with ``return_info``: ``(mean, grad_norm, iterations)``).
        On the Grassmannian the basis is arbitrary within the mean subspace; use basis-invariant
        quantities downstream.

    Raises:
        ValueError: on mismatched shapes, negative weights, weights summing to zero, points off the
            manifold (with ``check=True``), or a mean that became NaN (e.g. points at the cut locus).

    Warns:
        RuntimeWarning: when a set does not reach ``tol`` within ``max_iter``; the message gives
            the gradient norm.

    Shape:
        ``points (..., N, *point_shape)``, ``weights (..., N)`` -> ``(..., *point_shape)``; one set
        ``(N, *point_shape)`` -> ``(*point_shape)``.

    Examples::

        >>> import torch
        >>> from manifoldnn.manifolds import Grassmann, karcher_mean
        >>> points = Grassmann().random(8, 5, 6, 2, dtype=torch.float64)  # 8 sets of 5 subspaces
        >>> karcher_mean(Grassmann(), points).shape
        torch.Size([8, 6, 2])
    """
    if not isinstance(manifold, geoopt.Manifold):
        raise ValueError(f"manifold must be a geoopt manifold, got {type(manifold).__name__}")
    max_iter = check_nonnegative_int(max_iter, "max_iter")
    step_size = check_positive_float(step_size, "step_size")
    for method in ("expmap", "logmap"):
        if getattr(type(manifold), method) is getattr(geoopt.Manifold, method):
            raise ValueError(
                f"karcher_mean needs a manifold with expmap and logmap; {manifold.name} "
                f"({type(manifold).__name__}) has no {method}"
            )
    ndim = manifold.ndim
    if points.dim() < ndim + 1:
        raise ValueError(
            f"points must have shape (..., N, *point_shape) with {ndim} point dimension(s) for "
            f"{manifold.name}, got shape {tuple(points.shape)}"
        )
    if not points.is_floating_point():
        raise ValueError(f"points must be a floating tensor, got dtype {points.dtype}")
    if points.dtype in HALF_DTYPES:
        # half precision: solved in float32 (the eigen/QR kernels have no half CPU implementation),
        # returned in the input dtype. The points are checked at the tolerance of their own dtype
        # and projected in float32.
        if check:
            atol = tolerance("orthonormality", points.dtype)
            ok, reason = manifold.check_point_on_manifold(
                points.detach(), explain=True, atol=atol, rtol=0
            )
            if not ok:
                raise ValueError(f"points are not on the manifold {manifold.name}: {reason}")
        upcast = karcher_mean(
            manifold,
            manifold.projx(points.float()),
            None if weights is None else weights.float(),
            max_iter=max_iter,
            tol=tol,
            step_size=step_size,
            init=None if init is None else init.float(),
            check=False,
            return_info=return_info,
        )
        if return_info:
            return (upcast[0].to(points.dtype),) + tuple(upcast[1:])
        return upcast.to(points.dtype)
    point_shape = points.shape[points.dim() - ndim :]
    batch_shape = points.shape[: points.dim() - ndim - 1]
    n_points = points.shape[points.dim() - ndim - 1]
    if n_points == 0:
        raise ValueError("points must contain at least one point per set (N >= 1), got N = 0")
    ok, reason = manifold._check_shape(tuple(point_shape), "points")
    if not ok:
        raise ValueError(f"points do not have a valid point shape for {manifold.name}: {reason}")
    if math.prod(batch_shape) == 0:  # an empty batch of sets has an empty batch of means
        empty = points.new_empty(batch_shape + tuple(point_shape))
        if return_info:
            return empty, points.new_empty(batch_shape), torch.zeros(batch_shape, dtype=torch.long)
        return empty
    if not bool(torch.isfinite(points.detach()).all()):
        raise ValueError("points hold NaN or infinite values")
    try:
        geometry = geometry_for(manifold)
    except ValueError:
        # a pairwise geometry may refuse a configuration it cannot pair (e.g. Euclidean(ndim=2));
        # the generic Karcher pieces need only the manifold's own maps
        geometry = ManifoldGeometry(manifold)
    if check:
        ok, reason = geometry.check_point_on_manifold(points.detach())
        if not ok:
            raise ValueError(f"points are not on the manifold {manifold.name}: {reason}")

    if weights is None:
        weights = torch.ones(n_points, dtype=points.dtype, device=points.device)
    if weights.dim() == 0 or weights.shape[-1] != n_points:
        raise ValueError(
            f"weights must have shape (..., N) with N = {n_points} to match points of shape "
            f"{tuple(points.shape)}, got {tuple(weights.shape)}"
        )
    try:
        weights = weights.to(points.dtype).expand(batch_shape + (n_points,))
    except RuntimeError as err:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not broadcast to the batch shape "
            f"{tuple(batch_shape)} of points {tuple(points.shape)}"
        ) from err
    if not bool(torch.isfinite(weights.detach()).all()):
        raise ValueError("weights hold NaN or infinite values; they must be finite and >= 0")
    if bool((weights.detach() < 0).any()):
        raise ValueError("weights must be non-negative")
    if bool((weights.detach().sum(-1) <= 0).any()):
        raise ValueError(
            "weights sum to zero for at least one set; each set needs a positive weight"
        )

    if init is not None:
        try:
            init = init.expand(batch_shape + tuple(point_shape))
        except (RuntimeError, AttributeError):
            raise ValueError(
                f"init must be a tensor broadcastable to the means' shape "
                f"{tuple(batch_shape + tuple(point_shape))}, got "
                f"{tuple(getattr(init, 'shape', ()))}"
            ) from None
    tol = (
        tolerance("karcher_tol", points.dtype)
        if tol is None
        else check_nonnegative_float(tol, "tol")
    )
    flat_points = points.reshape((-1, n_points) + tuple(point_shape))
    flat_weights = weights.reshape(-1, n_points)
    with torch.no_grad():
        w = flat_weights.detach() / flat_weights.detach().sum(-1, keepdim=True)
        x = flat_points.detach()
        start = (
            geometry.karcher_warm_start(x, w)
            if init is None
            else init.detach().to(x).reshape(x[:, 0].shape)
        )
        mean, grad_norm, iterations = _solve(
            geometry, x, w, start, max_iter=max_iter, tol=tol, step_size=step_size
        )
        mean = manifold.projx(mean)  # the warm start (e.g. an eigh basis) may be returned as is
    if torch.isnan(mean).any() or torch.isnan(grad_norm).any():
        bad = int((torch.isnan(grad_norm) | torch.isnan(mean).flatten(1).any(1)).sum())
        raise ValueError(
            f"karcher_mean became NaN for {bad} set(s): points are too spread for a unique mean "
            "(e.g. at the cut locus, a principal angle of pi/2 on the Grassmannian) or invalid"
        )
    not_converged = grad_norm > tol
    if bool(not_converged.any()):
        warnings.warn(
            f"karcher_mean did not converge for {int(not_converged.sum())} of {grad_norm.numel()} "
            f"set(s) in max_iter={max_iter} iterations: largest gradient norm "
            f"{float(grad_norm.max()):.3e} > tol={tol:.1e}",
            RuntimeWarning,
            stacklevel=2,
        )
    if torch.is_grad_enabled() and (flat_points.requires_grad or flat_weights.requires_grad):
        mean = _KarcherMean.apply(geometry, flat_points, flat_weights, mean)
    result = mean.reshape(batch_shape + tuple(point_shape))
    if return_info:
        return result, grad_norm.reshape(batch_shape), iterations.reshape(batch_shape)
    return result
