"""Differentiable linear algebra shared by the geometry and the layers.

* :mod:`.basic`: symmetric part, identity, sign-fixed QR and the column sign fix, one
  Newton-Schulz step, the orthonormality check, isometric vectorisation of symmetric matrices;
* :mod:`.spectral`: functions of symmetric matrices (``Q f(Lambda) Q^T``) with the gap-safe
  Daleckii-Krein backward, matrix log / exp of symmetric matrices;
* :mod:`.eigh`: top-p eigenpairs with a backward that stays finite at repeated eigenvalues;
* :mod:`.solvers`: batched conjugate gradients for symmetric positive definite operators;
* :mod:`.tolerances`: the per-dtype thresholds, in one table.

Every function accepts any number of leading batch dimensions and any floating dtype and device.
"""

from .basic import (
    check_orthonormal,
    eye_like,
    fix_column_signs,
    newton_schulz_step,
    orthonormality_error,
    qr_positive,
    sym,
    symmetric_vectorize,
)
from .eigh import eigh_top
from .solvers import conjugate_gradient
from .spectral import (
    ScalarFn,
    sym_expm,
    sym_logm,
    symmetric_function_derivative,
    symmetric_functions,
)
from .tolerances import HALF_DTYPES, TOLERANCES, tolerance

__all__ = [
    "conjugate_gradient",
    "sym",
    "eye_like",
    "qr_positive",
    "symmetric_vectorize",
    "fix_column_signs",
    "newton_schulz_step",
    "orthonormality_error",
    "check_orthonormal",
    "eigh_top",
    "ScalarFn",
    "symmetric_functions",
    "symmetric_function_derivative",
    "sym_logm",
    "sym_expm",
    "TOLERANCES",
    "HALF_DTYPES",
    "tolerance",
]
