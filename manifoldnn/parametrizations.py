r"""Orthonormal frames (points of the Stiefel manifold) as ``nn.Module`` parameters.

Every orthonormal frame (Q, and U_A / U_B in lossy mode) is one of three parametrisations:

* ``"stiefel"``: a :class:`geoopt.ManifoldParameter` on :class:`geoopt.manifolds.EuclideanStiefel`,
  trained with :class:`geoopt.optim.RiemannianAdam` (QR retraction, Absil, Mahony, Sepulchre 2008,
  "Optimization Algorithms on Matrix Manifolds", eq. 4.8).
* ``"matrix_exp"``: :math:`Q = Q_0 \exp(X) I_{n,p}` with
  :math:`X = \begin{pmatrix}\Omega & -K^\top\\ K & 0\end{pmatrix}` skew-symmetric (the Stiefel
  geodesic form of Edelman, Arias, Smith 1998, eq. 2.42; trivialisation of Lezcano-Casado 2019,
  "Trivializations for gradient-based optimization on manifolds", sec. 3).
* ``"cayley"``: :math:`Q = Q_0 (I - X)(I + X)^{-1} I_{n,p}` with the same skew X
  (Cayley transform; Wen, Yin 2013, "A feasible method for optimization with orthogonality
  constraints", eq. 7).

Q_0 is a fixed orthogonal base (a buffer), so any Stiefel point can be loaded exactly
(:meth:`OrthonormalFrame.load_`) and X starts at zero.  Orthogonality holds by construction at every
step for every parametrisation.
"""

from __future__ import annotations

from typing import Literal

import geoopt
import torch
from torch import nn

from .linalg import qr_positive
from .validation import check_choice, check_positive_int, renamed_arguments, renamed_attribute

__all__ = [
    "ConstrainedModule",
    "OrthonormalFrame",
    "PARAMETRIZATIONS",
    "SKEW_MAPS",
    "project_onto_manifold",
    "stiefel_parameter",
    "reset_stiefel_",
]

PARAMETRIZATIONS = ("stiefel", "cayley", "matrix_exp")
Parametrization = Literal["stiefel", "cayley", "matrix_exp"]


def project_onto_manifold(
    tensor: torch.Tensor, manifold: geoopt.Manifold | None = None
) -> torch.Tensor:
    r"""The nearest point of ``manifold`` to ``tensor``, computed in float64 and rounded once.

    ``manifold.projx`` (for geoopt's Stiefel manifolds, the polar factor :math:`U V^\top` of the
    SVD :math:`X = U \Sigma V^\top`, the nearest matrix with orthonormal columns in the Frobenius
    norm; Higham 2008, "Functions of Matrices", Thm. 8.4) evaluated in float64 (except on MPS,
    which has none), so that the result holds the constraint to the rounding of ``tensor``'s
    dtype.

    Args:
        tensor: the point to project, any shape the manifold accepts.
        manifold: a geoopt manifold. Default: ``None`` (the tensor's own, for a
            :class:`geoopt.ManifoldTensor` or :class:`geoopt.ManifoldParameter`, else
            :class:`geoopt.EuclideanStiefel`).

    Returns:
        The projection, detached, in ``tensor``'s dtype and on its device.
    """
    if manifold is None:
        manifold = getattr(tensor, "manifold", None)
    if manifold is None:
        manifold = geoopt.EuclideanStiefel()
    plain = tensor.detach().as_subclass(torch.Tensor)
    work = plain if plain.device.type == "mps" else plain.to(torch.float64)
    return manifold.projx(work).to(plain.dtype)


def stiefel_parameter(
    *shape: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> geoopt.ManifoldParameter:
    """A :class:`geoopt.ManifoldParameter` of ``shape`` on ``EuclideanStiefel`` (orthonormal columns
    in its last two dimensions), drawn Haar-random by :func:`reset_stiefel_`."""
    weight = geoopt.ManifoldParameter(
        torch.empty(*shape, device=device, dtype=dtype), manifold=geoopt.EuclideanStiefel()
    )
    reset_stiefel_(weight)
    return weight


@torch.no_grad()
def reset_stiefel_(weight: torch.Tensor) -> torch.Tensor:
    """Fill ``weight`` ``(..., n, p)`` in place with Haar-random orthonormal columns (the
    sign-fixed QR of a standard normal matrix, :func:`manifoldnn.linalg.qr_positive`)."""
    gaussian = torch.randn(weight.shape, dtype=weight.dtype, device=weight.device)
    return weight.copy_(qr_positive(gaussian))


class ConstrainedModule(nn.Module):
    """An ``nn.Module`` whose manifold constraints survive ``.to(dtype)``, ``.double()``, ``.half()``.

    ``Module.to`` / ``.double()`` convert parameters entry by entry, so a matrix with orthonormal
    columns in float32 is orthonormal only to float32 rounding in float64. After a conversion that
    changes the floating dtype of one of its tensors, this class calls
    :meth:`project_constraints_`, which re-projects each :class:`geoopt.ManifoldParameter`
    owned by the module itself (children handle their own) onto its manifold in the new dtype
    (:func:`project_onto_manifold`). Subclasses that hold other constrained tensors (such as a
    buffer with orthonormal columns) extend :meth:`project_constraints_`. A device move alone
    changes nothing.
    """

    def _apply(self, fn, recurse: bool = True):
        before = [t.dtype for t in self._own_tensors()]
        result = super()._apply(fn, recurse)
        after = [t.dtype for t in self._own_tensors()]
        meta = any(t.is_meta for t in self._own_tensors())  # no values to project
        if not meta and any(a != b and a.is_floating_point for a, b in zip(after, before)):
            self.project_constraints_()
        return result

    def _own_tensors(self) -> list[torch.Tensor]:
        own = list(self._parameters.values()) + list(self._buffers.values())
        return [t for t in own if t is not None]

    @torch.no_grad()
    def project_constraints_(self) -> None:
        """Re-project every :class:`geoopt.ManifoldParameter` of this module (not its children)
        onto its manifold, in float64 rounded once to its dtype."""
        for parameter in self._parameters.values():
            if isinstance(parameter, geoopt.ManifoldParameter) and parameter.is_floating_point():
                parameter.copy_(project_onto_manifold(parameter))


def _orthonormal_completion(frame: torch.Tensor) -> torch.Tensor:
    """Square orthogonal ``(n, n)`` matrix whose first p columns are ``frame`` ``(n, p)``."""
    n, p = frame.shape
    if p == n:
        return frame.clone()
    complete = torch.linalg.qr(frame, mode="complete")[0]
    return torch.cat([frame, complete[:, p:]], dim=1)


class _MatrixExp(torch.autograd.Function):
    r"""``exp(X)`` for ``X`` ``(n, n)`` with a backward whose cost does not grow with ``||G||``.

    Backward: the adjoint Frechet derivative ``L(X^T, G) = [exp([[X^T, G], [0, X^T]])]_{12}``
    (Higham 2008, "Functions of Matrices", Thm. 3.6, after Mathias 1996). The map is linear in G,
    so G is first scaled to unit max-norm: PyTorch's own backward uses G unscaled, and
    scaling-and-squaring then spends many more squarings on a large incoming gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.linalg.matrix_exp(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        n = x.shape[-1]
        scale = grad.abs().amax()
        # a zero gradient keeps scale 1: its block is then block-diagonal, with a zero corner
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        block = x.new_zeros(2 * n, 2 * n)
        block[:n, :n] = x.transpose(-1, -2)
        block[n:, n:] = x.transpose(-1, -2)
        block[:n, n:] = grad / scale
        return torch.linalg.matrix_exp(block)[:n, n:] * scale


class _RoundOnceEuclideanStiefel(geoopt.manifolds.EuclideanStiefel):
    """geoopt's EuclideanStiefel with its QR retraction evaluated in float64, rounded once.

    A Householder QR in the storage dtype leaves ``||Q^T Q - I||`` of order ``p * eps``; rounding a
    float64 QR factor once leaves it at the storage rounding floor.
    """

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float64 or x.device.type == "mps":
            return super().retr(x, u)
        return super().retr(x.to(torch.float64), u.to(torch.float64)).to(x.dtype)


def _exp_map(x: torch.Tensor, p: int) -> torch.Tensor:
    """First p columns of ``exp(X)`` for skew ``X`` (n, n)."""
    return _MatrixExp.apply(x)[:, :p]


def _cayley_map(x: torch.Tensor, p: int) -> torch.Tensor:
    """First p columns of ``(I + X)^{-1} (I - X)`` for skew ``X`` (n, n)."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(eye + x, (eye - x)[:, :p])


#: orthogonal maps of a skew-symmetric generator, by parametrisation name
SKEW_MAPS = {"matrix_exp": _exp_map, "cayley": _cayley_map}


class OrthonormalFrame(ConstrainedModule):
    r"""An ``(ambient_size, rank)`` matrix with orthonormal columns, :math:`Q^\top Q = I`, kept on
    the Stiefel manifold :math:`\mathrm{St}(n, p)`.

    Calling the module returns the frame; :meth:`load_` sets it to a given point. Train
    ``"stiefel"`` frames with a geoopt Riemannian optimiser (``RiemannianAdam`` / ``SGD``): a plain
    torch optimiser would step off the manifold. The other two parametrisations stay orthogonal
    under any optimiser. After ``.to(dtype)`` / ``.double()`` the frame is re-projected, so that it
    holds :math:`Q^\top Q = I` to the rounding of the new dtype (:class:`ConstrainedModule`).

    Args:
        ambient_size: n, the number of rows.
        rank: p, the number of orthonormal columns (``1 <= rank <= ambient_size``).
        parametrization: ``"stiefel"`` (a :class:`geoopt.ManifoldParameter`), ``"cayley"`` or
            ``"matrix_exp"`` (always-orthogonal maps of an unconstrained skew matrix around a
            fixed base :math:`Q_0`; see the module docstring). Default: ``"stiefel"``.
        high_precision: evaluate exp / Cayley / the QR retraction in float64 (except on MPS) and
            round once to the storage dtype, so that :math:`\|Q^\top Q - I\|` stays at the
            storage rounding floor however large X grows or however many retractions are taken.
            Default: ``False``.
        dtype: of the stored frame. Default: PyTorch's default.
        device: of the stored frame. Default: PyTorch's default.

    Shape:
        - Output of ``forward()``: ``(ambient_size, rank)``.

    Examples::

        >>> frame = OrthonormalFrame(6, 2, "cayley")
        >>> q = frame()
        >>> torch.allclose(q.T @ q, torch.eye(2), atol=1e-6)
        True
    """

    n = renamed_attribute("n", "ambient_size")
    p = renamed_attribute("p", "rank")

    @renamed_arguments(n="ambient_size", p="rank")
    def __init__(
        self,
        ambient_size: int,
        rank: int,
        parametrization: Parametrization = "stiefel",
        *,
        high_precision: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        n = check_positive_int(ambient_size, "ambient_size")
        p = check_positive_int(rank, "rank")
        if p > n:
            raise ValueError(
                f"rank must be <= ambient_size for orthonormal columns, got rank={p} > "
                f"ambient_size={n}"
            )
        check_choice(parametrization, "parametrization", PARAMETRIZATIONS)
        self.ambient_size, self.rank, self.parametrization = n, p, parametrization
        self.high_precision = high_precision
        factory = {"dtype": dtype, "device": device}
        eye = torch.eye(n, p, **factory)
        if parametrization == "stiefel":
            manifold = (
                _RoundOnceEuclideanStiefel()
                if high_precision
                else geoopt.manifolds.EuclideanStiefel()
            )
            self.weight = geoopt.ManifoldParameter(eye, manifold=manifold)
        else:
            self.register_buffer("base", torch.eye(n, **factory))
            self.skew_weight = nn.Parameter(torch.zeros(n, n, **factory))
            # Only rows < p of the strict upper triangle are free: X = [[Omega, -K^T], [K, 0]].
            rows = torch.arange(n, device=device).unsqueeze(1) < p
            self.register_buffer(
                "_free", torch.triu(rows.expand(n, n), diagonal=1), persistent=False
            )

    @torch.no_grad()
    def project_constraints_(self) -> None:
        """Re-project the Stiefel weight, or the orthogonal base :math:`Q_0` of the skew maps."""
        super().project_constraints_()
        if self.parametrization != "stiefel":
            self.base.copy_(project_onto_manifold(self.base))

    def skew(self) -> torch.Tensor:
        """Skew-symmetric generator ``X`` ``(n, n)`` with a zero lower-right ``(n-p, n-p)`` block."""
        upper = torch.where(self._free, self.skew_weight, torch.zeros_like(self.skew_weight))
        return upper - upper.transpose(-1, -2)

    def forward(self) -> torch.Tensor:
        """The frame ``(ambient_size, rank)``."""
        if self.parametrization == "stiefel":
            return self.weight
        x = self.skew()
        work_dtype = self._work_dtype(x)
        rotation = SKEW_MAPS[self.parametrization](x.to(work_dtype), self.rank)
        return (self.base.to(work_dtype) @ rotation).to(self.skew_weight.dtype)

    def _work_dtype(self, x: torch.Tensor) -> torch.dtype:
        # The rounding error of exp / Cayley grows with ||X|| (scaling-and-squaring, cond(I + X));
        # evaluating them in float64 and rounding once keeps Q^T Q = I at the storage precision.
        if self.high_precision and x.dtype != torch.float64 and x.device.type != "mps":
            return torch.float64
        return x.dtype

    @torch.no_grad()
    def load_(self, frame: torch.Tensor) -> OrthonormalFrame:
        """Set the frame to ``frame`` ``(ambient_size, rank)`` (re-orthonormalised by a sign-fixed
        QR); returns ``self``."""
        if frame.shape != (self.ambient_size, self.rank):
            raise ValueError(
                f"frame must have shape ({self.ambient_size}, {self.rank}), got "
                f"{tuple(frame.shape)}"
            )
        if not torch.isfinite(frame).all():
            raise ValueError("frame contains NaN or Inf")
        target = self._target_dtype_device()
        frame = qr_positive(frame.to(torch.float64)).to(**target)
        if self.parametrization == "stiefel":
            self.weight.copy_(frame)
        else:
            completed = qr_positive(_orthonormal_completion(frame.to(torch.float64)))
            self.base.copy_(completed.to(**target))
            self.skew_weight.zero_()
        return self

    def _target_dtype_device(self) -> dict:
        ref = self.weight if self.parametrization == "stiefel" else self.skew_weight
        return {"dtype": ref.dtype, "device": ref.device}

    def extra_repr(self) -> str:
        return (
            f"ambient_size={self.ambient_size}, rank={self.rank}, "
            f"parametrization={self.parametrization!r}"
        )
