r"""A small pre-norm causal Transformer (GPT) with softmax, latent, delta-rule or linear-time
approximations of softmax attention, the baselines of BDH.

``attention="softmax"`` is :class:`~manifoldnn.layers.CausalSelfAttention` (multi-head, or grouped-
or multi-query with ``num_kv_heads``) and ``attention="latent"`` DeepSeek-V2's
:class:`~manifoldnn.layers.MultiHeadLatentAttention`, both with a key/value cache for generation;
``attention="delta"`` replaces them with DeltaNet's error-driven linear attention
(:func:`~manifoldnn.models.linear_attention.delta_rule`), a linear-time baseline whose generation
state is constant in the context. ``attention="vq"`` (Transformer-VQ), ``"favor"``,
``"favor++"`` (positive random features) and ``"relu2"`` (squared-ReLU weights, GAU) are
:class:`~manifoldnn.layers.TransformerVQAttention`, :class:`~manifoldnn.layers.RandomFeatureAttention`
and :class:`~manifoldnn.layers.ReLUSquaredAttention`; they have no positions of their own (the
causal mask is their only order information, ``position="none"``). Positions: RoPE (optionally scaled for longer contexts), ALiBi
or none (``position``); no position table bounds the length.

Sizes: ``B`` batch, ``T`` tokens, ``D`` = ``dim``, ``H`` = ``num_heads``, head width ``D / H``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.causal_attention import AttentionCache, CausalSelfAttention, MultiHeadLatentAttention
from ..layers.hyper_connections import HyperConnections, deepnorm_scales
from ..layers.positions import POSITIONS, ROPE_SCALINGS, RotaryPosition, position_for
from ..layers.random_feature_attention import RandomFeatureAttention
from ..layers.relu_squared import ReLUSquaredAttention
from ..layers.transformer_vq import TransformerVQAttention
from ..validation import check_choice, check_positive_float, check_positive_ints
from .linear_attention import MODES, delta_rule
from .sequence import (
    AutoregressiveSampling,
    check_generation,
    check_residual_options,
    check_token_ids,
    renamed_config_fields,
)

__all__ = ["GPT", "GPTConfig"]

ATTENTIONS = ("softmax", "latent", "delta", "vq", "favor", "favor++", "relu2")
#: the linear-time approximations of softmax attention (and ReLU²), without positions of their own
UNPOSITIONED = ("favor", "favor++", "relu2")
# the attentions whose layers start from no state and return their own (no AttentionCache)
OWN_STATE = ("delta", "vq", *UNPOSITIONED)


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
        attention: ``"softmax"`` (:class:`~manifoldnn.layers.CausalSelfAttention`), ``"latent"``
            (:class:`~manifoldnn.layers.MultiHeadLatentAttention`), ``"delta"`` (delta rule),
            ``"vq"`` (:class:`~manifoldnn.layers.TransformerVQAttention`), ``"favor"`` or
            ``"favor++"`` (:class:`~manifoldnn.layers.RandomFeatureAttention` with FAVOR+'s or
            FAVOR++'s features) or ``"relu2"`` (:class:`~manifoldnn.layers.ReLUSquaredAttention`).
            ``"favor"``, ``"favor++"`` and ``"relu2"`` have no positions (``position="none"``);
            ``"vq"`` takes ``"none"`` or ``"rope"`` (rotary positions over the last
            ``chunk_size`` keys of each query) and leaves a commitment loss that the training
            loop adds (:meth:`GPT.auxiliary_loss`). Default: ``"softmax"``.
        rope_theta: RoPE base. Default: 10000.
        chunk_size: chunk length of the delta rule's chunked form, of the causal prefix sums of
            ``"favor"`` / ``"favor++"`` and of the blocks of ``"vq"``. Default: 64.
        codebook_size: codewords per head of ``"vq"``. Default: ``None`` (256).
        num_features: random features per head of ``"favor"`` / ``"favor++"``. Default:
            ``None`` (256).
        num_kv_heads: key/value heads of ``"softmax"`` (grouped-query attention; 1: multi-query).
            Default: ``None`` (``num_heads``).
        kv_rank: :math:`d_c` of ``"latent"``. Default: ``None`` (``4 * head_size``, DeepSeek-V2's
            ratio).
        rope_dim: :math:`d_h^R` of ``"latent"``. Default: ``None`` (``head_size / 2`` rounded
            down to an even number, at least 2).
        q_rank: query latent width of ``"latent"``. Default: ``None`` (no query compression).
        position: ``"rope"``, ``"alibi"`` or ``"none"`` (``"delta"`` takes ``"rope"``,
            ``"vq"`` ``"none"`` or ``"rope"``). Default: ``"rope"``.
        rope_scaling: ``None``, ``"linear"``, ``"ntk"`` or ``"yarn"``
            (:class:`~manifoldnn.layers.RotaryPosition`). Default: ``None``.
        rope_factor: the context extension :math:`s` of ``rope_scaling``. Default: ``1.0``.
        train_length: the training context, for ``"yarn"`` and ``log_length_scaling``.
            Default: ``None``.
        log_length_scaling: entropy-invariant :math:`\log n / \log L_{train}` scaling of the
            logits (not for ``"delta"``). Default: ``False``.
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
    codebook_size: int | None = None
    num_features: int | None = None
    num_kv_heads: int | None = None
    kv_rank: int | None = None
    rope_dim: int | None = None
    q_rank: int | None = None
    position: str = "rope"
    rope_scaling: str | None = None
    rope_factor: float = 1.0
    train_length: int | None = None
    log_length_scaling: bool = False
    residual: str = "prenorm"
    num_streams: int = 4
    hc_constraint: str | None = "sinkhorn"
    hc_dynamic: bool = True

    def __post_init__(self) -> None:
        check_positive_ints(
            vocab_size=self.vocab_size,
            num_layers=self.num_layers,
            dim=self.dim,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            chunk_size=self.chunk_size,
        )
        rotary_heads = self.position == "rope" and self.attention != "latent"
        if self.dim % self.num_heads or (rotary_heads and (self.dim // self.num_heads) % 2):
            raise ValueError(
                f"num_heads must divide dim into even head widths, got {self.dim}/{self.num_heads}"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_choice(self.position, "position", POSITIONS)
        if not check_positive_float(self.rope_theta, "rope_theta") > 1.0:
            raise ValueError(f"rope_theta must be > 1, got {self.rope_theta!r}")
        if not check_positive_float(self.rope_factor, "rope_factor") >= 1.0:
            raise ValueError(f"rope_factor must be >= 1 (L'/L), got {self.rope_factor!r}")
        check_choice(self.rope_scaling, "rope_scaling", [None, *ROPE_SCALINGS])
        if self.rope_scaling is not None and self.position != "rope":
            raise ValueError(f"rope_scaling needs position='rope', got {self.position!r}")
        if self.attention == "delta" and (self.position != "rope" or self.log_length_scaling):
            raise ValueError("attention='delta' takes position='rope' and no log_length_scaling")
        if self.attention == "vq" and (
            self.position not in ("none", "rope") or self.log_length_scaling or self.rope_scaling
        ):
            raise ValueError(
                "attention='vq' takes position='none' or 'rope' (rotary positions over the last "
                "chunk_size keys), no rope_scaling and no log_length_scaling, got "
                f"position={self.position!r}"
            )
        if self.attention in UNPOSITIONED and (self.position != "none" or self.log_length_scaling):
            raise ValueError(
                f"attention={self.attention!r} has no positions of its own: it takes "
                f"position='none' and no log_length_scaling, got position={self.position!r}"
            )
        if self.codebook_size is not None and self.attention != "vq":
            raise ValueError("codebook_size belongs to attention='vq'")
        if self.num_features is not None and self.attention not in ("favor", "favor++"):
            raise ValueError("num_features belongs to attention='favor' or 'favor++'")
        if self.num_kv_heads is not None and self.attention != "softmax":
            raise ValueError("num_kv_heads belongs to attention='softmax'")
        if self.attention != "latent" and (self.kv_rank, self.rope_dim, self.q_rank) != (None,) * 3:
            raise ValueError("kv_rank, rope_dim and q_rank belong to attention='latent'")
        # the layers check the remaining sizes and options with the same argument names
        _make_attention(self, device="meta")
        check_residual_options(self)


def _rope(config: GPTConfig, width: int) -> RotaryPosition:
    return RotaryPosition(
        width, theta=config.rope_theta, scaling=config.rope_scaling, factor=config.rope_factor,
        train_length=config.train_length,
    )  # fmt: skip


def _make_attention(config: GPTConfig, device=None, dtype=None) -> nn.Module:
    """The attention layer of a block of ``config`` (for ``"delta"`` its rotary position)."""
    head_size = config.dim // config.num_heads
    factory = {"device": device, "dtype": dtype}
    if config.attention == "vq":
        return TransformerVQAttention(
            config.dim, config.num_heads, block_size=config.chunk_size,
            codebook_size=256 if config.codebook_size is None else config.codebook_size,
            position=config.position, theta=config.rope_theta, **factory,
        )  # fmt: skip
    if config.attention in ("favor", "favor++"):
        return RandomFeatureAttention(
            config.dim, config.num_heads, chunk_size=config.chunk_size,
            estimator="favor+" if config.attention == "favor" else "favor++",
            num_features=256 if config.num_features is None else config.num_features, **factory,
        )  # fmt: skip
    if config.attention == "relu2":
        return ReLUSquaredAttention(config.dim, config.num_heads, **factory)
    options = {
        "log_length_scaling": config.log_length_scaling, "train_length": config.train_length,
        "device": device, "dtype": dtype,
    }  # fmt: skip
    if config.attention == "latent":
        rope_dim = 2 * max(1, head_size // 4) if config.rope_dim is None else config.rope_dim
        if config.position == "rope" and rope_dim > 0 and rope_dim % 2 == 0:
            position = _rope(config, rope_dim)
        else:
            position = config.position
        return MultiHeadLatentAttention(
            config.dim, config.num_heads, position=position, q_rank=config.q_rank,
            kv_rank=4 * head_size if config.kv_rank is None else config.kv_rank,
            rope_dim=rope_dim, **options,
        )  # fmt: skip
    if config.position == "rope":
        position = _rope(config, head_size)
    else:
        position = position_for(config.position, head_size, config.num_heads)
    if config.attention == "delta":
        return position
    return CausalSelfAttention(
        config.dim, config.num_heads, num_kv_heads=config.num_kv_heads, position=position,
        **options,
    )  # fmt: skip


def _upgrade_state_dict(module, state_dict, prefix, *args) -> None:
    # state dicts saved before the attention became a submodule (issue 28) hold
    # blocks.i.qkv / blocks.i.proj; CausalSelfAttention has the same layout under blocks.i.attention
    for name in ("qkv.weight", "proj.weight"):
        old, new = prefix + name, prefix + "attention." + name
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)


class _Block(nn.Module):
    def __init__(self, config: GPTConfig, factory: dict, index: int = 0) -> None:
        super().__init__()
        d = config.dim
        self.config = config
        self.norm1 = nn.LayerNorm(d, **factory)
        if config.attention == "delta":
            self.position = _make_attention(config, **factory)
            self.qkv = nn.Linear(d, 3 * d, bias=False, **factory)
            self.beta = nn.Linear(d, config.num_heads, bias=False, **factory)
            self.proj = nn.Linear(d, d, bias=False, **factory)
        else:
            self.attention = _make_attention(config, **factory)
            if isinstance(self.attention, CausalSelfAttention):
                self.register_load_state_dict_pre_hook(_upgrade_state_dict)
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
        if config.attention != "delta":  # the cache (an AttentionCache) knows its positions
            return self.attention(x, cache)
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, config.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.position.rotate(q, start), self.position.rotate(k, start)
        q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
        beta = torch.sigmoid(self.beta(x)).transpose(1, 2)
        y, cache = delta_rule(
            q, k, v, beta, mode=mode, chunk_size=config.chunk_size, state=cache, return_state=True,
        )  # fmt: skip
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
    :func:`~torch.nn.functional.scaled_dot_product_attention`, the delta rule, or a linear-time
    approximation of it (``config.attention``; :meth:`auxiliary_loss` holds Transformer-VQ's
    commitment losses for the training loop). The input embedding
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
                    if name.endswith(("proj.weight", "fc_out.weight", "attention.out.weight"))
                    else 1.0
                )
                nn.init.normal_(weight, std=0.02 * scale)
        if self.config.residual == "deepnorm":
            # DeepNet's start: Xavier normal, gain beta for the FFN, value and output projections,
            # 1 for the query and key projections
            beta = deepnorm_scales(self.config.num_layers)[1]
            dim = self.config.dim
            with torch.no_grad():
                for block in self.blocks:
                    attention = block if self.config.attention == "delta" else block.attention
                    if hasattr(attention, "value_up"):  # latent attention: W^UV is the value map
                        nn.init.xavier_normal_(attention.value_up.weight, gain=beta)
                    else:  # rows: queries (dim), keys, values (as many as the keys)
                        qkv = attention.qkv.weight
                        kv = (qkv.shape[0] - dim) // 2
                        for rows, gain in (
                            ((0, dim), 1.0),
                            ((dim, kv), 1.0),
                            ((dim + kv, kv), beta),
                        ):
                            nn.init.xavier_normal_(qkv.narrow(0, *rows), gain=gain)
                    output = attention.out if hasattr(attention, "out") else attention.proj
                    for layer in (output, block.fc, block.fc_out):
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
        """Per-block generation state: an :class:`~manifoldnn.layers.AttentionCache` for
        ``max_length`` tokens (softmax, latent) or ``None`` (the delta rule and the layers of
        ``"vq"``, ``"favor"``, ``"favor++"`` and ``"relu2"`` start from no state and return
        theirs: value sums and counts per code, prefix sums of features, or the keys and
        values)."""
        if self.config.attention in OWN_STATE:
            return [None] * self.config.num_layers
        return [block.attention.empty_cache(batch, max_length) for block in self.blocks]

    def auxiliary_loss(self) -> torch.Tensor:
        r"""The sum over the blocks of Transformer-VQ's commitment losses
        :math:`\beta\, \overline{\|k - \mathrm{sg}(c_z)\|^2}` of the last forward (``"vq"``;
        zero for the other attentions). A training loop adds it to the next-token loss, so that
        the keys move towards their codewords: ``loss = cross_entropy + model.auxiliary_loss()``.
        """
        losses = [
            block.attention.commitment_loss
            for block in self.blocks
            if isinstance(getattr(block, "attention", None), TransformerVQAttention)
        ]
        return sum(losses, self.embed.weight.new_zeros(()))

    @torch.no_grad()
    def prefill(
        self, idx: torch.Tensor, max_new_tokens: int = 0, prefill_segment: int = 1024
    ) -> tuple[torch.Tensor, list]:
        """Read a prompt ``(B, T)``; return the last logits ``(B, vocab)`` and the generation state:
        a key/value cache with room for ``max_new_tokens`` more tokens (softmax, latent; the prompt
        read in one causal call), the state of ``"vq"``, ``"favor"``, ``"favor++"`` or
        ``"relu2"`` (one call) or the delta rule's state (read in chunked segments)."""
        idx = check_generation(
            idx, self.config.vocab_size, max_new_tokens, 1.0, None, prefill_segment
        )
        batch, length = idx.shape
        cache = self.empty_cache(batch, length + max_new_tokens)
        if self.config.attention != "delta":
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
        """One decoding step of the token ``(B, 1)`` at ``position``; returns ``(B, vocab)`` logits.
        With a key/value cache, ``position`` is the number of tokens it holds."""
        if cache and isinstance(cache[0], AttentionCache) and cache[0].length != position:
            raise ValueError(
                f"position={position} does not follow the cache, which holds {cache[0].length} tokens"
            )
        logits, cache = self._run(token, "recurrent", cache, position)
        return logits[:, -1], cache
