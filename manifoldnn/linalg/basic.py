"""Small differentiable linear-algebra helpers shared by the geometry and the layers.

Every function accepts any number of leading batch dimensions and any floating dtype/device.
"""

from __future__ import annotations

import math

import torch

from .tolerances import HALF_DTYPES, tolerance

__all__ = [
    "sym",
    "qr_positive",
    "eye_like",
    "symmetric_vectorize",
    "fix_column_signs",
    "newton_schulz_step",
    "orthonormality_error",
    "check_orthonormal",
]


def sym(a: torch.Tensor) -> torch.Tensor:
    """Symmetric part ``(A + A^T) / 2`` of ``a`` with shape ``(..., n, n)``."""
    return 0.5 * (a + a.transpose(-1, -2))


def eye_like(a: torch.Tensor) -> torch.Tensor:
    """Identity matrix of shape ``(..., n, n)`` broadcast to ``a``'s leading dims, dtype and device."""
    n = a.shape[-1]
    return torch.eye(n, dtype=a.dtype, device=a.device).expand(a.shape[:-2] + (n, n))


def qr_positive(a: torch.Tensor, *, check_rank: bool = False) -> torch.Tensor:
    """Orthonormal factor Q of the QR decomposition of ``a`` with ``diag(R) >= 0``.

    Args:
        a: tensor of shape ``(..., n, p)`` with ``n >= p`` and full column rank.
        check_rank: in eager mode, raise a ``ValueError`` when some matrix is numerically
            rank-deficient (smallest ``|R_kk|`` at most ``n eps`` times the largest): its Q is then
            not a function of ``a`` and the QR backward divides by that ``R_kk``. Costs one host
            synchronisation. Default: False.

    Returns:
        tensor of shape ``(..., n, p)`` with orthonormal columns spanning the columns of ``a``.

    The sign convention makes Q a function of ``a`` (the Gram-Schmidt factor): an input with
    orthonormal columns comes back unchanged, and the result is differentiable (PyTorch's QR
    backward composed with a locally constant sign flip). Half-precision inputs are factored in
    float32 and returned in their own dtype.
    """
    if a.dim() < 2 or a.shape[-2] < a.shape[-1]:
        raise ValueError(
            f"qr_positive needs a tall matrix (..., n, p) with n >= p, got {tuple(a.shape)}"
        )
    if a.dtype in HALF_DTYPES:  # no half QR kernel: evaluated in float32, returned as the input
        return qr_positive(a.float(), check_rank=check_rank).to(a.dtype)
    q, r = torch.linalg.qr(a, mode="reduced")
    diagonal = torch.diagonal(r, dim1=-2, dim2=-1)
    if check_rank and a.numel() and not torch.compiler.is_compiling():
        size = diagonal.abs()
        floor = a.shape[-2] * torch.finfo(a.dtype).eps * size.amax(-1)
        if bool((size.amin(-1) <= floor).any()):
            raise ValueError(
                f"input of shape (..., n, p) = {tuple(a.shape)} is rank-deficient: some matrix has "
                "fewer than p linearly independent columns, so it spans no p-dimensional subspace"
            )
    return fix_column_signs(q, diagonal)


def fix_column_signs(columns: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Flip column ``k`` of ``columns`` where ``reference[..., k]`` is negative.

    The one home of the sign conventions that make a factor a function of its input: the QR
    factor with ``diag(R) >= 0`` (:func:`qr_positive`) and eigenvectors whose entry of largest
    magnitude is positive (:func:`manifoldnn.linalg.eigh_top`). A zero reference keeps its column.
    The sign is locally constant, so gradients pass through unchanged.

    Args:
        columns: tensor of shape ``(..., n, p)``.
        reference: tensor of shape ``(..., p)`` whose signs are made positive.

    Returns:
        ``columns`` with its columns multiplied by ``+1`` or ``-1``, shape ``(..., n, p)``.
    """
    signs = torch.sign(reference)
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return columns * signs.unsqueeze(-2)


def newton_schulz_step(u: torch.Tensor) -> torch.Tensor:
    r"""One Newton-Schulz step towards the polar factor, :math:`U (3 I - U^\top U) / 2`.

    .. math::

        U \mapsto \tfrac32 U - \tfrac12 U U^\top U

    The identity on orthonormal ``U``; an orthonormality error ``E = U^T U - I`` becomes
    :math:`O(E^2)`, so one step brings a basis orthonormal to ``sqrt(eps)`` back to rounding level
    (Higham 2008, "Functions of Matrices", Ch. 8, the iteration for the polar factor).

    Args:
        u: tensor of shape ``(..., n, p)`` with ``n >= p`` and nearly orthonormal columns.

    Returns:
        Tensor of shape ``(..., n, p)``.
    """
    return 1.5 * u - 0.5 * u @ (u.transpose(-1, -2) @ u)


def orthonormality_error(y: torch.Tensor) -> torch.Tensor:
    r"""Largest entry of :math:`|Y^\top Y - I|` over every basis of ``y``, as a 0-d tensor.

    Args:
        y: tensor of shape ``(..., n, p)``; not differentiated (the value is detached).

    Returns:
        A 0-d tensor (0 for an empty ``y``).
    """
    if y.numel() == 0:
        return y.new_zeros(())
    detached = y.detach()
    eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
    return (detached.transpose(-1, -2) @ detached - eye).abs().amax()


def check_orthonormal(
    y: torch.Tensor, name: str, *, dtype: torch.dtype | None = None, tol: float | None = None
) -> None:
    r"""Raise a ``ValueError`` naming ``name`` unless ``y`` holds orthonormal bases.

    The one orthonormality check of manifoldnn: :math:`\max |Y^\top Y - I| \le` ``tol``, by default
    ``tolerance("orthonormality", dtype)`` (see :mod:`manifoldnn.linalg.tolerances`). Reads one
    number on the host; NaN or infinite entries fail the check.

    Args:
        y: tensor of shape ``(..., n, p)`` (unit vectors: ``(..., d, 1)``).
        name: the argument's name, for the message.
        dtype: the floating format whose rounding the bases are expected to have (e.g. float32
            for vectors normalised in float32 and then cast to float64). Default: ``y.dtype``.
        tol: an explicit threshold instead of the table's. Default: ``None``.
    """
    if tol is None:
        tol = tolerance("orthonormality", y.dtype if dtype is None else dtype)
    error = orthonormality_error(y)
    if not bool(error <= tol):
        raise ValueError(
            f"{name} must be orthonormal bases (Y^T Y = I): max |Y^T Y - I| = {float(error):.2e} "
            f"> {tol:.1e}; orthonormalise them first (e.g. manifoldnn.linalg.qr_positive)"
        )


def symmetric_vectorize(s: torch.Tensor) -> torch.Tensor:
    r"""Upper triangle of symmetric matrices with off-diagonal entries times :math:`\sqrt 2`.

    ``(..., n, n) -> (..., n (n + 1) / 2)``.  The :math:`\sqrt 2` makes the map an isometry from the
    Frobenius inner product, :math:`\langle \operatorname{vec} A, \operatorname{vec} B \rangle =
    \operatorname{tr}(A B)` (Arsigny et al. 2007, "Geometric means in a novel vector space structure
    on symmetric positive-definite matrices", vectorisation of symmetric matrices; the projection
    metric of the Grassmannian, Hamm & Lee 2008, is then Euclidean on the vectors).
    """
    if s.dim() < 2 or s.shape[-1] != s.shape[-2]:
        raise ValueError(f"symmetric_vectorize needs (..., n, n), got shape {tuple(s.shape)}")
    n = s.shape[-1]
    rows, cols = torch.triu_indices(n, n, device=s.device)
    scale = torch.where(
        rows == cols,
        torch.ones((), dtype=s.dtype, device=s.device),
        torch.full((), math.sqrt(2.0), dtype=s.dtype, device=s.device),
    )
    # index_select on the flattened matrices: its backward is a plain index_add
    return s.flatten(-2).index_select(-1, rows * n + cols) * scale
