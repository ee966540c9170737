r"""A text-to-codec language model in miniature over one fused stream, and its acoustic tokeniser.

:class:`ResidualVectorQuantizer` turns acoustic frames into K codebook tokens per frame;
:class:`FusedStreamLM` reads, at every time step t, the text token :math:`a_t` (e.g. the phoneme
spoken at frame t) and the acoustic tokens :math:`b_{t-1} \in [0, N)^K` of the previous frame,
fuses them into one vector :math:`x_t \in \mathbb{R}^c` and predicts :math:`b_t` with a causal
Transformer (the pre-norm blocks of :class:`~manifoldnn.models.GPT`) and K softmax heads:

.. math::

    p(b_t \mid a_{\le t}, b_{<t}) = \prod_{k=1}^{K}
    \operatorname{softmax}\big(W_k\, h_t\big)_{b_{t,k}}, \qquad
    h = \mathrm{Transformer}_{\mathrm{causal}}(x_1, \dots, x_T).

The fusions, all at width c (``FUSIONS``):

* ``"direct_sum"``: :math:`x_t = \varphi(E a_t) + \psi(b_{t-1})`, the
  :class:`~manifoldnn.layers.OrthogonalDirectSum` of a text embedding :math:`E a_t \in
  \mathbb{R}^n` and the K codebook embeddings (width V each) with :math:`S_A \perp S_B`; exact
  when ``c = n + K V`` (x decomposes back into both), lossy (``rank_a + rank_b <= c``) otherwise;
* ``"summed"``: :math:`x_t = E a_t + \sum_k E_k b_{t-1,k}`, every table of width c, the input
  of codec language models (VALL-E, Wang et al. 2023, sec. 4; MusicGen, Copet et al. 2023,
  sec. 2.2);
* ``"concat_linear"``: :math:`x_t = W [E a_t;\ E_1 b_{t-1,1}; \dots; E_K b_{t-1,K}] + w_0`, a
  learnt linear map from ``n + K V`` to c.

The two streams share one time axis: frame t is one token of the Transformer, so the text token
:math:`a_t` and the codec tokens :math:`b_{t-1}` it fuses are both at rotary position t (the
time-aligned position of multimodal RoPE without a position id per stream).

Sizes: batch ``B``, frames ``T``, text vocabulary ``num_text_tokens``, ``K`` codebooks of
``num_codes`` tokens, text width ``n``, codebook width ``V``, model width ``c``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.fusion import OrthogonalDirectSum
from ..layers.transformer_vq import vector_quantize
from ..validation import (
    check_positive_int,
    check_positive_ints,
    renamed_arguments,
    renamed_attribute,
)
from .gpt import GPTConfig, _Block

__all__ = ["FUSIONS", "FusedStreamLM", "ResidualVectorQuantizer"]

FUSIONS = ("direct_sum", "summed", "concat_linear")


class ResidualVectorQuantizer:
    r"""K-stage residual vector quantiser with k-means codebooks (Juang, Gray 1982).

    Stage k quantises what the previous stages left over:

    .. math::

        r_0 = x,\quad b_k = \arg\min_j \|r_{k-1} - C_{k,j}\|^2,\quad r_k = r_{k-1} - C_{k, b_k},
        \qquad \hat x = \textstyle\sum_k C_{k, b_k},

    each codebook :math:`C_k` fitted by scikit-learn's :class:`~sklearn.cluster.KMeans` on the
    residuals :math:`r_{k-1}` of the training frames (the codec tokeniser of SoundStream,
    Zeghidour et al. 2021, sec. 3.3, with k-means instead of a learnt encoder).

    Args:
        n_codebooks: K. Default: 4.
        codebook_size: tokens per codebook N. Default: 64.
        random_state: seed of the k-means runs (stage k uses ``random_state + k``). Default: 0.

    Attributes:
        codebooks_: ``(K, N, d)`` float64 tensor after :meth:`fit`.

    Examples::

        >>> rvq = ResidualVectorQuantizer(2, 8).fit(torch.randn(500, 3))
        >>> rvq.encode(torch.randn(7, 3)).shape
        torch.Size([7, 2])
    """

    def __init__(self, n_codebooks: int = 4, codebook_size: int = 64, random_state: int = 0):
        self.n_codebooks = check_positive_int(n_codebooks, "n_codebooks")
        self.codebook_size = check_positive_int(codebook_size, "codebook_size")
        self.random_state = random_state

    def fit(self, frames: torch.Tensor | np.ndarray) -> ResidualVectorQuantizer:
        """Fit the K codebooks on ``frames`` ``(N_frames, d)``; returns ``self``."""
        from sklearn.cluster import KMeans

        x = torch.as_tensor(frames).detach().to("cpu", torch.float64)
        if x.dim() != 2 or x.shape[0] < self.codebook_size:
            raise ValueError(
                f"frames must be (N, d) with N >= codebook_size={self.codebook_size}, got "
                f"{tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("frames contain NaN or Inf")
        residual = x.numpy().copy()
        codebooks = []
        for stage in range(self.n_codebooks):
            kmeans = KMeans(self.codebook_size, n_init=1, random_state=self.random_state + stage)
            labels = kmeans.fit_predict(residual)
            codebooks.append(kmeans.cluster_centers_)
            residual = residual - kmeans.cluster_centers_[labels]
        self.codebooks_ = torch.from_numpy(np.stack(codebooks))
        return self

    def _fitted(self) -> torch.Tensor:
        if not hasattr(self, "codebooks_"):
            raise ValueError("this ResidualVectorQuantizer is not fitted yet; call fit first")
        return self.codebooks_

    def encode(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Token ids ``(..., K)`` int64 of frames ``(..., d)`` (greedy, stage by stage)."""
        codebooks = self._fitted()
        x = torch.as_tensor(frames)
        if x.dim() < 1 or x.shape[-1] != codebooks.shape[-1]:
            raise ValueError(
                f"frames must have shape (..., d={codebooks.shape[-1]}), got {tuple(x.shape)}"
            )
        codebooks = codebooks.to(x.device)
        residual = x.to(codebooks.dtype).reshape(-1, x.shape[-1])  # (frames, d)
        ids = []
        for centres in codebooks:
            index, quantised = vector_quantize(residual, centres)
            ids.append(index)
            residual = residual - quantised
        return torch.stack(ids, dim=-1).reshape(*x.shape[:-1], len(ids))

    def contributions(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-stage code vectors ``(..., K, d)`` of token ids ``(..., K)`` (they sum to x_hat)."""
        codebooks = self._fitted()
        ids = torch.as_tensor(ids)
        if ids.dim() < 1 or ids.shape[-1] != self.n_codebooks or ids.is_floating_point():
            raise ValueError(f"ids must be integer (..., K={self.n_codebooks}), got {ids.shape}")
        codebooks = codebooks.to(ids.device)
        return codebooks[torch.arange(self.n_codebooks, device=ids.device), ids.long()]

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Quantised frames ``x_hat (..., d)`` of token ids ``(..., K)``."""
        return self.contributions(ids).sum(-2)


class FusedStreamLM(nn.Module):
    r"""Causal Transformer over a fused text-and-codec stream, predicting the next frame's tokens.

    See the module docstring for the three fusions and the model.

    Args:
        num_text_tokens: text vocabulary (e.g. phonemes).
        num_codebooks: K.
        num_codes: tokens per codebook N; id ``num_codes`` is the start-of-sequence code that
            stands for :math:`b_0`.
        dim: c, the model width.
        fusion: one of ``FUSIONS``. Default: ``"direct_sum"``.
        text_size: n, width of the text embedding for ``"direct_sum"`` / ``"concat_linear"``.
            Default: 32.
        code_size: V, width of each codebook embedding for those two. Default: 16.
        rank_a: retained size of the text part of the direct sum (lossy mode when
            ``dim < n + K V``). Default: ``None`` (all, which needs ``dim >= n + K V``).
        rank_b: retained size of the codes' part of the direct sum. Default: ``None`` (all).
        parametrization: of the direct sum's frames (see
            :class:`~manifoldnn.layers.OrthogonalDirectSum`). Default: ``"stiefel"`` (train with
            a geoopt Riemannian optimiser).
        num_layers: Transformer blocks (:class:`GPTConfig`). Default: ``2``.
        num_heads: attention heads of a block. Default: ``4``.
        mlp_ratio: hidden width of a block's MLP over ``dim``. Default: ``4``.
        dropout: of the Transformer blocks. Default: ``0.0``.
        position: the blocks' positions, ``"rope"``, ``"alibi"`` or ``"none"``
            (:class:`GPTConfig`); frame t is at position t for both streams. Default: ``"rope"``.
        num_kv_heads: key/value heads of the blocks' attention (grouped-query attention;
            :class:`GPTConfig`). Default: ``None`` (``num_heads``).
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        - ``text``: ``(B, T)`` ids in ``[0, num_text_tokens)``;
        - ``codes``: ``(B, T, K)`` ids in ``[0, num_codes)``, the tokens of frames 1..T;
        - output of :meth:`forward`: logits ``(B, T, K, num_codes)`` for ``codes``.

    Examples::

        >>> model = FusedStreamLM(40, 4, 64, 96, fusion="direct_sum", text_size=32, code_size=16)
        >>> model(torch.randint(0, 40, (2, 50)), torch.randint(0, 64, (2, 50, 4))).shape
        torch.Size([2, 50, 4, 64])
    """

    n_codebooks = renamed_attribute("n_codebooks", "num_codebooks")
    c = renamed_attribute("c", "dim")
    text_dim = renamed_attribute("text_dim", "text_size")
    code_dim = renamed_attribute("code_dim", "code_size")

    @renamed_arguments(
        n_codebooks="num_codebooks", c="dim", text_dim="text_size", code_dim="code_size",
        n_layer="num_layers", n_head="num_heads",
    )  # fmt: skip
    def __init__(
        self,
        num_text_tokens: int,
        num_codebooks: int,
        num_codes: int,
        dim: int,
        *,
        fusion: Literal["direct_sum", "summed", "concat_linear"] = "direct_sum",
        text_size: int = 32,
        code_size: int = 16,
        rank_a: int | None = None,
        rank_b: int | None = None,
        parametrization: str = "stiefel",
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        position: str = "rope",
        num_kv_heads: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_ints(
            num_text_tokens=num_text_tokens, num_codebooks=num_codebooks, num_codes=num_codes,
            dim=dim, text_size=text_size, code_size=code_size,
        )  # fmt: skip
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if fusion != "direct_sum" and (rank_a is not None or rank_b is not None):
            raise ValueError("rank_a and rank_b belong to fusion='direct_sum'")
        factory = {"device": device, "dtype": dtype}
        self.num_text_tokens, self.num_codebooks, self.num_codes = (
            num_text_tokens,
            num_codebooks,
            num_codes,
        )
        self.dim, self.fusion, self.text_size, self.code_size = dim, fusion, text_size, code_size
        self.start_code = num_codes
        width = dim if fusion == "summed" else text_size
        self.text_embedding = nn.Embedding(num_text_tokens, width, **factory)
        self.direct_sum = self.code_embeddings = self.concat_map = None
        if fusion == "direct_sum":
            self.direct_sum = OrthogonalDirectSum(
                text_size, num_codebooks, code_size, dim, rank_a=rank_a, rank_b=rank_b,
                num_tokens=num_codes + 1, parametrization=parametrization, validate=False,
                **factory,
            )  # fmt: skip
        else:
            width = dim if fusion == "summed" else code_size
            self.code_embeddings = nn.Parameter(
                torch.empty(num_codebooks, num_codes + 1, width, **factory)
            )
            if fusion == "concat_linear":
                self.concat_map = nn.Linear(text_size + num_codebooks * code_size, dim, **factory)
        config = GPTConfig(
            vocab_size=1, num_layers=num_layers, dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
            dropout=dropout, position=position, num_kv_heads=num_kv_heads,
        )  # fmt: skip
        self.config = config
        self.blocks = nn.ModuleList(_Block(config, factory) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim, **factory)
        self.heads = nn.Linear(dim, num_codebooks * num_codes, **factory)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation of the blocks (std 0.02, residual outputs / sqrt(2 L)); unit-scale
        embeddings (std 1 / sqrt(width)) so that every fusion starts with inputs of similar norm."""
        for name, weight in self.blocks.named_parameters():
            if weight.dim() >= 2:
                scale = (
                    (2 * len(self.blocks)) ** -0.5
                    if name.endswith(("proj.weight", "fc_out.weight"))
                    else 1.0
                )
                nn.init.normal_(weight, std=0.02 * scale)
        nn.init.normal_(self.text_embedding.weight, std=self.text_embedding.weight.shape[1] ** -0.5)
        if self.code_embeddings is not None:
            nn.init.normal_(self.code_embeddings, std=self.code_embeddings.shape[-1] ** -0.5)
        if self.direct_sum is not None:
            self.direct_sum.reset_parameters()  # unit-norm codebook rows
        if self.concat_map is not None:
            self.concat_map.reset_parameters()
        nn.init.normal_(self.heads.weight, std=0.02)
        nn.init.zeros_(self.heads.bias)

    # ------------------------------------------------------------------ inputs
    def _check(self, text: torch.Tensor, codes: torch.Tensor) -> None:
        if not isinstance(text, torch.Tensor) or text.dim() != 2 or text.is_floating_point():
            shape = tuple(text.shape) if isinstance(text, torch.Tensor) else type(text).__name__
            raise ValueError(f"text must be integer ids of shape (B, T), got {shape}")
        expected = tuple(text.shape) + (self.num_codebooks,)
        if not isinstance(codes, torch.Tensor) or tuple(codes.shape) != expected:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must have shape (B, T, K) = {expected}, got {shape}")
        if codes.is_floating_point():
            raise ValueError(f"codes must be integer ids, got dtype {codes.dtype}")

    def previous_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``b_{t-1}`` ``(B, T, K)``: ``codes`` shifted one frame later, the start code first."""
        start = torch.full_like(codes[:, :1], self.start_code)
        return torch.cat([start, codes[:, :-1]], dim=1)

    def features(
        self, text: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What is fused at each step: ``(E a_t (B, T, width), E_k b_{t-1,k} (B, T, K, width))``."""
        self._check(text, codes)
        previous = self.previous_codes(codes).long()
        a = self.text_embedding(text.long())
        table = self.code_embeddings if self.direct_sum is None else self.direct_sum.codebooks
        return a, table[torch.arange(self.num_codebooks, device=previous.device), previous]

    def fuse(self, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The Transformer's input ``x (B, T, c)`` (see the module docstring)."""
        a, b = self.features(text, codes)
        if self.fusion == "direct_sum":
            return self.direct_sum(a, b)
        if self.fusion == "summed":
            return a + b.sum(-2)
        return self.concat_map(torch.cat([a, b.flatten(-2)], dim=-1))

    def forward(
        self, text: torch.Tensor, codes: torch.Tensor, *, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, K, num_codes)`` of ``codes``; with ``return_hidden`` also the final
        normalised hidden states ``(B, T, c)``."""
        x = self.fuse(text, codes)
        for block in self.blocks:
            x, _ = block(x)
        hidden = self.norm(x)
        logits = self.heads(hidden).unflatten(-1, (self.num_codebooks, self.num_codes))
        return (logits, hidden) if return_hidden else logits

    def loss(
        self, text: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-codebook next-frame cross-entropy ``(K,)`` (nats), averaged over the frames where
        ``mask (B, T)`` is True (default: all)."""
        logits = self(text, codes)
        ce = F.cross_entropy(logits.flatten(0, 2), codes.long().flatten(), reduction="none")
        ce = ce.view(codes.shape)
        if mask is None:
            return ce.mean((0, 1))
        if mask.shape != text.shape:
            raise ValueError(f"mask must have shape (B, T) = {tuple(text.shape)}, got {mask.shape}")
        weight = mask.to(ce.dtype).unsqueeze(-1)
        return (ce * weight).sum((0, 1)) / weight.sum((0, 1)).clamp_min(1.0)

    @torch.no_grad()
    def initialize_fusion(
        self, text: torch.Tensor, codes: torch.Tensor, *args: Any, **kwargs: Any
    ) -> FusedStreamLM:
        """Start the direct sum's frames from paired data: :meth:`OrthogonalDirectSum.initialize`
        on the current embeddings of ``text (B, T)`` and the previous codes of ``codes (B, T, K)``;
        returns ``self``.

        Args:
            text: ``(B, T)`` text token ids.
            codes: ``(B, T, K)`` codes.
            *args: the further arguments of :meth:`OrthogonalDirectSum.initialize` (``method``).
            **kwargs: its keyword arguments (``method``, ``regularization``, ``seed``).
        """
        if self.direct_sum is None:
            raise ValueError("initialize_fusion needs fusion='direct_sum'")
        a, b = self.features(text, codes)
        text_features = a.reshape(-1, self.text_size)
        code_features = b.reshape(-1, self.num_codebooks, self.code_size)
        self.direct_sum.initialize(text_features, code_features, *args, **kwargs)
        return self

    @torch.no_grad()
    def decompose_input(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Read ``x = fuse(text, codes)`` ``(B, T, c)`` back (direct sum only): the estimated
        features ``a_hat (B, T, n)``, ``b_hat (B, T, K, V)`` and the nearest-row token ids
        ``text (B, T)``, ``previous_codes (B, T, K)``."""
        if self.direct_sum is None:
            raise ValueError("decompose_input needs fusion='direct_sum'")
        a_hat, b_hat = self.direct_sum.decompose(x)
        table = self.text_embedding.weight
        distances = (table * table).sum(-1) - 2.0 * a_hat @ table.T
        return {
            "a_hat": a_hat,
            "b_hat": b_hat,
            "text": distances.argmin(-1),
            "previous_codes": self.direct_sum.decode_tokens(x),
        }

    def extra_repr(self) -> str:
        return (
            f"fusion={self.fusion!r}, dim={self.dim}, num_text_tokens={self.num_text_tokens}, "
            f"num_codebooks={self.num_codebooks}, num_codes={self.num_codes}, text_size={self.text_size}, "
            f"code_size={self.code_size}"
        )
