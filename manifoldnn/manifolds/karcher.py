r"""Batched, differentiable Karcher (Fréchet) mean on any geoopt manifold with exp and log maps."""

from __future__ import annotations

import functools
import math
import warnings

import geoopt
import torch

from ..linalg import HALF_DTYPES, tolerance
from .extrinsic import extrinsic_mean
from .grassmann import Grassmann, stack_columns, weighted_logmap_sum_stacked
from .sphere import Sphere

__all__ = ["karcher_mean"]


def _log(manifold: geoopt.Manifold, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if isinstance(manifold, geoopt.Sphere):
        # geoopt's own sphere too gets the accurate logarithm (its acos form fails below ~sqrt(eps))
        return Sphere.logmap(manifold, x, y)
    return manifold.logmap(x, y)


def _tangent_norm(manifold: geoopt.Manifold, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Riemannian norm of ``u`` at ``x``, shape ``x.shape[:-ndim]``.

    ``keepdim=True`` is used because geoopt's ``PoincareBall.inner`` broadcasts wrongly without it.
    """
    sq = manifold.inner(x, u, u, keepdim=True)
    sq = sq.expand(x.shape[: x.dim() - manifold.ndim] + sq.shape[sq.dim() - manifold.ndim :])
    return sq.reshape(x.shape[: x.dim() - manifold.ndim]).clamp_min(0.0).sqrt()


def _expand(w: torch.Tensor, ndim: int) -> torch.Tensor:
    return w.reshape(w.shape + (1,) * ndim)


def _warm_start(manifold: geoopt.Manifold, points: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A starting point close to the mean: ``points (B, N, *shape)``, ``w (B, N)`` normalised."""
    if isinstance(manifold, Grassmann):
        return extrinsic_mean(points, w)
    euclidean = (_expand(w, manifold.ndim) * points).sum(1)
    return manifold.projx(euclidean)


def _riemannian_gradient(manifold, mean, points, w):
    """Minus the Riemannian gradient of ``1/2 sum_i w_i d^2(mean, x_i)``: ``sum_i w_i Log_mean(x_i)``."""
    logs = _log(manifold, mean.unsqueeze(1), points)
    return (_expand(w, manifold.ndim) * logs).sum(1)


def _gradient_function(manifold, points, w):
    """``gradient(mean, index)``: ``sum_i w_i Log_mean(x_i)`` for the sets ``index`` (``None``: all).

    On the Grassmannian the points are laid side by side once (``[Y_1 ... Y_N]`` per set), so that
    each evaluation is two matrix products per set plus ``p x p`` work per point.
    """
    if isinstance(manifold, Grassmann):
        data, evaluate = stack_columns(points), weighted_logmap_sum_stacked
    else:
        data, evaluate = points, functools.partial(_riemannian_gradient, manifold)

    def gradient(mean, index):
        if index is None:
            return evaluate(mean, data, w)
        return evaluate(mean, data[index], w[index])

    return gradient


def _inner(manifold: geoopt.Manifold, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
    """Riemannian inner product ``<u, v>_x`` with shape ``x.shape[:-ndim]``."""
    product = manifold.inner(x, u, v, keepdim=True)
    batch = x.shape[: x.dim() - manifold.ndim]
    return product.expand(batch + product.shape[product.dim() - manifold.ndim :]).reshape(batch)


def _solve(manifold, points, w, init, *, max_iter, tol, step_size):
    """Riemannian gradient descent ``m <- Exp_m(t * sum_i w_i Log_m(x_i))``, per set.

    The first step is ``t = step_size`` (1 gives the classical fixed-point iteration); later steps
    are Barzilai-Borwein steps ``t = <s, s> / <s, y>`` (Iannazzo & Porcelli 2018, "The Riemannian
    Barzilai-Borwein method with nonmonotone line search and the matrix geometric mean"), with
    ``s`` the last step and ``y`` the change of the (transported) gradient. Where the gradient norm
    grows more than tenfold, the set goes back to its previous iterate with half its last step.
    Each set stops when its own gradient norm is at most ``tol``.
    """
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
    gradient = _gradient_function(manifold, points, w)
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
            old_grad = manifold.transp(previous[idx], m[bb], previous_grad[idx])
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
        # re-project: rounding errors of repeated exponential maps otherwise grow from step to step
        mean[active] = manifold.projx(manifold.expmap(m[moving], tangent))
        iterations[active] += 1
    return mean, grad_norm, iterations


class _KarcherMean(torch.autograd.Function):
    """Identity in the forward pass; implicit differentiation of the optimality condition backward.

    At the mean ``m*``, ``F(m, X, w) = P_{m*} sum_i w_i Log_m(x_i) = 0``. In the chart
    ``m = R_{m*}(xi)`` (a retraction, ``DR(0) = id``), the implicit function theorem gives
    ``d xi = -J^{-1} dF`` with ``J = dF/d xi`` on the tangent space at ``m*``, hence
    ``grad_theta = -(dF/d theta)^T lambda`` with ``J^T lambda = P_{m*} grad_m`` (Gould et al. 2016,
    "On differentiating parameterized argmin and argmax problems"; Lou et al. 2020, ICML,
    "Differentiating through the Fréchet mean"). Only first derivatives of ``Log`` are needed.
    """

    @staticmethod
    def forward(ctx, manifold, points, weights, mean):
        ctx.manifold = manifold
        ctx.save_for_backward(points, weights, mean)
        return mean.clone()

    @staticmethod
    def backward(ctx, grad_mean):
        manifold = ctx.manifold
        points, weights, mean = ctx.saved_tensors
        need_points, need_weights = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if not (need_points or need_weights):
            return None, None, None, None
        m = mean.detach()
        rhs = manifold.proju(m, grad_mean)
        with torch.enable_grad():
            x = points.detach().requires_grad_(need_points)
            w = weights.detach().requires_grad_(need_weights)
            w_normalised = w / w.sum(-1, keepdim=True)
            lam = None
            if isinstance(manifold, Grassmann):
                logs = _log(manifold, m.unsqueeze(1), x)
                residual = manifold.proju(m, (_expand(w_normalised, 2) * logs).sum(1))
                lam = _grassmann_adjoint(manifold, m, logs.detach(), w_normalised.detach(), rhs)
            if lam is None:
                xi = torch.zeros_like(m, requires_grad=True)
                moved = manifold.retr(m, manifold.proju(m, xi))
                residual = manifold.proju(m, _riemannian_gradient(manifold, moved, x, w_normalised))
                lam = _dense_adjoint(manifold, m, xi, residual, rhs)
            inputs = [t for t, need in ((x, need_points), (w, need_weights)) if need]
            grads = list(torch.autograd.grad(residual, inputs, grad_outputs=lam, allow_unused=True))
        grad_points = grads.pop(0) if need_points else None
        grad_weights = grads.pop(0) if need_weights else None
        if grad_points is None and need_points:
            grad_points = torch.zeros_like(points)
        if grad_weights is None and need_weights:
            grad_weights = torch.zeros_like(weights)
        return None, grad_points, grad_weights, None


def _dense_adjoint(manifold, m, xi, residual, rhs):
    """Solve ``-J^T lambda = P rhs`` with the Jacobian ``J = dF/dxi`` built from ``D`` VJPs."""
    batch, point_shape = m.shape[0], m.shape[1:]
    dim = math.prod(point_shape)
    basis = torch.eye(dim, dtype=m.dtype, device=m.device)
    basis = basis.reshape((dim, 1) + point_shape).expand((dim, batch) + point_shape)
    jac = _batched_vjp(residual, xi, basis)  # (dim, B, *shape): slice k is J^T e_k
    jac = jac.reshape(dim, batch, dim).transpose(0, 1)  # (B, dim, dim) = J
    proj = manifold.proju(m.unsqueeze(0), basis).reshape(dim, batch, dim).transpose(0, 1)
    eye = torch.eye(dim, dtype=m.dtype, device=m.device)
    lam = torch.linalg.solve(-jac.transpose(-1, -2) + (eye - proj), rhs.reshape(batch, dim, 1))
    return lam.reshape((batch,) + point_shape)


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

    def dot(a, b):
        return (a * b).sum((-2, -1))

    tol = 1e-13 if m.dtype == torch.float64 else 1e-6
    target = tol * dot(rhs, rhs).sqrt()
    lam = torch.zeros_like(rhs)
    r = rhs.clone()
    direction = r.clone()
    rr = dot(r, r)
    for _ in range(m.shape[-1] * m.shape[-2] + 1):
        if bool((rr.sqrt() <= target).all()):
            return lam
        hd = hessian(direction)
        curvature = dot(direction, hd)
        live = rr.sqrt() > target
        if bool((curvature[live] <= 0).any()):
            return None
        alpha = torch.where(live, rr / torch.where(live, curvature, 1.0), 0.0)
        lam = lam + alpha[:, None, None] * direction
        r = r - alpha[:, None, None] * hd
        rr_new = dot(r, r)
        beta = torch.where(live, rr_new / torch.where(live, rr, 1.0), 0.0)
        direction = r + beta[:, None, None] * direction
        rr = rr_new
    return lam if bool((rr.sqrt() <= target).all()) else None


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
    It starts from a warm start: on the Grassmannian the extrinsic mean (top-p eigenvectors of the
    weighted mean projector), elsewhere the manifold projection of the weighted Euclidean mean.
    The backward pass is implicit differentiation at the optimum (see ``_KarcherMean``), not
    back-propagation through the iterations: gradients reach ``points`` and ``weights``.

    Parameters
    ----------
    manifold : a geoopt manifold with ``expmap``/``logmap`` (``Grassmann``, ``Sphere``,
        ``SymmetricPositiveDefinite``, ``PoincareBall``, ``Euclidean(ndim=1)``, ...).
    points : ``(..., N, *point_shape)`` with ``len(point_shape) == manifold.ndim``.
    weights : optional non-negative ``(..., N)`` (broadcast against the batch shape ``...``); they are
        normalised to sum to one per set. Default: uniform.
    max_iter : maximum number of iterations per set.
    tol : gradient-norm tolerance; default 1e-10 in float64, 1e-5 in float32.
    step_size : step along the Riemannian gradient (1 is the classical fixed point iteration).
    init : optional starting points ``(..., *point_shape)``.
    check : check that the points lie on the manifold (raises ``ValueError`` otherwise).
    return_info : also return the final gradient norms ``(...)`` and iteration counts ``(...)``.

    Returns
    -------
    mean : ``(..., *point_shape)``. On the Grassmannian its basis is arbitrary within the mean
        subspace; use basis-invariant quantities downstream.

    Raises
    ------
    ValueError
        on mismatched shapes, negative weights, weights summing to zero, points off the manifold
        (with ``check=True``), or a mean that became NaN (e.g. points at the cut locus).
    RuntimeWarning (warning)
        when a set does not reach ``tol`` within ``max_iter``; the message gives the gradient norm.
    """
    if not isinstance(manifold, geoopt.Manifold):
        raise ValueError(f"manifold must be a geoopt manifold, got {type(manifold).__name__}")
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
        # returned in the input dtype. The points are checked at the rounding of their own dtype
        # (a basis rounded to it is orthonormal to about p eps) and projected in float32.
        if check:
            atol = 2 * points.shape[-1] * torch.finfo(points.dtype).eps
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
    if check:
        ok, reason = manifold.check_point_on_manifold(points.detach(), explain=True)
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
    tol = tolerance("karcher_tol", points.dtype) if tol is None else float(tol)
    flat_points = points.reshape((-1, n_points) + tuple(point_shape))
    flat_weights = weights.reshape(-1, n_points)
    with torch.no_grad():
        w = flat_weights.detach() / flat_weights.detach().sum(-1, keepdim=True)
        x = flat_points.detach()
        start = (
            _warm_start(manifold, x, w)
            if init is None
            else init.detach().to(x).reshape(x[:, 0].shape)
        )
        mean, grad_norm, iterations = _solve(
            manifold, x, w, start, max_iter=max_iter, tol=tol, step_size=step_size
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
        mean = _KarcherMean.apply(manifold, flat_points, flat_weights, mean)
    result = mean.reshape(batch_shape + tuple(point_shape))
    if return_info:
        return result, grad_norm.reshape(batch_shape), iterations.reshape(batch_shape)
    return result
