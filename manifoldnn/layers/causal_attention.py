r"""Causal self-attention for language models, from multi-head to latent attention, with a
key/value cache for decoding.

:class:`CausalSelfAttention` covers multi-head (MHA), grouped-query (GQA) and multi-query (MQA)
attention by ``num_kv_heads``; :class:`MultiHeadLatentAttention` is DeepSeek-V2's multi-head latent
attention (MLA). Both take ``forward(x, cache=None) -> (y, cache)``: without a cache the whole
sequence is read causally; with an :class:`AttentionCache` from :meth:`empty_cache` the new tokens
are appended to it and attend to everything it holds, so reading a prompt and then one token at a
time gives the outputs of one full forward. Per token and layer the cache holds
(:attr:`cache_size_per_token`)

* MHA (``num_kv_heads == num_heads``): :math:`2 n_h d_h` numbers;
* GQA (``num_kv_heads`` = :math:`n_g`): :math:`2 n_g d_h`;
* MQA (``num_kv_heads == 1``): :math:`2 d_h`;
* MLA (``kv_rank`` = :math:`d_c`, ``rope_dim`` = :math:`d_h^R`): :math:`d_c + d_h^R`.

Positions are a :class:`~manifoldnn.layers.Position` (``position="rope"``, ``"alibi"``,
``"none"`` or an instance such as a scaled :class:`~manifoldnn.layers.RotaryPosition`), and the
entropy-invariant scaling :func:`~manifoldnn.layers.entropy_invariant_scale` of the logits is the
independent switch ``log_length_scaling`` (query ``i`` sees ``i + 1`` keys).

Sizes: batch ``B``, tokens ``T``, width ``D`` = ``dim``, ``n_h`` = ``num_heads``, ``n_g`` =
``num_kv_heads``, ``d_h`` = ``head_size``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_bool, check_in_range, check_positive_int, check_positive_ints
from .attention import entropy_invariant_scale
from .positions import Position, position_for

__all__ = ["AttentionCache", "CausalSelfAttention", "MultiHeadLatentAttention"]


class AttentionCache:
    r"""The decoding state of one attention layer: its keys and values, preallocated.

    Each tensor is ``(B, heads, max_length, width)``; the first :attr:`length` positions are
    filled. ``layout`` records the layer configuration that made it, so that a cache is only used
    by a layer of the same configuration. Made by the layers' ``empty_cache``; the layers'
    ``forward`` appends to it in place and returns it.

    Args:
        tensors: the preallocated tensors (for MHA/GQA/MQA keys and values; for MLA one tensor of
            the latents and rotary keys).
        layout: a description of the configuration of the layer that uses it.
        length: positions already filled. Default: ``0``.
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], layout: tuple, length: int = 0) -> None:
        self.tensors, self.layout, self.length = tuple(tensors), layout, length

    @property
    def max_length(self) -> int:
        """Positions the cache has room for."""
        return self.tensors[0].shape[-2]

    @property
    def batch_size(self) -> int:
        return self.tensors[0].shape[0]

    @property
    def numel_per_token(self) -> int:
        """Numbers stored per token (and batch element): ``sum(heads * width)``."""
        return sum(t.shape[1] * t.shape[3] for t in self.tensors)

    def check(self, layout: tuple, batch_size: int, new_tokens: int) -> None:
        """Raise a ``ValueError`` unless ``new_tokens`` more tokens of a batch of ``batch_size``
        from a layer of ``layout`` fit."""
        if layout != self.layout:
            raise ValueError(
                f"cache was made for {self.layout}, not for this layer's {layout} (a cache from "
                "another configuration)"
            )
        if batch_size != self.batch_size:
            raise ValueError(
                f"cache holds a batch of {self.batch_size}, got a batch of {batch_size}"
            )
        if self.length + new_tokens > self.max_length:
            raise ValueError(
                f"the cache has max_length={self.max_length} positions, {self.length} filled: "
                f"{new_tokens} more tokens do not fit (make it with a larger max_length)"
            )

    def append(self, *new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Write ``new`` (``(B, heads, T, width)`` each) after the filled positions; returns the
        filled parts ``(B, heads, length, width)`` including them."""
        start, stop = self.length, self.length + new[0].shape[-2]
        for buffer, tensor in zip(self.tensors, new):
            buffer[:, :, start:stop] = tensor
        self.length = stop
        return tuple(buffer[:, :, :stop] for buffer in self.tensors)

    def __repr__(self) -> str:
        return (
            f"AttentionCache(length={self.length}, max_length={self.max_length}, "
            f"batch_size={self.batch_size}, layout={self.layout})"
        )


# the largest additive bias (H x T_q x T_k entries) materialised at once
_MAX_BIAS_ENTRIES = 2**24


def _causal_attention(q, k, v, *, start, position, dropout_p=0.0, scale=None):
    """SDPA of queries ``(B, H, T_q, E)`` at positions ``start + i`` over keys ``(B, G, T_k, E)``
    at positions ``j``, key ``j`` visible from query ``i`` when ``j <= start + i``, the
    ``position``'s logit bias added. Values ``(B, G, T_k, E_v)``; ``scale`` ``None`` is SDPA's
    ``1 / sqrt(E)``."""
    heads, query_length, width = q.shape[-3:]
    key_length, value_width = k.shape[-2], v.shape[-1]
    if value_width < width:
        # PyTorch's fused CPU kernels need one head width for queries, keys and values (the math
        # fallback is an order of magnitude slower): zero-pad the values, drop the padding after
        v = F.pad(v, (0, width - value_width))
    block = query_length
    if position.has_logit_bias and heads * query_length * key_length > _MAX_BIAS_ENTRIES:
        # an additive bias is materialised per head: read long sequences in blocks of queries
        block = max(1, _MAX_BIAS_ENTRIES // (heads * key_length))
    outputs = []
    for i in range(0, max(query_length, 1), block):
        bias = position.logit_bias(
            min(block, query_length - i), key_length, start + i, device=q.device, dtype=q.dtype
        )
        outputs.append(
            _attend_block(q[..., i : i + block, :], k, v, start + i, bias, dropout_p, scale)
        )
    y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-2)
    return y[..., :value_width]


def _attend_block(q, k, v, start, bias, dropout_p, scale):
    batch, heads, query_length, width = q.shape
    groups, key_length = k.shape[-3], k.shape[-2]
    mask, is_causal = None, False
    if bias is None and (query_length == 1 or start == 0):
        # one new token sees every key; from position 0, SDPA's own causal mask is exact
        is_causal = query_length > 1
    else:
        rows = torch.arange(start, start + query_length, device=q.device)
        visible = torch.arange(key_length, device=q.device) <= rows[:, None]
        mask = visible if bias is None else bias.masked_fill(~visible, -math.inf)
    if query_length == 1 and groups < heads:
        # one decoding step: the query heads of a group become the query rows of its key/value
        # head, so the shared keys are read once instead of repeated per head (enable_gqa)
        q = q.reshape(batch, groups, heads // groups, width)
        mask = None if mask is None else mask.reshape(groups, heads // groups, key_length)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale
        )
        return y.reshape(batch, heads, 1, -1)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
        enable_gqa=groups != heads,
    )  # fmt: skip


class _CausalAttentionBase(nn.Module):
    """What the two attentions share: the input checks, the positions, the logit scale of the
    queries and the cache checks."""

    def _setup_positions(self, position, rotary_size, num_heads, log_length_scaling, train_length):
        self.position = position_for(position, rotary_size, num_heads)
        self.log_length_scaling = check_bool(log_length_scaling, "log_length_scaling")
        if log_length_scaling:
            if train_length is None:
                raise ValueError(
                    "log_length_scaling=True needs train_length (L_train of log n / log L_train)"
                )
            check_positive_int(train_length, "train_length")
            if train_length < 2:
                raise ValueError(f"train_length must be >= 2, got {train_length}")
        self.train_length = train_length

    def _query_scale(self, length: int, start: int, device, dtype) -> torch.Tensor | float:
        """The multiplier of each query's logits ``(T, 1)`` (or a float): the position's
        :attr:`~manifoldnn.layers.Position.logit_scale` times the entropy-invariant scale."""
        scale = self.position.logit_scale
        if not self.log_length_scaling:
            return scale
        keys = torch.arange(start + 1, start + length + 1, device=device, dtype=torch.float64)
        return (scale * entropy_invariant_scale(keys, self.train_length)).to(dtype)[:, None]

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, T, dim={self.dim}) or (T, dim), got {shape}")
        return x

    def _check_cache(self, cache: AttentionCache | None, batch_size: int, length: int) -> int:
        if cache is None:
            return 0
        if not isinstance(cache, AttentionCache):
            raise ValueError(f"cache must be an AttentionCache or None, got {type(cache).__name__}")
        cache.check(self.cache_layout, batch_size, length)
        return cache.length

    def _new_cache(self, batch_size: int, max_length: int, shapes) -> AttentionCache:
        check_positive_ints(batch_size=batch_size, max_length=max_length)
        weight = next(self.parameters())
        tensors = [
            weight.new_zeros(batch_size, heads, max_length, width) for heads, width in shapes
        ]
        return AttentionCache(tuple(tensors), self.cache_layout)

    def forward(
        self, x: torch.Tensor, cache: AttentionCache | None = None
    ) -> tuple[torch.Tensor, AttentionCache | None]:
        """``(y, cache)``: the causal attention of the tokens ``x``, after those in ``cache``
        (which this call extends in place and returns) when one is given."""
        x = self._check_input(x)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        start = self._check_cache(cache, x.shape[0], x.shape[1])
        y = self._attend(x, cache, start)
        return (y.squeeze(0) if unbatched else y), cache


class CausalSelfAttention(_CausalAttentionBase):
    r"""Causal multi-head, grouped-query or multi-query self-attention with a key/value cache.

    The ``n_h`` query heads are split into ``n_g`` = ``num_kv_heads`` groups that share one key
    and value head each: multi-head attention (Vaswani et al. 2017) for ``n_g = n_h``,
    grouped-query attention (Ainslie et al. 2023, "GQA") for ``1 < n_g < n_h``, multi-query
    attention (Shazeer 2019, "Fast transformer decoding") for ``n_g = 1``:

    .. math::

        o_{t,i} = \sum_{j \le t} \operatorname{softmax}_j\Big(\lambda_t\,
            \frac{q_{t,i}^\top k_{j,g(i)}}{\sqrt{d_h}} + b_{i,tj}\Big)\, v_{j,g(i)},
        \qquad g(i) = \lfloor i\, n_g / n_h \rfloor,

    with the position's rotation of :math:`q, k`, bias :math:`b` and multiplier
    :math:`\lambda_t` (times :math:`\log(t+1)/\log L_{train}` with ``log_length_scaling``),
    computed by :func:`torch.nn.functional.scaled_dot_product_attention` (``enable_gqa``). The
    cache holds :math:`2 n_g d_h` numbers per token (:attr:`cache_size_per_token`).

    Args:
        dim: the width ``D`` of the tokens.
        num_heads: query heads :math:`n_h` (divides ``dim``; ``head_size = dim / num_heads``).
        num_kv_heads: key/value heads :math:`n_g` (divides ``num_heads``). Default: ``None``
            (``num_heads``, multi-head attention).
        position: ``"rope"``, ``"alibi"``, ``"none"`` (``POSITIONS``) or a
            :class:`~manifoldnn.layers.Position` for ``head_size`` and ``num_heads`` (e.g. a
            scaled :class:`~manifoldnn.layers.RotaryPosition`). Default: ``"rope"``.
        log_length_scaling: multiply the logits of query ``t`` by the entropy-invariant
            :math:`\log(t + 1) / \log L_{train}`. Default: ``False``.
        train_length: :math:`L_{train}`, needed by ``log_length_scaling``. Default: ``None``.
        dropout: dropout on the attention weights in training. Default: ``0.0``.
        bias: biases in the input and output maps. Default: ``False``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        - ``x``: ``(B, T, D)`` or unbatched ``(T, D)``; output: the same.

    Examples::

        >>> attention = CausalSelfAttention(64, 8, num_kv_heads=2)
        >>> cache = attention.empty_cache(3, max_length=20)
        >>> y, cache = attention(torch.randn(3, 12, 64), cache)  # the prompt
        >>> y, cache = attention(torch.randn(3, 1, 64), cache)  # one more token
        >>> y.shape, cache.length, attention.cache_size_per_token
        (torch.Size([3, 1, 64]), 13, 32)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        position: str | Position = "rope",
        log_length_scaling: bool = False,
        train_length: int | None = None,
        dropout: float = 0.0,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        check_positive_ints(dim=dim, num_heads=num_heads)
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        check_positive_int(num_kv_heads, "num_kv_heads")
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads={num_heads} must be divisible by num_kv_heads={num_kv_heads} "
                "(each key/value head serves a group of query heads)"
            )
        self.dim, self.num_heads, self.num_kv_heads = dim, num_heads, num_kv_heads
        self.head_size = head_size = dim // num_heads
        self.dropout = check_in_range(dropout, "dropout", 0.0, 1.0, high_open=True)
        self._setup_positions(position, head_size, num_heads, log_length_scaling, train_length)
        # queries, keys and values in one map: [q (n_h d_h) | k (n_g d_h) | v (n_g d_h)]
        self.qkv = nn.Linear(dim, (num_heads + 2 * num_kv_heads) * head_size, bias=bias, **factory)
        self.proj = nn.Linear(num_heads * head_size, dim, bias=bias, **factory)

    @property
    def cache_size_per_token(self) -> int:
        """Numbers cached per token: :math:`2 n_g d_h`."""
        return 2 * self.num_kv_heads * self.head_size

    @property
    def cache_layout(self) -> tuple:
        """The configuration a cache must have been made for."""
        return ("CausalSelfAttention", self.num_kv_heads, self.head_size)

    def empty_cache(self, batch_size: int, max_length: int) -> AttentionCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_length`` tokens."""
        shape = (self.num_kv_heads, self.head_size)
        return self._new_cache(batch_size, max_length, (shape, shape))

    def _attend(self, x, cache, start):
        batch, length, _ = x.shape
        h, g = self.num_heads, self.num_kv_heads
        heads = self.qkv(x).view(batch, length, h + 2 * g, self.head_size).transpose(1, 2)
        q, k, v = heads.split((h, g, g), dim=1)
        q, k = self.position.rotate(q, start), self.position.rotate(k, start)
        scale = self._query_scale(length, start, x.device, q.dtype)
        if not (isinstance(scale, float) and scale == 1.0):
            q = q * scale
        if cache is not None:
            k, v = cache.append(k, v)
        y = _causal_attention(
            q, k, v, start=start, position=self.position,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.proj(y.transpose(1, 2).reshape(batch, length, h * self.head_size))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}"


class MultiHeadLatentAttention(_CausalAttentionBase):
    r"""Multi-head latent attention (MLA; DeepSeek-AI 2024, "DeepSeek-V2", arXiv 2405.04434,
    Sec. 2.1), causal, with a latent cache of ``kv_rank + rope_dim`` numbers per token.

    Keys and values are compressed jointly into a latent :math:`c^{KV}_t` of width
    :math:`d_c` = ``kv_rank``; a rotary key :math:`k^R_t` of width :math:`d_h^R` = ``rope_dim`` is
    shared by the heads, and each query head has its own rotary part:

    .. math::

        c^{KV}_t = W^{DKV} h_t,\quad k^C_t = W^{UK} c^{KV}_t,\quad v^C_t = W^{UV} c^{KV}_t,\quad
        k^R_t = \mathrm{RoPE}(W^{KR} h_t),

        c^Q_t = W^{DQ} h_t,\quad q^C_t = W^{UQ} c^Q_t,\quad q^R_t = \mathrm{RoPE}(W^{QR} c^Q_t),

        o_{t,i} = \sum_{j \le t} \operatorname{softmax}_j\Big(
            \frac{[q^C_{t,i}; q^R_{t,i}]^\top [k^C_{j,i}; k^R_j]}{\sqrt{d_h + d_h^R}}\Big)
            v^C_{j,i},\qquad u_t = W^O [o_{t,1}; \dots; o_{t,n_h}]

    (without ``q_rank`` the queries come from :math:`h_t` directly). As in the released model
    (Sec. 3.1.2: "additional RMS Norm layers after the compressed latent vectors"),
    ``latent_norm`` applies an RMSNorm to :math:`c^{KV}_t` (and to :math:`c^Q_t`) before the
    up-projections; the cache then holds the normalised latent. The cache holds
    :math:`[c^{KV}_t; k^R_t]`, :math:`d_c + d_h^R` numbers per token. With a cache the keys and
    values are never rebuilt from the latent: :math:`W^{UK}` is absorbed into the query,
    :math:`q^C_{t,i}{}^\top W^{UK}_i c_j = (W^{UK}_i{}^\top q^C_{t,i})^\top c_j`, so all heads
    attend to the shared :math:`[c_j; k^R_j]` as in multi-query attention, and :math:`W^{UV}` into
    the output, :math:`o_{t,i} = W^{UV}_i \sum_j p_{t,i,j} c_j` (Sec. 2.1.2).

    Args:
        dim: the width ``D`` of the tokens.
        num_heads: :math:`n_h`.
        kv_rank: :math:`d_c`, the width of the key/value latent.
        rope_dim: :math:`d_h^R`, the width of the rotary parts (even).
        head_size: :math:`d_h`. Default: ``None`` (``dim / num_heads``).
        q_rank: :math:`d_c'`, the width of the query latent; ``None`` maps :math:`h_t` to the
            queries directly. Default: ``None``.
        latent_norm: an RMSNorm (with a gain) on the latents :math:`c^{KV}_t` and
            :math:`c^Q_t`. Default: ``True``.
        position: ``"rope"``, ``"alibi"``, ``"none"`` or a :class:`~manifoldnn.layers.Position`
            for ``rope_dim`` (the rotary part) and ``num_heads``. Default: ``"rope"``.
        log_length_scaling: multiply the logits of query ``t`` by
            :math:`\log(t + 1) / \log L_{train}`. Default: ``False``.
        train_length: :math:`L_{train}`, needed by ``log_length_scaling``. Default: ``None``.
        dropout: dropout on the attention weights in training. Default: ``0.0``.
        bias: biases in the linear maps. Default: ``False``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        - ``x``: ``(B, T, D)`` or unbatched ``(T, D)``; output: the same.

    Examples::

        >>> attention = MultiHeadLatentAttention(64, 8, kv_rank=32, rope_dim=4)
        >>> cache = attention.empty_cache(2, max_length=16)
        >>> y, cache = attention(torch.randn(2, 10, 64), cache)
        >>> y.shape, attention.cache_size_per_token
        (torch.Size([2, 10, 64]), 36)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kv_rank: int,
        rope_dim: int,
        head_size: int | None = None,
        q_rank: int | None = None,
        latent_norm: bool = True,
        position: str | Position = "rope",
        log_length_scaling: bool = False,
        train_length: int | None = None,
        dropout: float = 0.0,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        check_positive_ints(dim=dim, num_heads=num_heads, kv_rank=kv_rank, rope_dim=rope_dim)
        if rope_dim % 2:
            raise ValueError(f"rope_dim must be even (RoPE rotates pairs), got {rope_dim}")
        if head_size is None:
            if dim % num_heads:
                raise ValueError(f"num_heads={num_heads} must divide dim={dim} (or give head_size)")
            head_size = dim // num_heads
        check_positive_int(head_size, "head_size")
        if q_rank is not None:
            check_positive_int(q_rank, "q_rank")
        self.dim, self.num_heads, self.head_size = dim, num_heads, head_size
        self.kv_rank, self.rope_dim, self.q_rank = kv_rank, rope_dim, q_rank
        self.dropout = check_in_range(dropout, "dropout", 0.0, 1.0, high_open=True)
        self._setup_positions(position, rope_dim, num_heads, log_length_scaling, train_length)
        query_width = num_heads * (head_size + rope_dim)
        if q_rank is None:
            self.query = nn.Linear(dim, query_width, bias=bias, **factory)
        else:  # W^DQ, the latent's norm, then [W^UQ; W^QR]
            self.query = nn.Sequential(
                nn.Linear(dim, q_rank, bias=bias, **factory),
                nn.RMSNorm(q_rank, **factory) if latent_norm else nn.Identity(),
                nn.Linear(q_rank, query_width, bias=bias, **factory),
            )
        # [W^DKV; W^KR]: the latent and the rotary key in one map
        self.kv_down = nn.Linear(dim, kv_rank + rope_dim, bias=bias, **factory)
        self.kv_norm = nn.RMSNorm(kv_rank, **factory) if latent_norm else nn.Identity()
        self.key_up = nn.Linear(kv_rank, num_heads * head_size, bias=bias, **factory)
        self.value_up = nn.Linear(kv_rank, num_heads * head_size, bias=bias, **factory)
        self.proj = nn.Linear(num_heads * head_size, dim, bias=bias, **factory)

    @property
    def cache_size_per_token(self) -> int:
        """Numbers cached per token: :math:`d_c + d_h^R`."""
        return self.kv_rank + self.rope_dim

    @property
    def cache_layout(self) -> tuple:
        """The configuration a cache must have been made for."""
        return ("MultiHeadLatentAttention", self.kv_rank, self.rope_dim)

    def empty_cache(self, batch_size: int, max_length: int) -> AttentionCache:
        """An empty latent cache ``[c^KV; k^R]`` for ``batch_size`` sequences of up to
        ``max_length`` tokens."""
        return self._new_cache(batch_size, max_length, ((1, self.kv_rank + self.rope_dim),))

    def _attend(self, x, cache, start):
        batch, length, _ = x.shape
        h, d, r, c = self.num_heads, self.head_size, self.rope_dim, self.kv_rank
        q = self.query(x).view(batch, length, h, d + r).transpose(1, 2)
        q_content, q_rope = q.split((d, r), dim=-1)
        latent, k_rope = self.kv_down(x).unsqueeze(1).split((c, r), dim=-1)  # (B, 1, T, .)
        latent = self.kv_norm(latent)
        q_rope, k_rope = self.position.rotate(q_rope, start), self.position.rotate(k_rope, start)
        scale = self._query_scale(length, start, x.device, q.dtype)
        dropout = self.dropout if self.training else 0.0
        if cache is None:  # training form: keys and values rebuilt from the latent
            k_content = self.key_up(latent).view(batch, 1, length, h, d).squeeze(1).transpose(1, 2)
            v = self.value_up(latent).view(batch, 1, length, h, d).squeeze(1).transpose(1, 2)
            q = torch.cat((q_content, q_rope), -1) * scale
            k = torch.cat((k_content, k_rope.expand(batch, h, length, r)), -1)
            y = _causal_attention(q, k, v, start=start, position=self.position, dropout_p=dropout)
        else:  # absorbed form: attend to the cached [c; k^R] directly
            (entries,) = cache.append(torch.cat((latent, k_rope), -1))
            up_key = self.key_up.weight.view(h, d, c)
            # the key bias adds q^C . b_i, the same for every key j: it cancels in the softmax
            q = torch.cat((torch.einsum("bhtd,hdc->bhtc", q_content, up_key), q_rope), -1) * scale
            # the values are the latents: attend with the whole entries (one head width for the
            # fused kernels) and keep the first kv_rank outputs
            mixed = _causal_attention(
                q, entries, entries, start=start, position=self.position, dropout_p=dropout,
                scale=(d + r) ** -0.5,
            )[..., :c]  # fmt: skip
            y = torch.einsum("bhtc,hdc->bhtd", mixed, self.value_up.weight.view(h, d, c))
            if self.value_up.bias is not None:  # the weights sum to one
                y = y + self.value_up.bias.view(h, 1, d)
        return self.proj(y.transpose(1, 2).reshape(batch, length, h * d))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, head_size={self.head_size}, "
            f"kv_rank={self.kv_rank}, rope_dim={self.rope_dim}, q_rank={self.q_rank}"
        )
