r"""Causal multi-head self-attention in linear time with positive random features (FAVOR+, FAVOR++).

The token counterpart of :class:`~manifoldnn.layers.FavorAttention`: softmax attention
:math:`\mathrm{softmax}(q_i^\top k_j / \sqrt D)` over the keys :math:`j \le i`, whose kernel
:math:`\exp(x^\top y)` with :math:`x = q / D^{1/4}`, :math:`y = k / D^{1/4}` is estimated by the
positive random features of :mod:`manifoldnn.layers.favor` (one home: the feature map, the causal
prefix sums and their stabilisation are :func:`~manifoldnn.layers.favor_kernel_sums`).
"""

from __future__ import annotations

import torch

from ..validation import check_choice, check_in_range, check_positive_int
from ._token_heads import TokenHeads
from .favor import (
    ESTIMATORS,
    _redraw_orthogonal_features,
    favor_kernel_sums,
    mean_squared_pair_norm,
    optimal_feature_parameter,
    orthogonal_random_features,
)

__all__ = ["RandomFeatureAttention"]


class RandomFeatureAttention(TokenHeads):
    r"""Causal softmax self-attention estimated with positive random features, in linear time.

    .. math::

        o_i = \frac{\sum_{j \le i} \hat K_{ij} v_j}{\sum_{j \le i} \hat K_{ij}}, \qquad
        \hat K_{ij} = \frac1m \sum_{r=1}^m f_A(\omega_r, x_i) f_A(\omega_r, y_j)
        \approx \exp(q_i^\top k_j / \sqrt D),

    with FAVOR+'s features (``A = 0``, Choromanski et al. 2021) or FAVOR++'s
    (Likhosherstov et al. 2022: the ``A`` of
    :func:`~manifoldnn.layers.optimal_feature_parameter`, lower variance when
    :math:`\|x + y\|^2` is large, i.e. at sharp attention). Each head draws its own orthogonal
    random projection (buffer ``features (H, m, D)``). FAVOR++'s ``A`` must not read the tokens
    it attends over (a statistic of the whole sequence would let each output depend on later
    tokens), so it comes from a running average ``rho (H,)`` of
    :func:`~manifoldnn.layers.mean_squared_pair_norm`, updated after each forward in training
    mode, as batch normalisation keeps its statistics; it starts at ``0`` (``A = 0``, FAVOR+).

    Args:
        dim: token width.
        num_heads: H.
        head_size: per-head width D. Default: ``None`` (``dim // num_heads``).
        estimator: ``"favor+"`` or ``"favor++"``. Default: ``"favor++"``.
        num_features: m random features per head. Default: ``256``.
        chunk_size: tokens per chunk of the causal prefix sums. Default: ``64``.
        momentum: weight of a new batch in the running ``rho``, in ``(0, 1]``. Default: ``0.1``.
        bias: biases in the linear maps. Default: ``False``.
        device: of the parameters and buffers. Default: PyTorch's default.
        dtype: of the parameters and buffers. Default: PyTorch's default.

    Shape:
        ``x (B, T, dim)`` or ``(T, dim)`` -> output of the same shape, and the cache (the prefix
        sums ``(B, H, m, D)``, the normaliser ``(B, H, m)`` and the running maximum of the key
        log-features ``(B, H, 1)``); passing it back continues the sequence (constant memory:
        one token a call equals the whole sequence).

    Examples::

        >>> layer = RandomFeatureAttention(64, num_heads=4, num_features=32)
        >>> y, cache = layer(torch.randn(2, 100, 64))
        >>> y_next, cache = layer(torch.randn(2, 1, 64), cache)
        >>> y.shape, y_next.shape
        (torch.Size([2, 100, 64]), torch.Size([2, 1, 64]))
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_size: int | None = None,
        *,
        estimator: str = "favor++",
        num_features: int = 256,
        chunk_size: int = 64,
        momentum: float = 0.1,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, num_heads, head_size, bias=bias, device=device, dtype=dtype)
        check_choice(estimator, "estimator", ESTIMATORS)
        check_positive_int(num_features, "num_features")
        check_positive_int(chunk_size, "chunk_size")
        check_in_range(momentum, "momentum", 0.0, 1.0, low_open=True)
        self.estimator, self.num_features = estimator, num_features
        self.chunk_size, self.momentum = chunk_size, momentum
        features = orthogonal_random_features(
            num_features, self.head_size, batch_shape=(num_heads,), device=device, dtype=dtype
        )
        self.register_buffer("features", features)
        self.register_buffer("rho", torch.zeros(num_heads, device=device, dtype=dtype))

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw a new random projection for every head (in place, same device and dtype)."""
        _redraw_orthogonal_features(self.features, generator)

    def attend(self, q, k, v, cache):
        batch, heads, length, size = q.shape
        if cache is not None:
            m = self.num_features
            self.check_cache(
                cache,
                {
                    "sums": (batch, heads, m, size),
                    "normaliser": (batch, heads, m),
                    "maximum": (batch, heads, 1),
                },
            )
        root = size**-0.25
        x, y = q * root, k * root
        a = 0.0
        if self.estimator == "favor++":
            a = optimal_feature_parameter(self.rho.clone(), size)
            if self.training:
                batch_rho = mean_squared_pair_norm(x, y).detach().mean(0)
                self.rho.lerp_(batch_rho.to(self.rho.dtype), self.momentum)
        numerator, denominator, _, cache = favor_kernel_sums(
            x, y, v, self.features.to(x), causal=True, chunk_size=self.chunk_size,
            feature_parameter=a, state=cache, return_state=True,
        )  # fmt: skip
        tiny = torch.finfo(denominator.dtype).tiny
        return numerator / denominator.clamp_min(tiny).unsqueeze(-1), cache

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, estimator={self.estimator!r}, "
            f"num_features={self.num_features}, chunk_size={self.chunk_size}"
        )
