r"""Subspace merging on the Grassmannian: Procrustes-aligned bases, Karcher-mean spans, merged cores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from manifoldnn.manifolds import Grassmann, karcher_mean

from ._state import Include, ModelLike, as_matrix, check_rank, is_matrix, prepare
from .statistics import grams_for

__all__ = [
    "subspace_merge",
    "subspace_merge_matrices",
    "merge_factored",
    "polar_factor",
    "regmean_solve",
]


def polar_factor(a: torch.Tensor) -> torch.Tensor:
    r"""Orthogonal polar factor :math:`P Q^\top` of :math:`a = P \Sigma Q^\top`, shape ``(..., p, q)``.

    It solves the orthogonal Procrustes problem :math:`\min_{R^\top R = I} \|X R - Y\|_F` for
    ``a = X^T Y`` (Schönemann 1966).
    """
    left, _, right_h = torch.linalg.svd(a, full_matrices=False)
    return left @ right_h


def shrink_gram(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """RegMean's regularised Gram: off-diagonal entries times ``alpha`` (Jin et al. 2023, Sec. 3.2)."""
    diagonal = torch.diagonal(gram, dim1=-2, dim2=-1)
    return alpha * gram + (1.0 - alpha) * torch.diag_embed(diagonal)


def regmean_solve(matrices: torch.Tensor, grams: torch.Tensor) -> torch.Tensor:
    r"""Least-squares merge :math:`(\sum_k W_k G_k)(\sum_k G_k)^{-1}`: ``(N, ..., m, n)``, ``(N, ..., n, n)``.

    A ridge of ``n * eps`` times the mean diagonal keeps directions that no input reaches (zero rows
    and columns of every Gram) well posed; there the result is the plain mean of the ``W_k``.
    """
    total = grams.sum(0)
    mean_diagonal = torch.diagonal(total, dim1=-2, dim2=-1).mean(-1)
    n = total.shape[-1]
    ridge = (
        n * torch.finfo(total.dtype).eps * mean_diagonal.clamp_min(torch.finfo(total.dtype).tiny)
    )
    eye = torch.eye(n, dtype=total.dtype, device=total.device)
    total = total + ridge[..., None, None] * eye
    # the ridge also enters the numerator so that unreached directions average the models
    rhs = (matrices @ grams).sum(0) + ridge[..., None, None] * matrices.mean(0)
    return torch.linalg.solve(total, rhs.mT).mT


def merge_factored(
    u: torch.Tensor,
    s: torch.Tensor,
    v: torch.Tensor,
    residual: torch.Tensor,
    *,
    grams: torch.Tensor | None = None,
    alpha: float = 0.9,
) -> torch.Tensor:
    r"""The mean :math:`U_* \bar K V_*^\top + \bar E` of N factored matrices :math:`U_k S_k V_k^\top + E_k`.

    ``u (N, ..., m, r)``, ``s (N, ..., r)``, ``v (N, ..., n, r)``, ``residual (N, ..., m, n)``,
    optional ``grams (N, ..., n, n)``; any orthonormal ``u, v`` with ``U_k S_k V_k^T`` the same
    matrix (signs, rotations) give the same result. See :func:`subspace_merge_matrices`.
    """
    grassmann = Grassmann()
    # karcher_mean wants the N points just before the point dimensions: (..., N, m, r)
    u_star = karcher_mean(grassmann, u.movedim(0, -3))
    v_star = karcher_mean(grassmann, v.movedim(0, -3))
    rot_u = polar_factor(u.mT @ u_star)
    rot_v = polar_factor(v.mT @ v_star)
    # K_k = R_k^T (U_k^T X_k V_k) Q_k, written with a full core so that s may be any r x r core
    cores = rot_u.mT @ (s.unsqueeze(-1) * rot_v) if s.dim() == u.dim() - 1 else rot_u.mT @ s @ rot_v
    if grams is None:
        core, rest = cores.mean(0), residual.mean(0)
    else:
        grams = shrink_gram(grams.to(u.dtype), alpha)
        aligned = v @ rot_v
        core = regmean_solve(cores, aligned.mT @ grams @ aligned)
        rest = regmean_solve(residual, grams)
    return u_star @ core @ v_star.mT + rest


def subspace_merge_matrices(
    weights: torch.Tensor,
    rank: int,
    *,
    base: torch.Tensor | None = None,
    grams: torch.Tensor | str | None = None,
    scaling: float | None = None,
    alpha: float = 0.9,
) -> torch.Tensor:
    r"""Merge N matrices in shared top-``rank`` subspaces (see :func:`subspace_merge`).

    With :math:`X_k = W_k - C` (``base`` given) or :math:`X_k = W_k`, the top-r SVDs
    :math:`X_k = U_k S_k V_k^\top + E_k`, the Grassmann Karcher means :math:`U_*, V_*` of the spans of
    the :math:`U_k` and of the :math:`V_k`, and the Procrustes rotations
    :math:`R_k = \operatorname{polar}(U_k^\top U_*)`, :math:`Q_k = \operatorname{polar}(V_k^\top V_*)`:

    .. math::

        K_k = R_k^\top S_k Q_k, \qquad
        W_* = C + \lambda N \big(U_* \bar K V_*^\top + \bar E\big)

    where :math:`\bar K, \bar E` are the means of the cores and of the residuals (or, with
    ``grams``, the RegMean least-squares merges, each core against the Gram of its model's inputs in
    its aligned basis, :math:`(V_k Q_k)^\top G_k V_k Q_k`), and :math:`\lambda = 1/N` by default.

    Args:
        weights: ``(N, ..., m, n)`` matrices of N models (any leading batch shape ``...``).
        rank: the subspace dimension r, ``1 <= r <= min(m, n)``.
        base: optional ``(..., m, n)`` pretrained matrix C; then task vectors are merged.
        grams: optional ``(N, ..., n, n)`` input Gram matrices of each model at this layer, or
            ``"self"``: :math:`X_k^\top X_k`, each matrix's own row-space statistics, a data-free
            stand-in for the inputs (the directions a model responds to most weigh most).
        scaling: λ, only with ``base``. Default: ``1 / N``.
        alpha: off-diagonal shrinkage of the Grams, as in RegMean. Default: 0.9.

    Shape:
        ``weights (N, ..., m, n) -> (..., m, n)``.

    Invariances (exact in exact arithmetic): the order of the models, sign flips or rotations of
    singular vectors (only spans and polar factors enter), and the basis that the Karcher mean
    returns; ``N`` copies of one matrix give it back.
    """
    if weights.dim() < 3:
        raise ValueError(f"weights must have shape (N, ..., m, n), got {tuple(weights.shape)}")
    count = weights.shape[0]
    if not 1 <= rank <= min(weights.shape[-2:]):
        raise ValueError(f"rank must lie in [1, {min(weights.shape[-2:])}], got {rank}")
    if scaling is not None and base is None:
        raise ValueError("scaling needs base: without C the merge is the (aligned) mean")
    lam = 1.0 / count if scaling is None else float(scaling)
    x = weights if base is None else weights - base
    if isinstance(grams, str):
        if grams != "self":
            raise ValueError(f"grams must be a tensor, 'self' or None, got {grams!r}")
        grams = x.mT @ x
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    u, s, v = u[..., :rank], s[..., :rank], vh[..., :rank, :].mT
    residual = x - (u * s.unsqueeze(-2)) @ v.mT
    merged = merge_factored(u, s, v, residual, grams=grams, alpha=alpha)
    merged = lam * count * merged
    return merged if base is None else base + merged


def subspace_merge(
    models: Sequence[ModelLike],
    rank: int,
    base: ModelLike | None = None,
    data: Sequence[torch.Tensor | Mapping[str, torch.Tensor]] | str | None = None,
    *,
    include: Include = None,
    scaling: float | None = None,
    alpha: float = 0.9,
) -> dict[str, torch.Tensor]:
    r"""Merge models fine-tuned from one base in shared subspaces on the Grassmannian.

    For every selected weight (Linear ``(out, in)``, Conv ``(out, in, *kernel)`` viewed as
    ``(out, in * prod(kernel))``) both singular bases are used: each model's top-``rank`` left and
    right singular vectors are aligned to the Grassmann Karcher mean of their spans (the geodesic
    midpoint for two models) by orthogonal Procrustes, which fixes signs and rotations; the full
    ``rank x rank`` cores are merged in those shared bases and the residuals beyond rank r are
    averaged (formula in :func:`subspace_merge_matrices`). Biases, norms and other vectors are
    averaged.

    .. math::

        W_* = C + \lambda N \big(U_* \bar K V_*^\top + \bar E\big)

    * ``base`` (C) given: the task vectors :math:`W_k - C` are merged and scaled by λ
      (task-arithmetic convention, ``scaling``, default 1/N).
    * ``data`` given: cores and residuals are merged by RegMean's least squares on each model's
      layer-input Gram matrices (Jin et al., ICLR 2023, Eq. 4) instead of averaged.
    * ``data="self"``: the same least squares with each weight's own Gram :math:`X_k^\top X_k` in
      place of input statistics; data-free.
    * neither: a symmetric, sign-invariant function of the models alone; ``merge(A, A) = A``
      (this holds in every mode, with ``base`` at the default λ).

    Task vectors without C are not identifiable (C + E with τ_k - E gives the same models), so
    without ``base`` nor ``data`` the merge sees the models only; the shared-basis construction
    follows the Core Space (Panariello et al., NeurIPS 2025) and TSV-M (Gargiulo et al., CVPR 2025)
    idea of merging in common singular bases, with the Grassmann mean in place of C's task vectors.

    Args:
        models: N >= 1 ``nn.Module``\ s or state dicts with identical parameter names and shapes.
        rank: subspace dimension r for every selected weight, ``r <= min(out, in * prod(kernel))``.
        base: the pretrained model C. Default: ``None``.
        data: per model, unlabelled inputs (tensor; the model must be a module) or a dict of Gram
            matrices from :func:`~manifoldnn.merging.input_grams`. Weights without a Gram are
            merged without one; or ``"self"`` (see above). Default: ``None``.
        include: names to merge (iterable) or a predicate ``name -> bool``; task heads left out stay
            per model. Default: every floating parameter and buffer.
        scaling: λ, only with ``base``. Default: ``1 / N``.
        alpha: RegMean's off-diagonal Gram shrinkage. Default: 0.9.

    Returns:
        ``{name: merged tensor}`` for the selected names; load it with
        :func:`~manifoldnn.merging.load_merged` (``strict=False``), keeping each task's head.

    Raises:
        ValueError: different architectures or shapes, NaN/inf weights, or ``rank`` too large,
            each naming the parameter.

    Examples::

        >>> a, b = torch.nn.Linear(8, 6), torch.nn.Linear(8, 6)
        >>> merged = subspace_merge([a, b], rank=3)
        >>> merged["weight"].shape
        torch.Size([6, 8])
    """
    names, states, base_state = prepare(models, include, base)
    check_rank(rank, [n for n in names if is_matrix(states[0][n])], states[0])
    if scaling is not None and base is None:
        raise ValueError("scaling needs base: without C the merge is the (aligned) mean")
    if isinstance(data, str) and data != "self":
        raise ValueError(
            f"data must be a sequence (one entry per model), 'self' or None, got {data!r}"
        )
    own = isinstance(data, str)
    grams = None if data is None or own else grams_for(models, data)
    count = len(states)
    lam = 1.0 / count if scaling is None else float(scaling)
    merged = {}
    for name in names:
        stacked = torch.stack([state[name] for state in states])
        anchor = None if base_state is None else base_state[name].to(stacked)
        if not is_matrix(stacked[0]):
            tasks = stacked if anchor is None else stacked - anchor
            value = lam * count * tasks.mean(0)
            merged[name] = value if anchor is None else anchor + value
            continue
        shape = stacked.shape[1:]
        matrices = torch.stack([as_matrix(w) for w in stacked])
        layer_grams = None
        if grams is not None and all(name in g for g in grams):
            layer_grams = torch.stack([g[name] for g in grams]).to(matrices)
            if layer_grams.shape[-1] != matrices.shape[-1]:
                raise ValueError(
                    f"data: the Gram of {name!r} is {tuple(layer_grams.shape[-2:])}, the weight "
                    f"takes {matrices.shape[-1]} inputs"
                )
        value = subspace_merge_matrices(
            matrices,
            rank,
            base=None if anchor is None else as_matrix(anchor),
            grams="self" if own else layer_grams,
            scaling=scaling,
            alpha=alpha,
        )
        merged[name] = value.reshape(shape)
    return merged
