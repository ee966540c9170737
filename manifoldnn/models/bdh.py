r"""BDH-GPU, the Dragon Hatchling language model, with parallel, chunked and recurrent execution.

Kosowski et al. 2025, "The Dragon Hatchling: The Missing Link between the Transformer and Models of
the Brain" (Pathway), section 3 and the reference implementation's architecture: one set of low-rank
weights shared by all layers, a positive sparse neuron space of size ``n = H * N`` reached through a
ReLU, and attention without softmax whose state is an ``N x D`` synaptic matrix per head.

Sizes: ``B`` batch, ``T`` tokens, ``D`` = ``dim``, ``H`` = ``num_heads``, ``N`` = ``num_neurons`` per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.hyper_connections import HyperConnections, deepnorm_scales
from ..layers.positions import rotary
from ..validation import check_positive_ints
from .linear_attention import MODES, causal_linear_attention, delta_rule
from .sequence import (
    AutoregressiveSampling,
    check_generation,
    check_residual_options,
    check_token_ids,
    renamed_config_fields,
)

__all__ = ["BDH", "BDHConfig"]

STATE_UPDATES = ("hebbian", "delta")


@renamed_config_fields(
    n_layer="num_layers", n_embd="dim", n_head="num_heads", n_neuron="num_neurons"
)
@dataclass
class BDHConfig:
    """Hyper-parameters of :class:`BDH`; the defaults are the reference model (25.3M parameters).

    Args:
        vocab_size: number of token ids (bytes). Default: 256.
        num_layers: layers. Default: 6.
        dim: model width ``D``. Default: 256.
        num_heads: heads ``H``. Default: 4.
        num_neurons: neurons per head ``N`` (the sparse space has ``n = H * N``). Default: 8192.
        shared_layers: one set of weights for all layers, as in the paper. Default: ``True``.
        dropout: dropout on the sparse products ``xs * ys``. Default: 0.1.
        decay: learn a per-head decay ``lambda`` in (0, 1) on top of RoPE. Default: ``False``.
        state_update: ``"hebbian"`` (additive, BDH) or ``"delta"`` (error-driven, learnt ``beta``
            per head and token, l2-normalised keys). Default: ``"hebbian"``.
        rope_theta: RoPE base. Default: ``2**16``.
        chunk_size: chunk length of ``mode="chunked"``. Default: 64.
        mode: execution mode used when :meth:`BDH.forward` gets none. Default: ``"chunked"``.
        residual: how a layer's output :math:`y` joins the state: ``"postnorm"``
            (:math:`\\mathrm{LN}(x + y)`, the paper's), ``"prenorm"`` (:math:`x + y(\\mathrm{LN}(x))`,
            one LayerNorm at the end), ``"deepnorm"`` (:math:`\\mathrm{LN}(\alpha x + y)` with
            DeepNorm's :math:`\alpha`, the value encoder and decoder started :math:`\beta` times
            smaller, :func:`~manifoldnn.layers.deepnorm_scales`) or ``"hyper"`` (``num_streams``
            streams, :class:`~manifoldnn.layers.HyperConnections`). Default: ``"postnorm"``.
        num_streams: residual streams of ``residual="hyper"``. Default: 4.
        hc_constraint: the residual mixing of ``residual="hyper"``: ``None``, ``"sinkhorn"``,
            ``"birkhoff"`` or ``"orthogonal"``. Default: ``"sinkhorn"``.
        hc_dynamic: input-dependent hyper-connection coefficients. Default: ``True``.
    """

    vocab_size: int = 256
    num_layers: int = 6
    dim: int = 256
    num_heads: int = 4
    num_neurons: int = 8192
    shared_layers: bool = True
    dropout: float = 0.1
    decay: bool = False
    state_update: str = "hebbian"
    rope_theta: float = 2.0**16
    chunk_size: int = 64
    mode: str = "chunked"
    residual: str = "postnorm"
    num_streams: int = 4
    hc_constraint: str | None = "sinkhorn"
    hc_dynamic: bool = True

    def __post_init__(self) -> None:
        check_positive_ints(
            vocab_size=self.vocab_size,
            num_layers=self.num_layers,
            dim=self.dim,
            num_heads=self.num_heads,
            num_neurons=self.num_neurons,
            chunk_size=self.chunk_size,
        )
        if self.num_neurons % 2:
            raise ValueError(
                f"num_neurons must be even (RoPE rotates pairs), got {self.num_neurons}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.state_update not in STATE_UPDATES:
            raise ValueError(
                f"state_update must be one of {STATE_UPDATES}, got {self.state_update!r}"
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.decay and self.state_update != "hebbian":
            raise ValueError("decay applies to state_update='hebbian' only")
        if self.rope_theta <= 1.0:
            raise ValueError(f"rope_theta must be > 1, got {self.rope_theta}")
        check_residual_options(self)


class _BDHLayer(nn.Module):
    """The weights of one BDH layer: encoder ``E_x``, value encoder ``E_y``, decoder ``D``."""

    def __init__(self, config: BDHConfig, factory: dict) -> None:
        super().__init__()
        self.config = config
        h, d, n = config.num_heads, config.dim, config.num_neurons
        self.encoder = nn.Parameter(torch.empty(h, d, n, **factory))
        self.encoder_v = nn.Parameter(torch.empty(h, d, n, **factory))
        self.decoder = nn.Parameter(torch.empty(h * n, d, **factory))
        self.beta = (
            nn.Parameter(torch.empty(d, h, **factory)) if config.state_update == "delta" else None
        )
        self.log_decay_logit = nn.Parameter(torch.empty(h, **factory)) if config.decay else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        beta = (
            deepnorm_scales(self.config.num_layers)[1]
            if self.config.residual == "deepnorm"
            else 1.0
        )
        nn.init.normal_(self.encoder, std=0.02)
        for weight in (self.encoder_v, self.decoder):
            nn.init.normal_(weight, std=0.02 * beta)
        if self.beta is not None:
            nn.init.normal_(self.beta, std=0.02)
        if self.log_decay_logit is not None:
            # half-lives from 2^4 to 2^(3 + H) tokens, one per head: lambda_h = 2^(-1 / 2^(4 + h))
            heads = torch.arange(self.log_decay_logit.shape[0], dtype=torch.float64)
            rate = math.log(2.0) / 2.0 ** (4.0 + heads)
            with torch.no_grad():
                self.log_decay_logit.copy_(torch.log(torch.expm1(rate)))  # softplus^-1

    def log_decay(self) -> torch.Tensor | None:
        return None if self.log_decay_logit is None else -F.softplus(self.log_decay_logit)


class BDH(AutoregressiveSampling, nn.Module):
    r"""BDH-GPU language model (Kosowski et al. 2025, the Dragon Hatchling) in three execution modes.

    Per layer, with LayerNorms without affine parameters and :math:`x` initialised to
    :math:`\mathrm{LN}(\mathrm{embed}(idx))`:

    .. math::

        x_s = \mathrm{ReLU}(x E_x),\quad
        a_t = \mathrm{LN}\Bigl(\sum_{s<t} \langle \rho(x_s)_t, \rho(x_s)_s\rangle\, x_s\Bigr),\quad
        y_s = \mathrm{ReLU}(a E_y),\quad
        x \leftarrow \mathrm{LN}\bigl(x + \mathrm{LN}((x_s \odot y_s) D)\bigr)

    per head, :math:`\rho` being RoPE (:math:`\theta = 2^{16}`); the attention is the recurrence
    :math:`S_t = S_{t-1} + \rho(x_s)_t\, x_t^\top` read as :math:`S_{t-1}^\top \rho(x_s)_t`
    (:func:`~manifoldnn.models.linear_attention.causal_linear_attention`), or the delta rule
    (:func:`~manifoldnn.models.linear_attention.delta_rule`) with ``state_update="delta"``.
    ``mode="parallel"`` builds the :math:`T \times T` scores as the reference code does,
    ``"chunked"`` works in chunks with a carried state (any ``T``), ``"recurrent"`` feeds one token at
    a time through all layers with an ``N x D`` state per head and layer; they agree to rounding.

    Args:
        config: a :class:`BDHConfig`. Default: the reference configuration.
        validate: check in eager forwards that the token ids lie in the vocabulary (one host
            read); skipped under ``torch.compile``. Default: ``True``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        - Input: token ids ``(B, T)`` (or ``(T,)``), integers in ``[0, vocab_size)``.
        - Output: logits ``(B, T, vocab_size)`` (or ``(T, vocab_size)``).

    Examples::

        >>> model = BDH(BDHConfig(num_layers=2, dim=32, num_heads=2, num_neurons=64)).eval()
        >>> idx = torch.randint(0, 256, (1, 50))
        >>> torch.allclose(model(idx, mode="parallel"), model(idx, mode="recurrent"), atol=1e-5)
        True
    """

    def __init__(
        self, config: BDHConfig | None = None, *, validate: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.validate = validate
        self.config = config = BDHConfig() if config is None else config
        factory = {"device": device, "dtype": dtype}
        count = 1 if config.shared_layers else config.num_layers
        self.layers = nn.ModuleList(_BDHLayer(config, factory) for _ in range(count))
        self.embed = nn.Embedding(config.vocab_size, config.dim, **factory)
        self.lm_head = nn.Parameter(torch.empty(config.dim, config.vocab_size, **factory))
        self.dropout = nn.Dropout(config.dropout)
        self.alpha = deepnorm_scales(config.num_layers)[0] if config.residual == "deepnorm" else 1.0
        if config.residual == "hyper":
            self.hyper = nn.ModuleList(
                HyperConnections(
                    config.dim,
                    config.num_streams,
                    self._hyper_branch,
                    constraint=config.hc_constraint,
                    dynamic=config.hc_dynamic,
                    layer_index=index,
                    **factory,
                )
                for index in range(config.num_layers)
            )
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.lm_head, std=0.02)

    def _layer(self, index: int) -> _BDHLayer:
        return self.layers[0 if self.config.shared_layers else index]

    def _attention(self, layer, xs, x, mode, state, start):
        config = self.config
        qk = rotary(xs, start, config.rope_theta)
        v = x.unsqueeze(1)
        common = {"strict": True, "mode": mode, "chunk_size": config.chunk_size, "state": state}
        if config.state_update == "hebbian":
            return causal_linear_attention(
                qk, qk, v, log_decay=layer.log_decay(), return_state=True, **common
            )
        # delta rule: unit keys and beta = sigmoid(x W_beta) in (0, 1), one per head and token
        key = F.normalize(qk, dim=-1, eps=1e-6)
        beta = torch.sigmoid(x @ layer.beta).transpose(-1, -2)
        return delta_rule(key, key, v, beta, return_state=True, **common)

    def _branch(self, layer, x, mode, state, start, stats):
        """One layer's output ``y`` ``(B, T, D)`` from its (normalised) input, and its new state."""
        config = self.config
        batch, length = x.shape[:2]
        xs = torch.relu(x.unsqueeze(1) @ layer.encoder)  # (B, H, T, N)
        if stats is not None:
            stats.append((xs > 0).to(x.dtype).mean())
        attended, state = self._attention(layer, xs, x, mode, state, start)
        ys = torch.relu(F.layer_norm(attended, (config.dim,)) @ layer.encoder_v)
        sparse = (
            self.dropout(xs * ys).transpose(1, 2).reshape(batch, length, layer.decoder.shape[0])
        )
        return F.layer_norm(sparse @ layer.decoder, (config.dim,)), state

    def _hyper_branch(self, x, layer, mode, state, start, stats):
        return self._branch(layer, F.layer_norm(x, (self.config.dim,)), mode, state, start, stats)

    def _run(self, idx, mode, states, start, stats=None):
        config = self.config
        residual = config.residual
        x = F.layer_norm(self.embed(idx), (config.dim,))
        if residual == "hyper":
            x = HyperConnections.expand_streams(x, config.num_streams)
        new_states = []
        for index in range(config.num_layers):
            layer = self._layer(index)
            state = None if states is None else states[index]
            if residual == "hyper":
                x, state = self.hyper[index](x, layer, mode, state, start, stats)
            elif residual == "prenorm":
                y, state = self._branch(
                    layer, F.layer_norm(x, (config.dim,)), mode, state, start, stats
                )
                x = x + y
            else:  # post-norm (alpha = 1) and DeepNorm
                y, state = self._branch(layer, x, mode, state, start, stats)
                x = F.layer_norm((x if self.alpha == 1.0 else self.alpha * x) + y, (config.dim,))
            new_states.append(state)
        if residual == "hyper":
            x = HyperConnections.reduce_streams(x)
        if residual in ("prenorm", "hyper"):
            x = F.layer_norm(x, (config.dim,))
        return x @ self.lm_head, new_states

    def forward(
        self, idx: torch.Tensor, mode: str | None = None, return_active_fraction: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits of the next token at every position.

        Args:
            idx: token ids ``(B, T)`` or ``(T,)``.
            mode: ``"parallel"``, ``"chunked"`` or ``"recurrent"``. Default: ``config.mode``.
            return_active_fraction: also return the fraction of non-zero entries of the sparse
                neuron activations ``ReLU(x E_x)``, averaged over layers. Default: ``False``.
        """
        mode = self.config.mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        idx = check_token_ids(idx, self.config.vocab_size, self.validate)
        unbatched = idx.dim() == 1
        if unbatched:
            idx = idx.unsqueeze(0)
        stats = [] if return_active_fraction else None
        if mode == "recurrent":
            states, steps = None, []
            for t in range(idx.shape[1]):
                logits, states = self._run(idx[:, t : t + 1], "recurrent", states, t, stats)
                steps.append(logits)
            logits = (
                torch.cat(steps, dim=1)
                if steps
                else self.lm_head.new_zeros(idx.shape[0], 0, self.config.vocab_size)
            )
        else:
            logits, _ = self._run(idx, mode, None, 0, stats)
        if unbatched:
            logits = logits.squeeze(0)
        if return_active_fraction:
            fraction = torch.stack(stats).mean() if stats else logits.new_zeros(())
            return logits, fraction
        return logits

    @torch.no_grad()
    def prefill(
        self, idx: torch.Tensor, max_new_tokens: int = 0, prefill_segment: int = 1024
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Read a prompt ``(B, T)`` in chunked segments of ``prefill_segment`` tokens; return the last
        logits ``(B, vocab)`` and the state (one ``(B, H, N, D)`` tensor per layer) for
        :meth:`step`. The state does not grow, so ``max_new_tokens`` is not used."""
        idx = check_generation(idx, self.config.vocab_size, 0, 1.0, None, prefill_segment)
        state, logits = None, None
        for start in range(0, idx.shape[1], prefill_segment):
            logits, state = self._run(
                idx[:, start : start + prefill_segment], "chunked", state, start
            )
        return logits[:, -1], state

    @torch.no_grad()
    def step(
        self, token: torch.Tensor, state: list[torch.Tensor], position: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One recurrent step: the token ``(B, 1)`` at ``position`` after the state of the tokens
        before it; returns its next-token logits ``(B, vocab)`` and the new state."""
        logits, state = self._run(token, "recurrent", state, position)
        return logits[:, -1], state
