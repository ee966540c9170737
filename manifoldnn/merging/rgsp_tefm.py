r"""RGSP-TEFM, the design notes' subspace fusion of two fine-tuned models, with every open reading."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..utils.optional import require
from ._state import Include, ModelLike, as_matrix, check_rank, is_matrix, prepare

__all__ = ["rgsp_tefm", "rgsp_tefm_matrix"]


def _column_distances(u: torch.Tensor) -> torch.Tensor:
    """``C(i, j) = ||u_i - u_j||^2`` over the columns of ``u (m, r)``: ``(r, r)``."""
    gram = u.mT @ u
    diagonal = torch.diagonal(gram)
    return (diagonal[:, None] + diagonal[None, :] - 2.0 * gram).clamp_min(0.0)


def _signed_svd(weight: torch.Tensor, rank: int):
    """Top-r SVD with the largest-magnitude entry of every left singular vector positive."""
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    u, s, v = u[:, :rank], s[:rank], vh[:rank].mT
    peak = u.gather(0, u.abs().argmax(0, keepdim=True))
    sign = torch.where(peak < 0, -torch.ones_like(peak), torch.ones_like(peak))
    return u * sign, s, v * sign


def rgsp_tefm_matrix(
    weight_a: torch.Tensor,
    weight_b: torch.Tensor,
    rank: int,
    *,
    epsilon: float = 0.1,
    beta: float = 1.0,
    eps: float = 1e-8,
    right_basis: str = "v",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""RGSP-TEFM on one ``(m, n)`` weight pair; returns the merge and its intermediate quantities.

    With the top-r SVDs :math:`W_X = U_X S_X V_X^\top` (:math:`U_X` is ``m x r``) and
    :math:`D = W_B - W_A`:

    .. math::

        M = \operatorname{softmax}_\text{rows}\!\big(U_A^\top U_B / \sqrt r\big),\quad
        U_B' = U_B M^\top,\quad
        \pi, \bar d = \mathrm{GW}_\epsilon(C_A, C_{B'}),\quad
        \Delta S = M\, (\mathrm{TOS}\, \pi)\, (S_B - S_A)

        \tau_\text{proj} = U_\text{rel} \operatorname{diag}(\Delta S) V_\text{rel}^\top,\quad
        W_* = \tfrac12 (W_A + W_B) + \lambda \tau_\text{proj} + (1 - \lambda)(D - \tau_\text{proj}),
        \quad \lambda = \frac{\operatorname{mean}(\mathrm{TFI})}{1 + e^{\bar d}}

    Readings of what the notes leave open (each is one line below):

    * ``W_q = W_k = I_r`` (the notes initialise them to the identity and train nothing), and the
      logits are ``r x r``: :math:`(U_A W_q)^\top (U_B W_k)`, since as written (``U`` is ``m x r``)
      ``M`` would be ``m x m`` and could not multiply the r-vector :math:`\pi (S_B - S_A)`.
    * Singular vectors are fixed up to sign by making the largest-magnitude entry of each
      :math:`u_i` positive (with :math:`v_i` flipped alike); the method is not sign-invariant, and
      without a convention its output would depend on the SVD routine.
    * ``M U_B`` is read as :math:`U_B M^\top`: column i of :math:`U_B'` is
      :math:`\sum_j M_{ij} u_{B,j}`, B's vectors weighted by their affinity to :math:`u_{A,i}`.
    * ``U[i]`` is the i-th singular vector (column), so :math:`C_A, C_{B'}` are ``r x r``.
    * "Gromov-Wasserstein solved by Sinkhorn" is POT's entropic GW
      (``ot.gromov.entropic_gromov_wasserstein``, Peyré, Cuturi & Solomon, ICML 2016), square loss,
      uniform marginals 1/r, regularisation ``epsilon``; :math:`\bar d` is its GW loss.
    * :math:`p = \operatorname{softmax}(|S_B - S_A|)`, :math:`\bar s = \sum_i p_i (S_B - S_A)_i`,
      :math:`\bar h = -\sum_i p_i \log p_i`, :math:`\mathrm{TFI}_i = p_i \bar s (1 - \bar d) /
      (\bar h + \varepsilon)`.
    * With ``rank=1``, :math:`\bar h = 0` and λ is of order :math:`1/\varepsilon`, as written.
    * :math:`\mathrm{TOS} = \cos(\psi, \psi) e^{-\beta \bar d}`; the cosine of ψ with itself is 1,
      so TOS is :math:`e^{-\beta \bar d}` (a scalar reweighting of π).
    * Rectangular layers: :math:`\tau_\text{proj}` uses :math:`U_\text{rel} = (U_A + U_B')/2` on the
      left and :math:`V_\text{rel} = (V_A + V_B M^\top)/2` on the right (``right_basis="v"``);
      ``right_basis="u"`` is the literal :math:`U_\text{rel} \Delta S U_\text{rel}^\top`, square
      weights only.

    Args:
        weight_a: ``(m, n)`` weight of model A.
        weight_b: ``(m, n)`` weight of model B.
        rank: r, ``1 <= r <= min(m, n)``.
        epsilon: entropic regularisation of GW. Default: 0.1.
        beta: the TOS temperature β. Default: 1.
        eps: ε in the TFI denominator. Default: 1e-8.
        right_basis: ``"v"`` or ``"u"`` (see above). Default: ``"v"``.

    Returns:
        ``W_*`` and a dict with ``M, U_B', C_A, C_B', pi, d, p, s_bar, h_bar, TFI, TOS, delta_S,
        tau_proj, tau_ortho, lambda``.
    """
    if right_basis not in ("u", "v"):
        raise ValueError(f"right_basis must be 'u' or 'v', got {right_basis!r}")
    if weight_a.dim() != 2 or weight_a.shape != weight_b.shape:
        raise ValueError(
            f"weight_a and weight_b must be matrices of one shape, got {tuple(weight_a.shape)} and "
            f"{tuple(weight_b.shape)}"
        )
    if right_basis == "u" and weight_a.shape[0] != weight_a.shape[1]:
        raise ValueError(f"right_basis='u' needs a square weight, got {tuple(weight_a.shape)}")
    if not 1 <= rank <= min(weight_a.shape):
        raise ValueError(f"rank must lie in [1, {min(weight_a.shape)}], got {rank}")
    ot = require("ot", "merging", "rgsp_tefm (Gromov-Wasserstein alignment, POT)")
    u_a, s_a, v_a = _signed_svd(weight_a, rank)
    u_b, s_b, v_b = _signed_svd(weight_b, rank)
    mixing = torch.softmax(u_a.mT @ u_b / math.sqrt(rank), dim=-1)
    u_b_mixed = u_b @ mixing.mT
    cost_a, cost_b = _column_distances(u_a), _column_distances(u_b_mixed)
    marginal = np.full(rank, 1.0 / rank)
    plan, log = ot.gromov.entropic_gromov_wasserstein(
        cost_a.double().cpu().numpy(),
        cost_b.double().cpu().numpy(),
        marginal,
        marginal,
        loss_fun="square_loss",
        epsilon=epsilon,
        log=True,
    )
    plan = torch.as_tensor(plan, dtype=weight_a.dtype, device=weight_a.device)
    distance = torch.tensor(float(log["gw_dist"]), dtype=weight_a.dtype, device=weight_a.device)
    gap = s_b - s_a
    p = torch.softmax(gap.abs(), dim=0)
    s_bar = (p * gap).sum()
    h_bar = torch.special.entr(p).sum()  # 0 log 0 = 0 where a weight underflows
    tfi = p * s_bar * (1.0 - distance) / (h_bar + eps)
    psi = torch.stack([s_bar, h_bar, distance])
    tos = torch.nn.functional.cosine_similarity(psi, psi, dim=0) * torch.exp(-beta * distance)
    delta_s = mixing @ (tos * plan) @ gap
    u_rel = 0.5 * (u_a + u_b_mixed)
    v_rel = u_rel if right_basis == "u" else 0.5 * (v_a + v_b @ mixing.mT)
    tau_proj = (u_rel * delta_s) @ v_rel.mT
    difference = weight_b - weight_a
    tau_ortho = difference - tau_proj
    lam = tfi.mean() / (1.0 + torch.exp(distance))
    merged = 0.5 * (weight_a + weight_b) + lam * tau_proj + (1.0 - lam) * tau_ortho
    info = {
        "M": mixing,
        "U_B'": u_b_mixed,
        "C_A": cost_a,
        "C_B'": cost_b,
        "pi": plan,
        "d": distance,
        "p": p,
        "s_bar": s_bar,
        "h_bar": h_bar,
        "TFI": tfi,
        "TOS": tos,
        "delta_S": delta_s,
        "tau_proj": tau_proj,
        "tau_ortho": tau_ortho,
        "lambda": lam,
    }
    return merged, info


def rgsp_tefm(
    model_a: ModelLike,
    model_b: ModelLike,
    rank: int,
    *,
    include: Include = None,
    epsilon: float = 0.1,
    beta: float = 1.0,
    eps: float = 1e-8,
    return_info: bool = False,
) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], dict[str, dict]]:
    r"""RGSP-TEFM merge of two models, layer by layer, as the design notes specify.

    Every selected weight (Linear, or Conv viewed as ``(out, in * prod(kernel))``) is merged by
    :func:`rgsp_tefm_matrix` (formula and readings there); biases and other vectors are averaged,
    as the notes define the method on weight matrices only. The method is not symmetric in A and
    B, and the notes' final formula equals :math:`W_B + (2\lambda - 1)(\tau_\text{proj} - D/2)`.

    Args:
        model_a: module or state dict of model A.
        model_b: module or state dict of model B, of the same architecture.
        rank: r for every selected weight.
        include: names or predicate of the parameters to merge. Default: all floating tensors.
        epsilon: entropic regularisation of GW (:func:`rgsp_tefm_matrix`). Default: 0.1.
        beta: the TOS temperature (:func:`rgsp_tefm_matrix`). Default: 1.
        eps: the TFI denominator's ε (:func:`rgsp_tefm_matrix`). Default: 1e-8.
        return_info: also return ``{name: info}`` of every merged weight. Default: ``False``.

    Returns:
        ``{name: merged tensor}`` (and the per-weight info).
    """
    names, (state_a, state_b), _ = prepare([model_a, model_b], include)
    check_rank(rank, [n for n in names if is_matrix(state_a[n])], state_a)
    merged, infos = {}, {}
    for name in names:
        a, b = state_a[name], state_b[name]
        if not is_matrix(a):
            merged[name] = 0.5 * (a + b)
            continue
        value, info = rgsp_tefm_matrix(
            as_matrix(a), as_matrix(b), rank, epsilon=epsilon, beta=beta, eps=eps
        )
        merged[name], infos[name] = value.reshape(a.shape), info
    return (merged, infos) if return_info else merged
