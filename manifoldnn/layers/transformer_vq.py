r"""Transformer-VQ: causal softmax attention in linear time over vector-quantised keys.

Lingle 2023 ("Transformer-VQ: Linear-Time Transformers via Vector Quantization", ICLR 2024, Sec. 3).
Each key is replaced by its nearest codeword :math:`\hat k_j = c_{z_j}` of a codebook
:math:`C \in \mathbb{R}^{S \times D}`. Keys that share a code share their logit with every query,
so the earlier keys of a query can be grouped by code:

.. math::

    \sum_{j} \exp(q_i^\top \hat k_j)\, v_j = \sum_{s=1}^{S} \exp(q_i^\top c_s)\, U_s,
    \qquad U_s = \sum_{j:\, z_j = s} v_j, \quad N_s = \#\{j : z_j = s\},

and the normaliser is the same sum with :math:`N_s` for :math:`U_s`. The attention is exactly
softmax attention over the quantised keys, computed with a cache of :math:`S` value sums and
counts (the compressive cache) instead of all earlier keys and values. Block form (training):
the sequence is cut into blocks of ``block_size`` tokens; a block attends to its own keys exactly
(causal mask) and to all earlier blocks through the cache, whose state before each block is an
exclusive prefix sum of the blocks' code sums, so that groups of blocks run at once, in
:math:`O(T (S + L) D)` time.
Recurrent form (decoding): one token a step adds its value
to :math:`U_{z_t}`, one to :math:`N_{z_t}`, and reads
:math:`\mathrm{softmax}_s(q_t^\top c_s + \log N_s)` against the means :math:`U_s / N_s`, in
:math:`O(S D)` time and constant memory.
"""

from __future__ import annotations

import math

import torch

from ..validation import (
    check_choice,
    check_in_range,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from ._token_heads import TokenHeads
from .positions import rotary

__all__ = ["TransformerVQAttention", "vector_quantize", "vq_attention"]

MODES = ("block", "recurrent")


def vector_quantize(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Nearest codeword of every vector: :math:`z = \arg\min_s \|x - c_s\|^2` and :math:`c_z`.

    No gradient flows through the assignment; :func:`vq_attention` passes the keys' gradient
    straight through, :math:`\hat k = k + \mathrm{sg}(c_z - k)` (van den Oord et al. 2017).

    Args:
        x: vectors ``(..., T, D)``.
        codebook: ``(..., S, D)``, broadcasting against ``x``'s leading dimensions.

    Returns:
        ``(codes, quantised)``: the codes ``(..., T)`` (int64) and the codewords ``(..., T, D)``.
    """
    with torch.no_grad():
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the minimiser
        scores = x @ codebook.transpose(-1, -2) - 0.5 * codebook.pow(2).sum(-1).unsqueeze(-2)
        codes = scores.argmax(-1)
    return _codewords(codes, codebook)


def _codewords(codes: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, c_z)`` broadcast to the common leading dimensions: the codewords ``(..., T, D)``
    of ``codes (..., T)`` (code ``-1``, no token, reads codeword 0; callers mask it)."""
    lead = torch.broadcast_shapes(codes.shape[:-1], codebook.shape[:-2])
    codes = codes.expand(*lead, codes.shape[-1])
    book = codebook.expand(*lead, *codebook.shape[-2:])
    index = codes.clamp_min(0).unsqueeze(-1).expand(*codes.shape, book.shape[-1])
    return codes, torch.gather(book, -2, index)


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    """The cache's dtype: float32 or wider, so that counts stay exact in half precision."""
    return torch.promote_types(dtype, torch.float32)


def _code_sums(codes, values, num_codes, weights=None):
    """``(sums (..., S, D_v), counts (..., S))`` of the values per code along the second-last
    axis, in the accumulation dtype; ``weights (..., T)`` (0 or 1) leave tokens out."""
    values = values.to(_accumulation(values.dtype))
    ones = torch.ones_like(codes, dtype=values.dtype)
    if weights is not None:
        ones = weights.to(values.dtype).expand_as(codes)
        values = values * ones.unsqueeze(-1)
    sums = values.new_zeros(*values.shape[:-2], num_codes, values.shape[-1])
    sums = sums.scatter_add(-2, codes.unsqueeze(-1).expand_as(values), values)
    counts = values.new_zeros(*codes.shape[:-1], num_codes).scatter_add(-1, codes, ones)
    return sums, counts


def _exclusive_prefix(block_sums, block_counts, count: int):
    """The sums and counts of the blocks before each of the first ``count`` blocks."""
    earlier = max(count - 1, 0)
    sums = torch.cat(
        (torch.zeros_like(block_sums[..., :1, :, :]), block_sums[..., :earlier, :, :]), -3
    )
    counts = torch.cat(
        (torch.zeros_like(block_counts[..., :1, :]), block_counts[..., :earlier, :]), -2
    )
    return sums.cumsum(-3)[..., :count, :, :], counts.cumsum(-2)[..., :count, :]


def _read_cache(query, codebook, sums, counts, scale):
    """softmax_s(q . c_s scale + log N_s) against the means U_s / N_s (codes with N_s = 0 out)."""
    logits = (query @ codebook.transpose(-1, -2)) * scale + counts.log().unsqueeze(-2)
    means = sums / counts.clamp_min(1).unsqueeze(-1)
    return (torch.softmax(logits, dim=-1) @ means).to(query.dtype)


def vq_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    codebook: torch.Tensor,
    *,
    block_size: int = 128,
    mode: str = "block",
    state: tuple[torch.Tensor, ...] | None = None,
    scale: float | None = None,
    window: int = 0,
    theta: float = 10_000.0,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    r"""Causal softmax attention over keys quantised against ``codebook`` (Transformer-VQ).

    .. math::

        o_i = \frac{\sum_{j \le i} \exp(s\, q_i^\top \hat k_j)\, v_j}
        {\sum_{j \le i} \exp(s\, q_i^\top \hat k_j)}, \qquad \hat k_j = c_{z_j},

    equal to :func:`torch.nn.functional.scaled_dot_product_attention` with ``is_causal=True`` on the
    quantised keys, computed in linear time through the compressive cache (module docstring;
    Lingle 2023, Sec. 3). The keys' gradient passes straight through the quantisation from the
    queries of their own block; the cache holds codewords, which carry none.

    With ``window`` :math:`W > 0` the last :math:`W` keys of each query carry rotary positions
    (RoPE, :func:`~manifoldnn.layers.rotary` with base ``theta``) and the older ones do not:

    .. math::

        \ell_{ij} = s\, \mathrm{RoPE}_i(q_i)^\top \mathrm{RoPE}_j(\hat k_j) \ (0 \le i - j < W),
        \qquad \ell_{ij} = s\, q_i^\top \hat k_j \ (i - j \ge W),

    in the place of the Transformer-XL relative terms that Lingle 2023 adds over the current and
    the previous block (its code's ``VQAttention``). Each block then attends exactly to itself and
    to the previous block and through the compressive cache to the blocks before; ``W`` must not
    exceed ``block_size``, and the state also keeps the codes and values of the last
    ``block_size`` tokens.

    Args:
        query: ``(..., T, D)``.
        key: ``(..., T, D)``, quantised here.
        value: ``(..., T, D_v)``.
        codebook: ``(..., S, D)``, broadcasting against the leading dimensions (e.g. ``(H, S, D)``
            for heads in the last leading dimension).
        block_size: tokens a block in ``"block"`` mode; any ``T`` is accepted (the last block
            may be shorter). Default: ``128``.
        mode: ``"block"`` (parallel over blocks) or ``"recurrent"`` (one token at a time).
            Default: ``"block"``.
        state: the compressive cache after the tokens before this sequence, ``(value sums
            (..., S, D_v), counts (..., S))`` in float32 or wider, as returned; with ``window``
            also ``(codes (..., block_size), values (..., block_size, D_v))`` of the last
            ``block_size`` tokens (code ``-1``: no token). Default: ``None`` (no earlier token).
        scale: logit scale :math:`s`. Default: ``None`` (:math:`1/\sqrt{D}`).
        window: :math:`W`, the recent keys with rotary positions; ``0`` for none. Default: ``0``.
        theta: base of the rotary frequencies. Default: ``10000``.

    Returns:
        ``(output (..., T, D_v), state)``, the state after the last token.

    Examples::

        >>> q, k, v = torch.randn(3, 2, 4, 100, 16).unbind(0)
        >>> out, (sums, counts) = vq_attention(q, k, v, torch.randn(4, 32, 16), block_size=25)
        >>> out.shape, sums.shape, counts.shape
        (torch.Size([2, 4, 100, 16]), torch.Size([2, 4, 32, 16]), torch.Size([2, 4, 32]))
    """
    check_positive_int(block_size, "block_size")
    check_choice(mode, "mode", MODES)
    _check_window(window, block_size, query.shape[-1])
    if query.dim() < 2 or key.shape != query.shape or value.shape[:-1] != query.shape[:-1]:
        raise ValueError(
            f"query and key must have shape (..., T, D) and value (..., T, D_v), got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if codebook.dim() < 2 or codebook.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"codebook must have shape (..., S, {query.shape[-1]}), got {tuple(codebook.shape)}"
        )
    scale = (
        1 / math.sqrt(query.shape[-1]) if scale is None else check_positive_float(scale, "scale")
    )
    codes, quantised = vector_quantize(key, codebook)
    return _quantised_attention(
        query, key, quantised, value, codes, codebook, block_size, mode, state, scale, window,
        theta,
    )  # fmt: skip


def _check_window(window: int, block_size: int, head_size: int) -> None:
    """``window`` must be an int in ``[0, block_size]``; with positions, ``head_size`` even."""
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= block_size:
        raise ValueError(f"window must be an int in [0, block_size={block_size}], got {window!r}")
    if window and head_size % 2:
        raise ValueError(f"window needs an even head size (RoPE rotates pairs), got {head_size}")


def _state_shapes(lead, num_codes, value_size, block_size, window) -> dict[str, tuple]:
    """The shapes of the state of :func:`vq_attention`, by name."""
    shapes = {"value sums": (*lead, num_codes, value_size), "counts": (*lead, num_codes)}
    if window:
        shapes |= {"codes": (*lead, block_size), "values": (*lead, block_size, value_size)}
    return shapes


def _quantised_attention(
    query, key, quantised, value, codes, codebook, block_size, mode, state, scale, window=0,
    theta=10_000.0,
):  # fmt: skip
    keys = key + (quantised - key).detach()  # straight-through
    lead = torch.broadcast_shapes(
        query.shape[:-2], keys.shape[:-2], value.shape[:-2], codebook.shape[:-2]
    )
    num_codes, length = codebook.shape[-2], query.shape[-2]
    shapes = _state_shapes(lead, num_codes, value.shape[-1], block_size, window)
    if state is None:
        accumulation = _accumulation(value.dtype)
        state = (
            value.new_zeros(*lead, num_codes, value.shape[-1], dtype=accumulation),
            value.new_zeros(*lead, num_codes, dtype=accumulation),
        )
        if window:
            state += (
                torch.full((*lead, block_size), -1, dtype=torch.long, device=value.device),
                value.new_zeros(*lead, block_size, value.shape[-1]),
            )
    elif not (
        isinstance(state, tuple)
        and len(state) == len(shapes)
        and all(tuple(t.shape) == shape for t, shape in zip(state, shapes.values()))
    ):
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"state must be ({described}) for these inputs and codebook")
    query, keys, value = (t.expand(*lead, *t.shape[-2:]) for t in (query, keys, value))
    codes = codes.expand(*lead, length)
    tokens = (query, keys, value, codes)
    if window and mode == "recurrent":
        return _windowed_recurrent(*tokens, state, codebook, block_size, scale, window, theta)
    if window:  # a block reads its own keys and the previous block's: L (S + 2 L) logits
        group = _group_tokens(block_size, num_codes + 2 * block_size)
        return _in_groups(
            _windowed_blocks, *tokens, state, group, codebook, block_size, scale, window, theta
        )
    sums, counts = state
    if mode == "recurrent":
        outputs = []
        for t in range(length):
            step_sums, step_counts = _code_sums(
                codes[..., t : t + 1], value[..., t : t + 1, :], num_codes
            )
            sums, counts = sums + step_sums, counts + step_counts
            outputs.append(_read_cache(query[..., t : t + 1, :], codebook, sums, counts, scale))
        out = torch.cat(outputs, -2) if outputs else value.new_zeros(*lead, 0, value.shape[-1])
        return out, (sums, counts)
    size = min(block_size, max(length, 1))
    group = _group_tokens(size, num_codes + size)  # a block's logits: L (S + L)
    return _in_groups(_vq_block_group, *tokens, state, group, codebook, size, scale)


#: logits a group of blocks of :func:`vq_attention` holds at once per head
_GROUP_LOGITS = 2**18


def _group_tokens(block_size: int, keys_per_query: int) -> int:
    """Tokens of a group: whole blocks, as many as keep their logits within ``_GROUP_LOGITS``."""
    return block_size * max(1, _GROUP_LOGITS // (block_size * keys_per_query))


def _in_groups(block_form, query, keys, value, codes, state, group, *args):
    """A block form over consecutive groups of ``group`` tokens, one after another, the state
    carried from group to group (bounded memory, few steps); within a group all its blocks at
    once. torch.split rather than slicing: one concatenation of the groups' gradients in
    backward."""
    outputs = []
    pieces = (t.split(group, dim=-2) for t in (query, keys, value, codes.unsqueeze(-1)))
    for q, k, v, z in zip(*pieces):
        out, state = block_form(q, k, v, z.squeeze(-1), state, *args)
        outputs.append(out)
    out = torch.cat(outputs, -2) if outputs else value.new_zeros(*query.shape[:-1], value.shape[-1])
    return out, state


def _vq_block_group(query, keys, value, codes, state, codebook, size, scale):
    # The blocks of a group at once (the scan of Lingle 2023, Sec. 3.2): the cache a block reads
    # is the state before the group plus the code sums of the group's earlier blocks, an
    # exclusive prefix sum over blocks. Each block takes one softmax over the S codes (logit
    # q.c_s + log N_s, value U_s / N_s) and its own keys (causal), with a shared shift.
    sums, counts = state
    num_codes, length = codebook.shape[-2], query.shape[-2]
    blocks = -(-length // size)
    pad = blocks * size - length
    valid = None
    if pad:  # padding at the end: no code counts it
        valid = torch.arange(blocks * size, device=query.device) < length
        query, keys, value = (
            torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (query, keys, value)
        )
        codes = torch.nn.functional.pad(codes, (0, pad))
        valid = valid.unflatten(-1, (blocks, size))
    q, k, v = (t.unflatten(-2, (blocks, size)) for t in (query, keys, value))
    # the per-block code sums by scatter (O(T D_v)), then their exclusive prefix sums
    block_sums, block_counts = _code_sums(codes.unflatten(-1, (blocks, size)), v, num_codes, valid)
    before_sums, before_counts = _exclusive_prefix(block_sums, block_counts, blocks)
    cache_sums = sums.unsqueeze(-3) + before_sums
    cache_counts = counts.unsqueeze(-2) + before_counts
    causal = torch.ones(size, size, dtype=torch.bool, device=query.device).tril()
    local = ((q @ k.transpose(-1, -2)) * scale).masked_fill(~causal, -math.inf)
    book = codebook.unsqueeze(-3)
    out = _attend_cache_and_recent(q, book, cache_sums, cache_counts, local, v, scale)
    out = out.to(value.dtype).flatten(-3, -2)[..., :length, :]
    return out, (sums + block_sums.sum(-3), counts + block_counts.sum(-2))


def _window_logits(query, keys, query_start, scale, window, theta):
    """``(content, distance-selected)`` logits of queries at positions ``query_start + i``
    against recent keys at positions ``j``: rotary within ``window``, content beyond."""
    content = (query @ keys.transpose(-1, -2)) * scale
    rotated = (rotary(query, query_start, theta) @ rotary(keys, 0, theta).transpose(-1, -2)) * scale
    i = torch.arange(query.shape[-2], device=query.device)[:, None] + query_start
    distance = i - torch.arange(keys.shape[-2], device=query.device)[None, :]
    logits = torch.where(distance < window, rotated, content)
    return logits.masked_fill(distance < 0, -math.inf)


def _attend_cache_and_recent(query, codebook, sums, counts, recent_logits, recent_values, scale):
    """One softmax over the codes of the compressive cache (logit ``q.c_s + log N_s``, value the
    mean ``U_s / N_s``; codes not yet seen: ``log 0 = -inf``) and the recent keys (their logits
    given), with one shift."""
    logits = (query @ codebook.transpose(-1, -2)) * scale + counts.log().unsqueeze(-2)
    shift = torch.maximum(logits.amax(-1), recent_logits.amax(-1)).detach().unsqueeze(-1)
    codes_weights, recent_weights = (logits - shift).exp(), (recent_logits - shift).exp()
    means = sums / counts.clamp_min(1).unsqueeze(-1)
    numerator = codes_weights @ means + recent_weights @ recent_values.to(recent_weights.dtype)
    return numerator / (codes_weights.sum(-1) + recent_weights.sum(-1)).unsqueeze(-1)


def _windowed_blocks(query, keys, value, codes, state, codebook, block_size, scale, window, theta):
    # The state's last block_size tokens are block -1; block b attends exactly to blocks b - 1 and
    # b (positions 0 .. 2L - 1, the queries at L .. 2L - 1) and through the cache to the blocks
    # before b - 1 (an exclusive prefix sum of the blocks' code sums).
    sums, counts, recent_codes, recent_values = state
    num_codes, length, size = codebook.shape[-2], query.shape[-2], block_size
    blocks = -(-length // size)
    pad = blocks * size - length
    pad_codes = torch.full_like(codes[..., :1], -1).expand(*codes.shape[:-1], pad)
    all_codes = torch.cat((recent_codes, codes, pad_codes), -1)  # (..., (blocks + 1) L)
    valid = all_codes >= 0
    _, recent_keys = _codewords(recent_codes, codebook)
    pad_rows = torch.nn.functional.pad
    all_keys = torch.cat((recent_keys.to(keys.dtype), pad_rows(keys, (0, 0, 0, pad))), -2)
    all_values = torch.cat((recent_values.to(value.dtype), pad_rows(value, (0, 0, 0, pad))), -2)
    k, v = (t.unflatten(-2, (blocks + 1, size)) for t in (all_keys, all_values))
    block_codes = all_codes.clamp_min(0).unflatten(-1, (blocks + 1, size))
    block_valid = valid.unflatten(-1, (blocks + 1, size))
    block_sums, block_counts = _code_sums(block_codes, v, num_codes, block_valid)
    # block b (block b + 1 here, after the state's) reads the blocks before block b - 1
    before_sums, before_counts = _exclusive_prefix(block_sums, block_counts, blocks)
    cache_sums, cache_counts = (
        sums.unsqueeze(-3) + before_sums,
        counts.unsqueeze(-2) + before_counts,
    )
    q = pad_rows(query, (0, 0, 0, pad)).unflatten(-2, (blocks, size))
    recent_k = torch.cat((k[..., :-1, :, :], k[..., 1:, :, :]), -2)  # (..., blocks, 2L, D)
    recent_v = torch.cat((v[..., :-1, :, :], v[..., 1:, :, :]), -2)
    recent_valid = torch.cat((block_valid[..., :-1, :], block_valid[..., 1:, :]), -1)
    logits = _window_logits(q, recent_k, size, scale, window, theta)
    logits = logits.masked_fill(~recent_valid.unsqueeze(-2), -math.inf)
    book = codebook.unsqueeze(-3)
    out = _attend_cache_and_recent(q, book, cache_sums, cache_counts, logits, recent_v, scale)
    out = out.to(value.dtype).flatten(-3, -2)[..., :length, :]
    # the new state: the last L tokens kept exactly, every token before them in the cache
    older = valid & (torch.arange(all_codes.shape[-1], device=query.device) < length)
    older_sums, older_counts = _code_sums(all_codes.clamp_min(0), all_values, num_codes, older)
    new_sums, new_counts = sums + older_sums, counts + older_counts
    keep = slice(length, length + size)
    return out, (new_sums, new_counts, all_codes[..., keep], all_values[..., keep, :])


def _windowed_recurrent(query, keys, value, codes, state, codebook, block_size, scale, window,
                        theta):  # fmt: skip
    # one token at a time: the token leaving the last block_size joins the cache, the new one
    # joins the recent tokens (positions 0 .. L - 1, the query at L - 1)
    sums, counts, recent_codes, recent_values = state
    num_codes = codebook.shape[-2]
    outputs = []
    for t in range(query.shape[-2]):
        leaving, leaving_value = recent_codes[..., :1], recent_values[..., :1, :]
        step_sums, step_counts = _code_sums(
            leaving.clamp_min(0), leaving_value, num_codes, leaving >= 0
        )
        sums, counts = sums + step_sums, counts + step_counts
        recent_codes = torch.cat((recent_codes[..., 1:], codes[..., t : t + 1]), -1)
        recent_values = torch.cat((recent_values[..., 1:, :], value[..., t : t + 1, :]), -2)
        _, recent_keys = _codewords(recent_codes, codebook)
        q = query[..., t : t + 1, :]
        logits = _window_logits(q, recent_keys.to(q.dtype), block_size - 1, scale, window, theta)
        logits = logits.masked_fill(~(recent_codes >= 0).unsqueeze(-2), -math.inf)
        outputs.append(
            _attend_cache_and_recent(q, codebook, sums, counts, logits, recent_values, scale)
        )
    out = torch.cat(outputs, -2) if outputs else value.new_zeros(*query.shape[:-1], value.shape[-1])
    return out.to(value.dtype), (sums, counts, recent_codes, recent_values)


class TransformerVQAttention(TokenHeads):
    r"""Causal multi-head self-attention with vector-quantised keys, in linear time (Transformer-VQ).

    Queries, keys and values come from one linear map of the tokens; each head quantises its keys
    against its own codebook of ``codebook_size`` codewords and runs :func:`vq_attention` (block
    form for sequences, the recurrent form for one token with a cache). The codebooks are buffers
    learned by exponential-moving-average k-means (van den Oord et al. 2017, Appendix A.1; the
    update of Lingle 2023, Sec. 3.3): in training mode every forward moves

    .. math::

        N_s \leftarrow \gamma N_s + (1 - \gamma) n_s, \quad
        M_s \leftarrow \gamma M_s + (1 - \gamma) \sum_{j: z_j = s} k_j, \quad c_s = M_s / N_s,

    after the attention is computed. The keys learn through the straight-through estimator and
    the commitment loss :math:`\beta\, \overline{\|k_j - \mathrm{sg}(c_{z_j})\|^2}`, left in
    ``commitment_loss`` after each forward for the training loop to add to its loss. With
    ``position="rope"`` the last ``window`` keys of each query carry rotary positions
    (:func:`vq_attention`'s ``window``); with ``"none"`` the layer has no position information
    of its own.

    Args:
        dim: token width.
        num_heads: H.
        head_size: per-head width D. Default: ``None`` (``dim // num_heads``).
        codebook_size: S, codewords per head. Default: ``256``.
        block_size: tokens a block of the block form. Default: ``128``.
        commitment: :math:`\beta`, weight of the commitment loss. Default: ``1e-4``.
        decay: :math:`\gamma` of the moving averages, in ``[0, 1)``. Default: ``0.99``.
        position: ``"none"`` or ``"rope"`` (rotary positions over the last ``window`` keys).
            Default: ``"none"``.
        window: the keys of a query with rotary positions, at most ``block_size``; only with
            ``position="rope"``. Default: ``None`` (``block_size``).
        theta: base of the rotary frequencies. Default: ``10000``.
        bias: biases in the linear maps. Default: ``False``.
        device: of the parameters and buffers. Default: PyTorch's default.
        dtype: of the parameters and buffers. Default: PyTorch's default.

    Shape:
        ``x (B, T, dim)`` or ``(T, dim)`` -> output of the same shape, and the cache
        ``(value sums (B, H, S, D), counts (B, H, S))`` after the last token (``B = 1`` unbatched;
        with ``position="rope"`` also the codes ``(B, H, block_size)`` and values
        ``(B, H, block_size, D)`` of the last ``block_size`` tokens).
        Pass it back as ``cache`` to continue the sequence: feeding tokens one at a time with the
        cache equals feeding the whole sequence.

    Examples::

        >>> layer = TransformerVQAttention(64, num_heads=4, codebook_size=32, block_size=16)
        >>> y, cache = layer(torch.randn(2, 100, 64))
        >>> y_next, cache = layer(torch.randn(2, 1, 64), cache)
        >>> y.shape, y_next.shape, cache[0].shape
        (torch.Size([2, 100, 64]), torch.Size([2, 1, 64]), torch.Size([2, 4, 32, 16]))
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_size: int | None = None,
        *,
        codebook_size: int = 256,
        block_size: int = 128,
        commitment: float = 1e-4,
        decay: float = 0.99,
        position: str = "none",
        window: int | None = None,
        theta: float = 10_000.0,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, num_heads, head_size, bias=bias, device=device, dtype=dtype)
        check_positive_int(codebook_size, "codebook_size")
        check_positive_int(block_size, "block_size")
        check_choice(position, "position", ("none", "rope"))
        if position == "none" and window is not None:
            raise ValueError("window belongs to position='rope'")
        window = 0 if position == "none" else block_size if window is None else window
        _check_window(window, block_size, self.head_size)
        if window == 0 and position == "rope":
            raise ValueError("window must be positive with position='rope'")
        self.position, self.window = position, window
        self.theta = check_positive_float(theta, "theta")
        check_nonnegative_float(commitment, "commitment")
        check_in_range(decay, "decay", 0.0, 1.0, high_open=True)
        self.codebook_size, self.block_size = codebook_size, block_size
        self.commitment, self.decay = commitment, decay
        codebook = torch.randn(num_heads, codebook_size, self.head_size, device=device, dtype=dtype)
        self.register_buffer("codebook", codebook)
        # moving averages as if every codeword had been assigned its own value once
        self.register_buffer(
            "ema_count", torch.ones(num_heads, codebook_size, device=device, dtype=dtype)
        )
        self.register_buffer("ema_sum", codebook.clone())
        self.commitment_loss = torch.zeros((), device=device, dtype=dtype)

    def attend(self, q, k, v, cache):
        batch, heads, length, size = q.shape
        if cache is not None:
            lead = (batch, heads)
            self.check_cache(
                cache, _state_shapes(lead, self.codebook_size, size, self.block_size, self.window)
            )
        # a copy: the moving-average update below writes the buffer in place
        codebook = self.codebook.clone() if self.training else self.codebook
        mode = "recurrent" if length == 1 else "block"
        codes, quantised = vector_quantize(k, codebook)
        out, cache = _quantised_attention(
            q, k, quantised, v, codes, codebook, self.block_size, mode, cache, size**-0.5,
            self.window, self.theta,
        )  # fmt: skip
        self.commitment_loss = self.commitment * (k - quantised).pow(2).sum(-1).mean()
        if self.training:
            self._update_codebook(codes, k)
        return out, cache

    @torch.no_grad()
    def _update_codebook(self, codes: torch.Tensor, keys: torch.Tensor) -> None:
        heads = self.num_heads
        codes = codes.transpose(0, 1).reshape(heads, -1)
        keys = keys.detach().transpose(0, 1).reshape(heads, -1, self.head_size)
        sums, counts = _code_sums(codes, keys.to(self.ema_sum.dtype), self.codebook_size)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        tiny = torch.finfo(self.ema_count.dtype).tiny
        self.codebook.copy_(self.ema_sum / self.ema_count.clamp_min(tiny).unsqueeze(-1))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, codebook_size={self.codebook_size}, "
            f"block_size={self.block_size}, commitment={self.commitment}, decay={self.decay}"
            + (f", position='rope', window={self.window}" if self.window else "")
        )
