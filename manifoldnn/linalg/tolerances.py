"""Per-dtype numerical thresholds used across manifoldnn, in one table.

Each entry is a property of the floating-point format, not of a data set:

* ``"taylor_switch"``: below this ``|lam|`` a spectral function switches from its closed form to its
  Taylor polynomial (the closed form cancels there; the polynomial's truncation error is below the
  format's rounding at this radius);
* ``"eigh_broadening"``: relative Lorentzian broadening of the eigenvector backward
  (:func:`manifoldnn.linalg.eigh_top`), just below the eigenvalue accuracy of the format;
* ``"karcher_tol"``: default Riemannian gradient-norm tolerance of
  :func:`manifoldnn.manifolds.karcher_mean`, a little above ``sqrt(eps)`` relative accuracy of a
  point.

Unknown dtypes fall back to the float32 value.
"""

from __future__ import annotations

import torch

__all__ = ["TOLERANCES", "tolerance", "HALF_DTYPES"]

#: the half-precision dtypes, which manifoldnn evaluates in float32 (see docs/precision.md)
HALF_DTYPES = (torch.float16, torch.bfloat16)

TOLERANCES: dict[str, dict[torch.dtype, float]] = {
    "taylor_switch": {
        torch.float16: 1e-2,
        torch.bfloat16: 1e-2,
        torch.float32: 1e-2,
        torch.float64: 1e-3,
    },
    "eigh_broadening": {
        torch.float16: 1e-3,
        torch.bfloat16: 1e-2,
        torch.float32: 1e-6,
        torch.float64: 1e-10,
    },
    "karcher_tol": {
        torch.float16: 1e-2,
        torch.bfloat16: 1e-2,
        torch.float32: 1e-5,
        torch.float64: 1e-10,
    },
}


def tolerance(name: str, dtype: torch.dtype) -> float:
    """The threshold ``name`` (a key of :data:`TOLERANCES`) for ``dtype``."""
    try:
        table = TOLERANCES[name]
    except KeyError:
        raise ValueError(f"unknown tolerance {name!r}; choose from {sorted(TOLERANCES)}") from None
    return table.get(dtype, table[torch.float32])
