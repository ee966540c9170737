r"""Attention normalised by the length instead of the softmax: squared-ReLU weights (GAU).

Hua et al. 2022 ("Transformer Quality in Linear Time", Sec. 2) replace the softmax of the gated
attention unit by

.. math::

    o_i = \frac{1}{n_i} \sum_{j} \mathrm{relu}\big(q_i^\top k_j / \sqrt D\big)^2\, v_j,

with :math:`n_i` the number of keys the query sees: the sequence length without a mask, as in
the paper, and :math:`i + 1` under the causal mask, so that an output does not depend on how many
tokens come after it (and decoding does not need to know the final length). The weights neither
sum to one nor compete: a query may attend to nothing. The cost stays quadratic (the squared ReLU
of a dot product has no finite positive feature map), and decoding keeps the keys and values.
"""

from __future__ import annotations

import math

import torch

from ._token_heads import TokenHeads

__all__ = ["ReLUSquaredAttention", "relu_squared_attention"]


def relu_squared_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    r"""Squared-ReLU attention normalised by the number of keys seen (module docstring).

    Args:
        query: ``(..., L_q, D)``.
        key: ``(..., L_k, D)``.
        value: ``(..., L_k, D_v)``.
        is_causal: query ``i`` sees keys ``j <= L_k - L_q + i`` (the queries are the last ``L_q``
            positions, as when decoding after ``L_k - L_q`` cached tokens; top-left aligned, as
            SDPA's, when ``L_q = L_k``). Default: ``False``.
        scale: logit scale. Default: ``None`` (:math:`1/\sqrt D`).

    Returns:
        ``(..., L_q, D_v)``.

    Examples::

        >>> q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
        >>> relu_squared_attention(q, k, v, is_causal=True).shape
        torch.Size([2, 4, 10, 8])
    """
    lq, lk = query.shape[-2], key.shape[-2]
    if is_causal and lq > lk:
        raise ValueError(f"is_causal needs L_q <= L_k, got {lq} > {lk}")
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    weights = torch.relu(query @ key.transpose(-1, -2) * scale).square()
    if is_causal:
        visible = torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril(lk - lq)
        weights = weights.masked_fill(~visible, 0.0)
        seen = torch.arange(lk - lq + 1, lk + 1, device=query.device, dtype=weights.dtype)
        return (weights @ value) / seen.unsqueeze(-1)
    return (weights @ value) / lk


class ReLUSquaredAttention(TokenHeads):
    r"""Causal multi-head self-attention with squared-ReLU weights normalised by the length (GAU's
    normalisation, :func:`relu_squared_attention`), the alternative to the softmax of Hua et al.
    2022.

    Args:
        dim: token width.
        num_heads: H.
        head_size: per-head width D. Default: ``None`` (``dim // num_heads``).
        bias: biases in the linear maps. Default: ``False``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        ``x (B, T, dim)`` or ``(T, dim)`` -> output of the same shape, and the cache: the keys
        and values so far, ``((B, H, T', D), (B, H, T', D))``; passing it back continues the
        sequence.

    Examples::

        >>> layer = ReLUSquaredAttention(64, num_heads=4)
        >>> y, cache = layer(torch.randn(2, 10, 64))
        >>> y_next, cache = layer(torch.randn(2, 1, 64), cache)
        >>> cache[0].shape
        torch.Size([2, 4, 11, 16])
    """

    def attend(self, q, k, v, cache):
        if cache is not None:
            batch, heads, _, size = q.shape
            first = cache[0] if isinstance(cache, tuple) and cache else None
            cached = first.shape[-2] if isinstance(first, torch.Tensor) and first.dim() > 1 else -1
            self.check_cache(
                cache,
                {"keys": (batch, heads, cached, size), "values": (batch, heads, cached, size)},
            )
            k, v = torch.cat([cache[0], k], -2), torch.cat([cache[1], v], -2)
        return relu_squared_attention(q, k, v, is_causal=True), (k, v)
