r"""Causal linear attention read as a recurrence: additive (Hebbian) and delta-rule state updates.

Both updates keep a state :math:`Z \in \mathbb{R}^{N \times D}` (key dimension by value dimension) per
leading index and read it with the query, :math:`o_t = Z^\top q_t`. Each comes in three execution forms
with equal outputs: ``"parallel"`` (one masked :math:`T \times T` product), ``"chunked"`` (a masked
product inside chunks of ``chunk_size`` tokens plus a state carried between chunks; memory
:math:`O(T \cdot C)` for the scores and one state at a time) and ``"recurrent"`` (one token at a
time). All three accept an initial state and can return the final one, so a long sequence can be fed in
segments and a generator can switch from the chunked to the recurrent form.

Sizes: ``T`` tokens, ``N`` key (and query) features, ``D`` value features, ``C`` the chunk size. The
leading dimensions of ``q``, ``k``, ``v`` (and ``beta``, ``log_decay``, ``state``) broadcast against one
another, so one value sequence can serve several heads.
"""

from __future__ import annotations

import torch

__all__ = ["MODES", "causal_linear_attention", "delta_rule"]

MODES = ("parallel", "chunked", "recurrent")


def _check(q, k, v, mode, chunk_size, state, extra=None):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2:
        raise ValueError("q, k and v need at least two dimensions (..., T, features)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share their last dimension, got {q.shape[-1]} and {k.shape[-1]}"
        )
    if not q.shape[-2] == k.shape[-2] == v.shape[-2]:
        raise ValueError(
            f"q, k and v must have the same length T, got {q.shape[-2]}, {k.shape[-2]}, {v.shape[-2]}"
        )
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if extra is not None:
        name, tensor = extra
        if tensor.shape[-1:] != q.shape[-2:-1]:
            raise ValueError(f"{name} must have shape (..., T) with T = {q.shape[-2]}")
        lead = torch.broadcast_shapes(lead, tensor.shape[:-1])
    size = (k.shape[-1], v.shape[-1])
    if state is not None:
        if tuple(state.shape[-2:]) != size:
            raise ValueError(f"state must have shape (..., N, D) = (..., {size[0]}, {size[1]})")
        lead = torch.broadcast_shapes(lead, state.shape[:-2])
    return lead, size


def _zero_state(q, k, v, lead, size):
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return torch.zeros(*lead, *size, dtype=dtype, device=q.device)


def _split(chunk_size: int, *tensors: torch.Tensor):
    # torch.split rather than slicing: its backward concatenates the chunks' gradients once, where
    # each slice's backward would write into a zero tensor of the full length (quadratic in T)
    return [tensor.split(chunk_size, dim=-2) if tensor.shape[-2] else () for tensor in tensors]


def _hebbian_chunk(q, k, v, state, log_decay, strict):
    # Inside a chunk of L tokens: o_i = sum_{j<i} lambda^(i-j) (q_i . k_j) v_j + lambda^(i+1) Z^T q_i
    # (j <= i when not strict), then Z <- lambda^L Z + sum_j lambda^(L-1-j) k_j v_j^T.
    length = q.shape[-2]
    scores = q @ k.transpose(-1, -2)
    mask = torch.ones(length, length, dtype=torch.bool, device=q.device)
    mask = torch.tril(mask, diagonal=-1 if strict else 0)
    if log_decay is None:
        scores = scores.masked_fill(~mask, 0.0)
        inter = q @ state
        new_state = state + k.transpose(-1, -2) @ v
    else:
        steps = torch.arange(length, device=q.device, dtype=scores.dtype)
        lag = (steps[:, None] - steps[None, :]).clamp(min=0)
        ld = log_decay[..., None, None]
        scores = torch.where(mask, scores * torch.exp(ld * lag), 0.0)
        inter = (q * torch.exp(ld * (steps[:, None] + 1))) @ state
        carry = torch.exp(ld * (length - 1 - steps)[:, None])
        new_state = torch.exp(ld * length) * state + (k * carry).transpose(-1, -2) @ v
    return scores @ v + inter, new_state


def causal_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    log_decay: torch.Tensor | None = None,
    strict: bool = False,
    mode: str = "chunked",
    chunk_size: int = 64,
    state: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Causal linear attention without normaliser, with an optional per-head exponential decay.

    .. math::

        o_t = \sum_{s < t} \lambda^{t-s} (q_t^\top k_s)\, v_s
        \quad\Longleftrightarrow\quad
        Z_t = \lambda Z_{t-1} + k_t v_t^\top,\quad o_t = \lambda Z_{t-1}^\top q_t,

    with :math:`s \le t` and :math:`o_t = Z_t^\top q_t` when ``strict=False``. With :math:`\lambda = 1`
    this is the BDH-GPU attention (Kosowski et al. 2025, "The Dragon Hatchling", the masked product
    :math:`(QK^\top)` ``.tril(-1)`` :math:`V`) and the linear transformer of Katharopoulos et al. 2020
    ("Transformers are RNNs", eq. 16-18) without its denominator.

    Args:
        q: queries, ``(..., T, N)``.
        k: keys, ``(..., T, N)``.
        v: values, ``(..., T, D)``.
        log_decay: :math:`\log\lambda \le 0`, broadcastable to the leading dimensions (e.g. ``(H,)``
            for heads in the last leading dimension). Default: ``None`` (no decay, :math:`\lambda=1`).
        strict: if ``True`` a token does not see itself (the BDH mask). Default: ``False``.
        mode: ``"parallel"``, ``"chunked"`` or ``"recurrent"``. Default: ``"chunked"``.
        chunk_size: tokens per chunk in ``"chunked"`` mode; any ``T`` is accepted. Default: 64.
        state: initial state :math:`Z`, ``(..., N, D)``, the state after the tokens before this
            sequence. Default: ``None`` (zeros).
        return_state: also return the state after the last token. Default: ``False``.

    Shape:
        - Output: ``(..., T, D)`` with the broadcast leading dimensions; state ``(..., N, D)``.

    Examples::

        >>> q = k = torch.relu(torch.randn(2, 4, 100, 32))
        >>> v = torch.randn(2, 1, 100, 16)
        >>> out = causal_linear_attention(q, k, v, strict=True, chunk_size=32)
        >>> out.shape
        torch.Size([2, 4, 100, 16])
    """
    lead, size = _check(q, k, v, mode, chunk_size, state)
    if log_decay is not None:
        torch.broadcast_shapes(lead, log_decay.shape)
    if state is None:
        state = _zero_state(q, k, v, lead, size)
    length = q.shape[-2]
    if mode == "recurrent":
        decay = None if log_decay is None else torch.exp(log_decay)[..., None, None]
        outputs = []
        for qt, kt, vt in zip(*_split(1, q, k, v)):
            previous = state if decay is None else decay * state
            # one fused pass over the N x D state: previous + k_t v_t^T by broadcasting
            state = torch.addcmul(previous, kt.transpose(-1, -2), vt)
            outputs.append(qt @ (previous if strict else state))
        out = torch.cat(outputs, dim=-2) if outputs else q.new_zeros(*lead, 0, size[1])
    else:
        step = max(length, 1) if mode == "parallel" else chunk_size
        outputs = []
        for qc, kc, vc in zip(*_split(step, q, k, v)):
            o, state = _hebbian_chunk(qc, kc, vc, state, log_decay, strict)
            outputs.append(o.expand(*lead, qc.shape[-2], size[1]))
        out = torch.cat(outputs, dim=-2) if outputs else q.new_zeros(*lead, 0, size[1])
    return (out, state) if return_state else out


def _delta_chunk(q, k, v, beta, state, strict):
    # WY representation (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
    # Sequence Length", eq. 7-11): the product of the L Householder-like factors (I - b_i k_i k_i^T) is
    # I - sum_i k_i w_i^T and the accumulated writes are sum_i k_i u_i^T, with W, U the solutions of
    # (I + tril(diag(b) K K^T, -1)) [W, U] = [diag(b) K, diag(b) V].
    length = q.shape[-2]
    lead = torch.broadcast_shapes(k.shape[:-2], v.shape[:-2], beta.shape[:-1], state.shape[:-2])
    kk = k @ k.transpose(-1, -2)
    eye = torch.eye(length, dtype=kk.dtype, device=kk.device)
    system = eye + torch.tril(beta[..., :, None] * kk, diagonal=-1)
    system = system.expand(*lead, length, length)
    bk = (beta[..., :, None] * k).expand(*lead, length, k.shape[-1])
    bv = (beta[..., :, None] * v).expand(*lead, length, v.shape[-1])
    w = torch.linalg.solve_triangular(system, bk, upper=False, unitriangular=True)
    u = torch.linalg.solve_triangular(system, bv, upper=False, unitriangular=True)
    corrected = u - w @ state  # rows: u_i - Z_0^T w_i, what each token writes on top of Z_0
    scores = torch.tril(q @ k.transpose(-1, -2), diagonal=-1 if strict else 0)
    out = q @ state + scores @ corrected
    return out, state + k.transpose(-1, -2) @ corrected


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    strict: bool = False,
    mode: str = "chunked",
    chunk_size: int = 64,
    state: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Causal attention with the error-driven (delta-rule) state update of DeltaNet.

    The state is corrected towards the new value by the error of its own prediction:

    .. math::

        Z_t = Z_{t-1} + \beta_t\, k_t \bigl(v_t - Z_{t-1}^\top k_t\bigr)^\top
            = (I - \beta_t k_t k_t^\top) Z_{t-1} + \beta_t k_t v_t^\top,
        \qquad o_t = Z_t^\top q_t

    (:math:`o_t = Z_{t-1}^\top q_t` when ``strict``). Schlag et al. 2021 ("Linear Transformers Are
    Secretly Fast Weight Programmers", eq. 23-26); the ``"chunked"`` and ``"parallel"`` forms use the
    WY representation of Yang et al. 2024 (eq. 7-11), ``"parallel"`` being one chunk of length ``T``.
    The update contracts the state when :math:`0 < \beta_t \|k_t\|^2 \le 2`, hence the usual
    :math:`\ell_2`-normalised keys and :math:`\beta_t \in (0, 1)`; the function does not normalise.

    Args:
        q: queries, ``(..., T, N)``.
        k: keys, ``(..., T, N)``.
        v: values, ``(..., T, D)``.
        beta: write strengths, ``(..., T)``.
        strict: if ``True`` a token reads the state before its own write. Default: ``False``.
        mode: ``"parallel"``, ``"chunked"`` or ``"recurrent"``. Default: ``"chunked"``.
        chunk_size: tokens per chunk in ``"chunked"`` mode; any ``T`` is accepted. Default: 64.
        state: initial state, ``(..., N, D)``. Default: ``None`` (zeros).
        return_state: also return the final state. Default: ``False``.

    Shape:
        - Output: ``(..., T, D)`` with the broadcast leading dimensions; state ``(..., N, D)``.

    Examples::

        >>> q = k = torch.nn.functional.normalize(torch.randn(2, 4, 100, 32), dim=-1)
        >>> v, beta = torch.randn(2, 4, 100, 16), torch.rand(2, 4, 100)
        >>> delta_rule(q, k, v, beta, chunk_size=32).shape
        torch.Size([2, 4, 100, 16])
    """
    lead, size = _check(q, k, v, mode, chunk_size, state, extra=("beta", beta))
    if state is None:
        state = _zero_state(q, k, v, lead, size)
    length = q.shape[-2]
    if mode == "recurrent":
        outputs = []
        for qt, kt, vt, bt in zip(*_split(1, q, k, v, beta[..., None])):
            error = vt - kt @ state
            previous = state
            state = torch.addcmul(state, bt * kt.transpose(-1, -2), error)
            outputs.append(qt @ (previous if strict else state))
    else:
        step = max(length, 1) if mode == "parallel" else chunk_size
        outputs = []
        for qc, kc, vc, bc in zip(*_split(step, q, k, v, beta[..., None])):
            o, state = _delta_chunk(qc, kc, vc, bc[..., 0], state, strict)
            outputs.append(o)
    out = torch.cat(outputs, dim=-2) if outputs else q.new_zeros(*lead, 0, size[1])
    return (out, state) if return_state else out
