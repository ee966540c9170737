r"""The field's model-merging baselines, on models (or state dicts) fine-tuned from one base.

Every function takes ``models`` (a sequence of ``nn.Module``\ s or state dicts with the same
parameter names and shapes), ``include`` (names or a predicate; the rest, e.g. task heads, stays
per model) and returns ``{name: merged tensor}`` for the selected names. Methods that need the
pretrained model take ``base``; ``scaling`` is the task-arithmetic strength λ in
:math:`W = C + \lambda \tau`, to be chosen on validation data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..validation import check_in_range
from ._state import Include, ModelLike, as_matrix, is_matrix, prepare
from .statistics import grams_for
from .subspace import polar_factor, regmean_solve, shrink_gram

__all__ = [
    "weight_average",
    "task_arithmetic",
    "ties_merge",
    "dare_merge",
    "tsv_merge",
    "iso_c_merge",
    "regmean_merge",
    "fisher_merge",
]


def _task_vectors(models, base, include, scaling):
    r"""``(names, base_state, tasks, scaling)``: the selected names, the base's state, the stacked
    task vectors :math:`\tau_k = W_k - C` ``{name: (N, *shape)}`` and the checked ``scaling``."""
    if (
        isinstance(scaling, bool)
        or not isinstance(scaling, int | float)
        or not math.isfinite(scaling)
    ):
        raise ValueError(f"scaling must be a finite number, got {scaling!r}")
    names, states, base_state = prepare(models, include, base)
    tasks = {name: torch.stack([s[name] for s in states]) - base_state[name] for name in names}
    return names, base_state, tasks, float(scaling)


def _merge_task_matrices(models, base, include, scaling, combine) -> dict:
    r""":math:`C + \lambda\, \mathrm{combine}(\tau_1, \dots, \tau_N)` on the weight matrices
    (``combine`` maps the stacked matrix views ``(N, m, n)`` to ``(m, n)``), task arithmetic
    :math:`C + \lambda \sum_k \tau_k` on the other parameters."""
    names, base_state, tasks, scaling = _task_vectors(models, base, include, scaling)
    merged = {}
    for name in names:
        tau = tasks[name]
        if is_matrix(tau[0]):
            update = combine(torch.stack([as_matrix(t) for t in tau])).reshape(tau.shape[1:])
        else:
            update = tau.sum(0)
        merged[name] = base_state[name] + scaling * update
    return merged


def weight_average(models: Sequence[ModelLike], *, include: Include = None) -> dict:
    r"""Uniform average :math:`\frac1N \sum_k W_k` (model soups, Wortsman et al., ICML 2022)."""
    names, states, _ = prepare(models, include)
    return {name: torch.stack([s[name] for s in states]).mean(0) for name in names}


def task_arithmetic(
    models: Sequence[ModelLike], base: ModelLike, *, scaling: float = 0.5, include: Include = None
) -> dict:
    r""":math:`C + \lambda \sum_k (W_k - C)` (Ilharco et al., "Editing models with task arithmetic",
    ICLR 2023, Sec. 2). ``scaling`` λ, default 0.5."""
    names, base_state, tasks, scaling = _task_vectors(models, base, include, scaling)
    return {name: base_state[name] + scaling * tasks[name].sum(0) for name in names}


def ties_merge(
    models: Sequence[ModelLike],
    base: ModelLike,
    *,
    density: float = 0.2,
    scaling: float = 1.0,
    include: Include = None,
) -> dict:
    r"""TIES-merging: trim, elect sign, disjoint mean (Yadav et al., NeurIPS 2023, Algorithm 1).

    Each task vector keeps its ``density`` fraction of largest-magnitude entries (over all selected
    parameters together); the elected sign is that of :math:`\sum_k \hat\tau_k`; the merged vector
    averages the kept entries that agree with it; :math:`W = C + \lambda \tau_m`.

    Args:
        density: fraction kept, in (0, 1]. Default: 0.2.
        scaling: λ. Default: 1.
    """
    check_in_range(density, "density", 0, 1, low_open=True)
    names, base_state, tasks, scaling = _task_vectors(models, base, include, scaling)
    flat = torch.cat([tasks[name].flatten(1) for name in names], dim=1)
    keep = max(1, int(round(density * flat.shape[1])))
    # threshold per model: the keep-th largest magnitude
    threshold = flat.abs().topk(keep, dim=1).values[:, -1:]
    trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    counts = agree.sum(0).clamp_min(1)
    merged_flat = (trimmed * agree).sum(0) / counts
    merged, offset = {}, 0
    for name in names:
        size = base_state[name].numel()
        tau = merged_flat[offset : offset + size].reshape(base_state[name].shape)
        merged[name] = base_state[name] + scaling * tau
        offset += size
    return merged


def dare_merge(
    models: Sequence[ModelLike],
    base: ModelLike,
    *,
    drop: float = 0.9,
    scaling: float = 0.5,
    generator: torch.Generator | None = None,
    include: Include = None,
) -> dict:
    r"""DARE: drop task-vector entries with probability p and rescale by :math:`1/(1-p)`, then task
    arithmetic (Yu et al., "Language models are Super Mario", ICML 2024, Eq. 2).

    Args:
        drop: p, in [0, 1). Default: 0.9.
        scaling: λ of the task arithmetic that follows. Default: 0.5.
        generator: random generator for the masks. Default: ``None``.
    """
    check_in_range(drop, "drop", 0, 1, high_open=True)
    names, base_state, tasks, scaling = _task_vectors(models, base, include, scaling)
    merged = {}
    for name in names:
        tau = tasks[name]
        keep = torch.rand(tau.shape, generator=generator, dtype=tau.dtype).to(tau.device) >= drop
        merged[name] = base_state[name] + scaling * (tau * keep / (1.0 - drop)).sum(0)
    return merged


def tsv_merge(
    models: Sequence[ModelLike],
    base: ModelLike,
    *,
    scaling: float = 1.0,
    include: Include = None,
) -> dict:
    r"""TSV-M: task singular vectors, orthogonalised (Gargiulo et al., "Task singular vectors:
    reducing task interference in model merging", CVPR 2025, Sec. 4).

    Per weight matrix each task vector keeps its top :math:`k = \lfloor \min(m, n) / N \rfloor`
    singular triplets; the stacked bases :math:`[U_1 \dots U_N]`, :math:`[V_1 \dots V_N]` are
    replaced by their orthogonal polar factors and
    :math:`W = C + \lambda\, U_\perp \operatorname{diag}(S_1, \dots, S_N) V_\perp^\top`. Other
    parameters use task arithmetic with the same λ. ``scaling`` λ, default 1.
    """

    def combine(matrices: torch.Tensor) -> torch.Tensor:
        k = max(1, min(matrices.shape[-2:]) // matrices.shape[0])
        u, s, vh = torch.linalg.svd(matrices, full_matrices=False)
        u_cat = torch.cat(list(u[..., :k]), dim=-1)
        v_cat = torch.cat(list(vh[..., :k, :].mT), dim=-1)
        s_cat = torch.cat(list(s[..., :k]), dim=-1)
        return polar_factor(u_cat) @ (s_cat.unsqueeze(-1) * polar_factor(v_cat).mT)

    return _merge_task_matrices(models, base, include, scaling, combine)


def iso_c_merge(
    models: Sequence[ModelLike],
    base: ModelLike,
    *,
    scaling: float = 1.0,
    include: Include = None,
) -> dict:
    r"""Iso-C: the summed task matrix with a flat spectrum (Marczak et al., "No task left behind:
    isotropic model merging with common and task-specific subspaces", ICML 2025, Eq. 6).

    .. math::

        \sum_k \tau_k = U S V^\top, \qquad W = C + \lambda\, \bar\sigma\, U V^\top,
        \quad \bar\sigma = \operatorname{mean}(\operatorname{diag} S)

    Other parameters use task arithmetic with the same λ. ``scaling`` λ, default 1.
    """

    def combine(matrices: torch.Tensor) -> torch.Tensor:
        u, s, vh = torch.linalg.svd(matrices.sum(0), full_matrices=False)
        return s.mean(-1, keepdim=True).unsqueeze(-1) * (u @ vh)

    return _merge_task_matrices(models, base, include, scaling, combine)


def regmean_merge(
    models: Sequence[ModelLike],
    data: Sequence[torch.Tensor | Mapping[str, torch.Tensor]],
    *,
    alpha: float = 0.9,
    include: Include = None,
) -> dict:
    r"""RegMean: per layer :math:`W = (\sum_k W_k \tilde G_k)(\sum_k \tilde G_k)^{-1}` (Jin et al.,
    "Dataless knowledge fusion by merging weights of language models", ICLR 2023, Eq. 4).

    :math:`\tilde G_k` is model k's layer-input Gram with off-diagonal entries times ``alpha``
    (default 0.9). ``data``: per model, input tensors or dicts from
    :func:`~manifoldnn.merging.input_grams`. Parameters without a Gram (biases, ...) are averaged.
    """
    check_in_range(alpha, "alpha", 0, 1)
    names, states, _ = prepare(models, include)
    grams = grams_for(models, data)
    merged = {}
    for name in names:
        stacked = torch.stack([s[name] for s in states])
        if not is_matrix(stacked[0]) or not all(name in g for g in grams):
            merged[name] = stacked.mean(0)
            continue
        matrices = torch.stack([as_matrix(w) for w in stacked])
        layer = shrink_gram(torch.stack([g[name] for g in grams]).to(matrices), alpha)
        merged[name] = regmean_solve(matrices, layer).reshape(stacked.shape[1:])
    return merged


def fisher_merge(
    models: Sequence[ModelLike],
    fishers: Sequence[Mapping[str, torch.Tensor]],
    *,
    include: Include = None,
) -> dict:
    r"""Fisher merging :math:`W = \sum_k F_k \odot W_k / \sum_k F_k` (Matena & Raffel, NeurIPS 2022,
    Eq. 3), with diagonal Fishers from :func:`~manifoldnn.merging.diagonal_fisher`.

    Entries where every Fisher is zero (or a parameter without Fisher, e.g. a buffer) are averaged.
    """
    names, states, _ = prepare(models, include)
    if len(fishers) != len(states):
        raise ValueError(
            f"fishers must hold one dict per model ({len(states)}), got {len(fishers)}"
        )
    merged = {}
    for name in names:
        stacked = torch.stack([s[name] for s in states])
        if not all(name in f for f in fishers):
            merged[name] = stacked.mean(0)
            continue
        weight = torch.stack([f[name] for f in fishers]).to(stacked)
        if weight.shape != stacked.shape or bool((weight < 0).any()):
            raise ValueError(f"fishers: the Fisher of {name!r} must be non-negative, shaped as it")
        total = weight.sum(0)
        tiny = torch.finfo(stacked.dtype).tiny
        fisher_mean = (weight * stacked).sum(0) / total.clamp_min(tiny)
        merged[name] = torch.where(total > tiny, fisher_mean, stacked.mean(0))
    return merged
