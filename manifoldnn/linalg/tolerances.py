"""Per-dtype numerical thresholds used across manifoldnn, in one table.

Each entry is a property of the floating-point format, not of a data set:

* ``"taylor_switch"``: below this ``|lam|`` a spectral function switches from its closed form to its
  Taylor polynomial (the closed form cancels there; the polynomial's truncation error is below the
  format's rounding at this radius);
* ``"eigh_broadening"``: relative Lorentzian broadening of the eigenvector backward
  (:func:`manifoldnn.linalg.eigh_top`), just below the eigenvalue accuracy of the format;
* ``"karcher_tol"``: default Riemannian gradient-norm tolerance of
  :func:`manifoldnn.manifolds.karcher_mean`, a little above ``sqrt(eps)`` relative accuracy of a
  point;
* ``"orthonormality"``: the largest ``|Y^T Y - I|`` accepted from a basis said to be orthonormal
  (:func:`manifoldnn.linalg.check_orthonormal`): ``sqrt(eps)``, far above the few ``p eps`` of a
  basis computed in the format and far below any error that changes a result at first order
  (one :func:`manifoldnn.linalg.newton_schulz_step` squares it back to rounding);
* ``"gap_merge"``: relative eigenvalue gap below which a divided difference ``(f(a) - f(b)) /
  (a - b)`` is replaced by ``f'`` at the midpoint (:mod:`manifoldnn.linalg.spectral`): ``sqrt(eps)``,
  where the two errors, ``eps / gap`` of the quotient and ``gap`` of the midpoint rule, are equal;
* ``"cancellation_switch"``: squared distance below which a distance evaluated as a difference of
  inner products (the sphere's chord ``2 - 2 <q, k>``, the projection metric's
  ``p - ||Q^T K||_F^2``), which has only the absolute accuracy ``eps`` of the format, is recomputed
  from the explicit residual: at ``1e-2`` the cancellation costs at most two of the format's digits;
* ``"adjoint_cg"``: relative residual at which the conjugate-gradient solve of the Karcher mean's
  backward stops: a few hundred ``eps`` in float64 and a few ``eps`` in float32, the accuracy of
  the Hessian products it is built from.

Unknown dtypes fall back to the float32 value.
"""

from __future__ import annotations

import torch

__all__ = ["TOLERANCES", "tolerance", "HALF_DTYPES"]

#: the half-precision dtypes, which manifoldnn evaluates in float32 (see docs/concepts.md, "Precision")
HALF_DTYPES = (torch.float16, torch.bfloat16)

#: the four floating formats, in the order :func:`_per_dtype` takes their values
_FORMATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _per_dtype(*values: float) -> dict[torch.dtype, float]:
    """A row of the table: one value for each of float16, bfloat16, float32, float64."""
    return dict(zip(_FORMATS, values, strict=True))


#: ``sqrt(eps)`` of each floating format
_SQRT_EPS = _per_dtype(*(torch.finfo(dtype).eps ** 0.5 for dtype in _FORMATS))

TOLERANCES: dict[str, dict[torch.dtype, float]] = {
    "taylor_switch": _per_dtype(1e-2, 1e-2, 1e-2, 1e-3),
    "eigh_broadening": _per_dtype(1e-3, 1e-2, 1e-6, 1e-10),
    "karcher_tol": _per_dtype(1e-2, 1e-2, 1e-5, 1e-10),
    "orthonormality": _SQRT_EPS,
    "gap_merge": _SQRT_EPS,
    "cancellation_switch": _per_dtype(1e-2, 1e-2, 1e-2, 1e-2),
    "adjoint_cg": _per_dtype(1e-6, 1e-6, 1e-6, 1e-13),
}


def tolerance(name: str, dtype: torch.dtype) -> float:
    """The threshold ``name`` (a key of :data:`TOLERANCES`) for ``dtype``.

    Args:
        name: a key of :data:`TOLERANCES` (see the module docstring for each entry's meaning).
        dtype: the floating format; unknown dtypes get the float32 value.

    Returns:
        The threshold as a Python float.

    Raises:
        ValueError: if ``name`` is not a key of :data:`TOLERANCES`.
    """
    try:
        table = TOLERANCES[name]
    except KeyError:
        raise ValueError(f"unknown tolerance {name!r}; choose from {sorted(TOLERANCES)}") from None
    return table.get(dtype, table[torch.float32])
