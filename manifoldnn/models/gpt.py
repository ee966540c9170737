r"""A small pre-norm causal Transformer (GPT) with softmax or delta-rule attention, the baselines of BDH.

``attention="softmax"`` uses :func:`torch.nn.functional.scaled_dot_product_attention` (causal) and a
key/value cache for generation; ``attention="delta"`` replaces it with DeltaNet's error-driven linear
attention (:func:`~manifoldnn.models.linear_attention.delta_rule`), a linear-time baseline whose
generation state is constant in the context. Both use RoPE, so no position table bounds the length.

Sizes: ``B`` batch, ``T`` tokens, ``D`` = ``dim``, ``H`` = ``num_heads``, head width ``D / H``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.hyper_connections import RESIDUAL_CONSTRAINTS, HyperConnections, deepnorm_scales
from ..validation import check_bool, check_choice, check_positive_int
from .linear_attention import MODES, delta_rule
from .rope import rotary
from .sequence import (
    AutoregressiveSampling,
    check_generation,
    check_token_ids,
    renamed_config_fields,
)

__all__ = ["GPT", "GPTConfig"]

ATTENTIONS = ("softmax", "delta")
RESIDUALS = ("prenorm", "postnorm", "deepnorm", "hyper")


@renamed_config_fields(n_layer="num_layers", n_embd="dim", n_head="num_heads")
@dataclass
class GPTConfig:
    r"""Hyper-parameters of :class:`GPT`.

    Args:
        vocab_size: token ids. Default: 256.
        num_layers: blocks. Default: 4.
        dim: width ``D``. Default: 128.
        num_heads: heads ``H`` (must divide ``D``; ``D / H`` even). Default: 4.
        mlp_ratio: hidden width of the MLP over ``D``. Default: 4.
        dropout: dropout on the residual branches. Default: 0.0.
        attention: ``"softmax"`` (causal SDPA) or ``"delta"`` (delta rule). Default: ``"softmax"``.
        rope_theta: RoPE base. Default: 10000.
        chunk_size: chunk length of the delta rule's chunked form. Default: 64.
        residual: how each block's two branches join the residual stream: ``"prenorm"``
            (:math:`x + G(\mathrm{LN}(x))`), ``"postnorm"`` (:math:`\mathrm{LN}(x + G(x))`),
            ``"deepnorm"`` (:math:`\mathrm{LN}(\alpha x + G(x))` with DeepNorm's :math:`\alpha`
            and :math:`\beta`-scaled initial weights, :func:`~manifoldnn.layers.deepnorm_scales`)
            or ``"hyper"`` (``num_streams`` streams,
            :class:`~manifoldnn.layers.HyperConnections`). Default: ``"prenorm"``.
        num_streams: residual streams of ``residual="hyper"``. Default: 4.
        hc_constraint: the residual mixing of ``residual="hyper"``: ``None``, ``"sinkhorn"``
            (mHC), ``"birkhoff"`` or ``"orthogonal"``. Default: ``"sinkhorn"``.
        hc_dynamic: input-dependent hyper-connection coefficients. Default: ``True``.
    """

    vocab_size: int = 256
    num_layers: int = 4
    dim: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    attention: str = "softmax"
    rope_theta: float = 10_000.0
    chunk_size: int = 64
    residual: str = "prenorm"
    num_streams: int = 4
    hc_constraint: str | None = "sinkhorn"
    hc_dynamic: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_layers", "dim", "num_heads", "mlp_ratio", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(
                f"num_heads must divide dim into even head widths, got {self.dim}/{self.num_heads}"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_choice(self.residual, "residual", RESIDUALS)
        check_positive_int(self.num_streams, "num_streams")
        check_choice(self.hc_constraint, "hc_constraint", tuple(RESIDUAL_CONSTRAINTS))
        check_bool(self.hc_dynamic, "hc_dynamic")


class _Block(nn.Module):
    def __init__(self, config: GPTConfig, factory: dict, index: int = 0) -> None:
        super().__init__()
        d = config.dim
        self.config = config
        self.norm1 = nn.LayerNorm(d, **factory)
        self.qkv = nn.Linear(d, 3 * d, bias=False, **factory)
        self.beta = (
            nn.Linear(d, config.num_heads, bias=False, **factory)
            if config.attention == "delta"
            else None
        )
        self.proj = nn.Linear(d, d, bias=False, **factory)
        self.norm2 = nn.LayerNorm(d, **factory)
        self.fc = nn.Linear(d, config.mlp_ratio * d, bias=False, **factory)
        self.fc_out = nn.Linear(config.mlp_ratio * d, d, bias=False, **factory)
        self.drop = nn.Dropout(config.dropout)
        self.alpha = deepnorm_scales(config.num_layers)[0] if config.residual == "deepnorm" else 1.0
        if config.residual == "hyper":
            options = {
                "constraint": config.hc_constraint,
                "dynamic": config.hc_dynamic,
                **factory,
            }
            self.hyper_attention = HyperConnections(
                d, config.num_streams, self._attention_branch, layer_index=2 * index, **options
            )
            self.hyper_mlp = HyperConnections(
                d, config.num_streams, self._mlp_branch, layer_index=2 * index + 1, **options
            )

    def _attention_branch(self, x, mode, cache, start):
        attended, cache = self.attend(self.norm1(x), mode, cache, start)
        return self.drop(attended), cache

    def _mlp_branch(self, x):
        return self.drop(self.fc_out(F.gelu(self.fc(self.norm2(x)))))

    def attend(self, x, mode, cache, start):
        config = self.config
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, config.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, start, config.rope_theta), rotary(k, start, config.rope_theta)
        if config.attention == "delta":
            q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
            beta = torch.sigmoid(self.beta(x)).transpose(1, 2)
            y, cache = delta_rule(
                q, k, v, beta, mode=mode, chunk_size=config.chunk_size, state=cache,
                return_state=True,
            )  # fmt: skip
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # preallocated key/value cache: write this step's keys, attend to all positions so far;
            # several tokens at once only from position 0 (the prompt), where the causal mask is exact
            keys, values = cache
            keys[:, :, start : start + length] = k
            values[:, :, start : start + length] = v
            stop = start + length
            y = F.scaled_dot_product_attention(
                q, keys[:, :, :stop], values[:, :, :stop], is_causal=length > 1 and start == 0
            )
        return self.proj(y.transpose(1, 2).reshape(batch, length, -1)), cache

    def forward(self, x, mode="chunked", cache=None, start=0):
        residual = self.config.residual
        if residual == "prenorm":
            attended, cache = self._attention_branch(x, mode, cache, start)
            x = x + attended
            return x + self._mlp_branch(x), cache
        if residual == "hyper":  # x: streams (B, T, n, D)
            x, cache = self.hyper_attention(x, mode, cache, start)
            return self.hyper_mlp(x), cache
        # post-norm (alpha = 1) and DeepNorm: x <- LN(alpha x + G(x))
        attended, cache = self.attend(x, mode, cache, start)
        x = self.norm1(self.alpha * x + self.drop(attended))
        x = self.norm2(self.alpha * x + self.drop(self.fc_out(F.gelu(self.fc(x)))))
        return x, cache


class GPT(AutoregressiveSampling, nn.Module):
    r"""Pre-norm causal Transformer language model (Radford et al. 2019, GPT-2 layout) with RoPE.

    .. math::

        x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x)),\qquad
        x \leftarrow x + W_2\,\mathrm{GELU}(W_1 \mathrm{LN}(x)),

    the attention being causal softmax attention
    :math:`\mathrm{softmax}(QK^\top/\sqrt{d} + M)V` through
    :func:`~torch.nn.functional.scaled_dot_product_attention`, or the delta rule. The input embedding
    and the output projection share their weights. ``config.residual`` replaces the pre-norm
    residual by post-norm, DeepNorm (Wang et al. 2022) or hyper-connections over
    ``config.num_streams`` streams (Zhu et al. 2025; mHC, DeepSeek 2025), the streams summed before
    the last LayerNorm.

    Args:
        config: a :class:`GPTConfig`. Default: ``GPTConfig()``.
        validate: check in eager forwards that the token ids lie in the vocabulary (one host
            read); skipped under ``torch.compile``. Default: ``True``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        - Input: token ids ``(B, T)``; output: logits ``(B, T, vocab_size)``.

    Examples::

        >>> model = GPT(GPTConfig(num_layers=2, dim=32, num_heads=2))
        >>> model(torch.randint(0, 256, (3, 40))).shape
        torch.Size([3, 40, 256])
    """

    def __init__(
        self, config: GPTConfig | None = None, *, validate: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.validate = validate
        self.config = config = GPTConfig() if config is None else config
        factory = {"device": device, "dtype": dtype}
        self.embed = nn.Embedding(config.vocab_size, config.dim, **factory)
        self.blocks = nn.ModuleList(
            _Block(config, factory, index) for index in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.dim, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, weight in self.named_parameters():
            if ".hyper_" in name:
                continue  # the hyper-connections keep their own start
            if weight.dim() >= 2:
                # residual output projections scaled by 1 / sqrt(2 L) as in GPT-2
                scale = (
                    (2 * self.config.num_layers) ** -0.5
                    if name.endswith(("proj.weight", "fc_out.weight"))
                    else 1.0
                )
                nn.init.normal_(weight, std=0.02 * scale)
        if self.config.residual == "deepnorm":
            # DeepNet's start: Xavier normal, gain beta for the FFN, value and output projections,
            # 1 for the query and key projections
            beta = deepnorm_scales(self.config.num_layers)[1]
            with torch.no_grad():
                for block in self.blocks:
                    query, key, value = block.qkv.weight.view(3, self.config.dim, -1)
                    for weight, gain in ((query, 1.0), (key, 1.0), (value, beta)):
                        nn.init.xavier_normal_(weight, gain=gain)
                    for layer in (block.proj, block.fc, block.fc_out):
                        nn.init.xavier_normal_(layer.weight, gain=beta)

    def _run(self, idx, mode, caches, start):
        x = self.embed(idx)
        hyper = self.config.residual == "hyper"
        if hyper:
            x = HyperConnections.expand_streams(x, self.config.num_streams)
        new_caches = []
        for index, block in enumerate(self.blocks):
            x, cache = block(x, mode, None if caches is None else caches[index], start)
            new_caches.append(cache)
        if hyper:
            x = HyperConnections.reduce_streams(x)
        return self.norm(x) @ self.embed.weight.t(), new_caches

    def forward(self, idx: torch.Tensor, mode: str = "chunked") -> torch.Tensor:
        """Logits ``(B, T, vocab)``; ``mode`` selects the delta rule's execution form."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        idx = check_token_ids(idx, self.config.vocab_size, self.validate)
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        return self._run(idx, mode, None, 0)[0]

    def empty_cache(self, batch: int, max_length: int) -> list:
        """Per-block generation state: a preallocated key/value cache for ``max_length`` tokens
        (softmax) or ``None`` (the delta rule starts from a zero state)."""
        if self.config.attention == "delta":
            return [None] * self.config.num_layers
        h = self.config.num_heads
        shape = (batch, h, max_length, self.config.dim // h)
        weight = self.embed.weight
        return [
            (weight.new_zeros(shape), weight.new_zeros(shape))
            for _ in range(self.config.num_layers)
        ]

    @torch.no_grad()
    def prefill(
        self, idx: torch.Tensor, max_new_tokens: int = 0, prefill_segment: int = 1024
    ) -> tuple[torch.Tensor, list]:
        """Read a prompt ``(B, T)``; return the last logits ``(B, vocab)`` and the generation state:
        a key/value cache with room for ``max_new_tokens`` more tokens (softmax, the prompt read in
        one causal call) or the delta rule's state (read in chunked segments)."""
        idx = check_generation(
            idx, self.config.vocab_size, max_new_tokens, 1.0, None, prefill_segment
        )
        batch, length = idx.shape
        cache = self.empty_cache(batch, length + max_new_tokens)
        if self.config.attention == "softmax":
            logits, cache = self._run(idx, "chunked", cache, 0)
            return logits[:, -1], cache
        logits = None
        for start in range(0, length, prefill_segment):
            logits, cache = self._run(
                idx[:, start : start + prefill_segment], "chunked", cache, start
            )
        return logits[:, -1], cache

    @torch.no_grad()
    def step(self, token: torch.Tensor, cache: list, position: int) -> tuple[torch.Tensor, list]:
        """One decoding step of the token ``(B, 1)`` at ``position``; returns ``(B, vocab)`` logits."""
        logits, cache = self._run(token, "recurrent", cache, position)
        return logits[:, -1], cache
