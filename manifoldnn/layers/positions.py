r"""Token positions for causal attention: rotary embeddings (with context-extension scalings), ALiBi,
and none, one class each behind the ``position=`` choice of
:class:`~manifoldnn.layers.CausalSelfAttention` and :class:`~manifoldnn.layers.MultiHeadLatentAttention`.

A position acts in two places of the logits :math:`s_{ij} = \lambda\, q_i^\top k_j / \sqrt{d} + b_{ij}`:
:meth:`Position.rotate` maps queries and keys (RoPE), :meth:`Position.logit_bias` gives the additive
bias :math:`b_{ij}` (ALiBi) and :attr:`Position.logit_scale` the multiplier :math:`\lambda` (YaRN's
temperature). Query ``i`` sits at absolute position ``start + i``, key ``j`` at ``j``.

``POSITIONS`` maps the names ``"rope"``, ``"alibi"`` and ``"none"`` to the classes;
``ROPE_SCALINGS`` maps ``"linear"``, ``"ntk"`` and ``"yarn"`` to the frequency rules of
:class:`RotaryPosition`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..validation import check_choice, check_positive_float, check_positive_int

__all__ = [
    "POSITIONS",
    "ROPE_SCALINGS",
    "ALiBi",
    "NoPosition",
    "Position",
    "RotaryPosition",
    "alibi_slopes",
    "position_for",
    "rotary",
]


def rotary(
    x: torch.Tensor,
    start: int = 0,
    theta: float = 10_000.0,
    *,
    frequencies: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Rotate consecutive feature pairs of ``x`` by angles proportional to the token's position.

    .. math::

        (x_{2j}, x_{2j+1}) \mapsto R(p\,\omega_j)\,(x_{2j}, x_{2j+1}), \qquad
        \omega_j = \theta^{-2j/F}, \quad p = \text{start} + t,

    so that :math:`\langle \mathrm{RoPE}(q)_t, \mathrm{RoPE}(k)_s \rangle` depends on :math:`t - s`
    only (Su et al. 2021, "RoFormer", eq. 34). The angles are formed in float64 and reduced modulo
    :math:`2\pi` before the cast, so that float32 positions in the tens of thousands keep their
    precision and every execution mode sees the same rotation for a position.

    Args:
        x: features, ``(..., T, F)`` with ``F`` even.
        start: position of the first token. Default: 0.
        theta: base of the frequencies. Default: 10000.
        frequencies: the angular frequencies :math:`\omega_j` ``(F / 2,)`` in float64, replacing
            :math:`\theta^{-2j/F}` (the scaled rules of :class:`RotaryPosition`). Default: ``None``.

    Shape:
        - Output: same as ``x``.
    """
    features = x.shape[-1]
    if features % 2:
        raise ValueError(f"rotary needs an even number of features, got {features}")
    positions = torch.arange(start, start + x.shape[-2], device=x.device, dtype=torch.float64)
    if frequencies is None:
        exponents = torch.arange(0, features, 2, device=x.device, dtype=torch.float64) / features
        frequencies = theta**-exponents
    angles = torch.remainder(positions[:, None] * frequencies, 2 * math.pi).to(x.dtype)
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.unflatten(-1, (features // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class Position(nn.Module):
    """What a position scheme contributes to causal attention logits; the base class is no
    position at all (a causal Transformer still tells positions apart through its mask).

    Subclasses override :meth:`rotate`, :meth:`logit_bias` or :attr:`logit_scale`, and the
    class method :meth:`for_attention` that builds one from the sizes of an attention layer.
    """

    #: the multiplier :math:`\lambda` of every logit.
    logit_scale: float = 1.0
    #: whether :meth:`logit_bias` returns a bias (``False``: it returns ``None``).
    has_logit_bias: bool = False

    @classmethod
    def for_attention(cls, head_size: int, num_heads: int) -> Position:
        """The position with default options for heads of ``head_size`` (the width it rotates)."""
        return cls()

    def rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Queries or keys ``(..., T, F)`` of the positions ``start .. start + T - 1``."""
        return x

    def logit_bias(
        self, query_length: int, key_length: int, start: int, *, device=None, dtype=None
    ) -> torch.Tensor | None:
        """Additive bias ``(H, T_q, T_k)`` of the logits, or ``None``."""
        return None


class NoPosition(Position):
    """No position information (the causal mask alone; Haviv et al. 2022, "Transformer language
    models without positional encodings still learn positional information").

    Examples::

        >>> NoPosition().rotate(torch.ones(3, 4), start=5).equal(torch.ones(3, 4))
        True
    """


def _inverse_frequencies(theta: float, head_size: int, device) -> torch.Tensor:
    exponents = torch.arange(0, head_size, 2, device=device, dtype=torch.float64) / head_size
    return theta**-exponents


def _linear(rope: RotaryPosition, device) -> torch.Tensor:
    # position interpolation (Chen et al. 2023): positions m -> m / s, i.e. every frequency / s
    return _inverse_frequencies(rope.theta, rope.head_size, device) / rope.factor


def _ntk(rope: RotaryPosition, device) -> torch.Tensor:
    # NTK-aware base change (bloc97 2023; Peng et al. 2023, eq. 15): the lowest frequency is
    # interpolated by s, the highest kept
    d = rope.head_size
    return _inverse_frequencies(rope.theta * rope.factor ** (d / (d - 2)), d, device)


def _yarn(rope: RotaryPosition, device) -> torch.Tensor:
    # NTK-by-parts (Peng et al. 2023, eqs. 17-18): r = L / lambda_d wavelengths fit in the training
    # length L; ramp gamma(r) = clamp((r - alpha) / (beta - alpha), 0, 1) interpolates from
    # theta_d / s (r < alpha, long wavelengths) to theta_d (r > beta)
    frequencies = _inverse_frequencies(rope.theta, rope.head_size, device)
    ratio = rope.train_length * frequencies / (2 * math.pi)
    ramp = ((ratio - rope.alpha) / (rope.beta - rope.alpha)).clamp(0.0, 1.0)
    return (1 - ramp) * frequencies / rope.factor + ramp * frequencies


#: the frequency rules of :class:`RotaryPosition` by ``scaling``.
ROPE_SCALINGS: dict[str, Callable[[RotaryPosition, torch.device], torch.Tensor]] = {
    "linear": _linear,
    "ntk": _ntk,
    "yarn": _yarn,
}


class RotaryPosition(Position):
    r"""Rotary position embedding (RoPE), optionally scaled to contexts longer than training's.

    Queries and keys are rotated pairwise by :func:`rotary` at the angular frequencies
    :math:`\theta_d = b^{-2d/|D|}` (Su et al. 2021), or, with ``scaling`` and the factor
    :math:`s = L'/L` (target over training length):

    - ``"linear"``: position interpolation (Chen et al. 2023), :math:`\theta_d / s`;
    - ``"ntk"``: NTK-aware base change, :math:`b' = b\, s^{|D|/(|D| - 2)}`;
    - ``"yarn"``: YaRN (Peng et al. 2023, arXiv 2309.00071, Sec. 3.4): NTK-by-parts with the ramp
      :math:`\gamma(r) = \mathrm{clamp}((r - \alpha)/(\beta - \alpha), 0, 1)` of the wavelengths
      in the training length :math:`r_d = L \theta_d / 2\pi`,

      .. math::

          h(\theta_d) = (1 - \gamma(r_d))\,\frac{\theta_d}{s} + \gamma(r_d)\,\theta_d,

      and the attention temperature :math:`\sqrt{1/t} = 0.1 \ln s + 1`: every logit is
      multiplied by :math:`1/t` (:attr:`logit_scale`).

    Args:
        head_size: the width rotated (even).
        theta: the base :math:`b`. Default: ``10000.0``.
        scaling: ``None``, ``"linear"``, ``"ntk"`` or ``"yarn"`` (``ROPE_SCALINGS``). Default: ``None``.
        factor: :math:`s \geq 1`. Default: ``1.0``.
        train_length: :math:`L`, the training context (needed by ``"yarn"``). Default: ``None``.
        alpha: YaRN's :math:`\alpha`. Default: ``1.0``.
        beta: YaRN's :math:`\beta`. Default: ``32.0``.

    Examples::

        >>> rope = RotaryPosition(8, scaling="yarn", factor=4.0, train_length=256)
        >>> rope.rotate(torch.randn(2, 10, 8), start=0).shape
        torch.Size([2, 10, 8])
        >>> round(rope.logit_scale, 4)  # (0.1 ln 4 + 1)^2
        1.2965
    """

    def __init__(
        self,
        head_size: int,
        *,
        theta: float = 10_000.0,
        scaling: str | None = None,
        factor: float = 1.0,
        train_length: int | None = None,
        alpha: float = 1.0,
        beta: float = 32.0,
    ) -> None:
        super().__init__()
        check_positive_int(head_size, "head_size")
        if head_size % 2:
            raise ValueError(f"head_size must be even (RoPE rotates pairs), got {head_size}")
        self.head_size = head_size
        self.theta = check_positive_float(theta, "theta")
        if self.theta <= 1.0:
            raise ValueError(f"theta must be > 1, got {theta!r}")
        if scaling is not None:
            check_choice(scaling, "scaling", ROPE_SCALINGS)
        self.scaling = scaling
        self.factor = check_positive_float(factor, "factor")
        if self.factor < 1.0:
            raise ValueError(f"factor must be >= 1 (the context extension L'/L), got {factor!r}")
        if scaling == "ntk" and head_size < 4:
            raise ValueError(f"scaling='ntk' needs head_size >= 4, got {head_size}")
        self.train_length = train_length
        if scaling == "yarn":
            if train_length is None:
                raise ValueError("scaling='yarn' needs train_length (the training context L)")
            check_positive_int(train_length, "train_length")
        self.alpha = check_positive_float(alpha, "alpha")
        self.beta = check_positive_float(beta, "beta")
        if self.beta <= self.alpha:
            raise ValueError(f"beta must exceed alpha, got alpha={alpha!r}, beta={beta!r}")
        temperature = 0.1 * math.log(self.factor) + 1.0 if scaling == "yarn" else 1.0
        self.logit_scale = temperature**2

    @classmethod
    def for_attention(cls, head_size: int, num_heads: int) -> RotaryPosition:
        return cls(head_size)

    def frequencies(self, device=None) -> torch.Tensor:
        """The angular frequencies ``(head_size / 2,)``, float64, after the scaling."""
        if self.scaling is None:
            return _inverse_frequencies(self.theta, self.head_size, device)
        return ROPE_SCALINGS[self.scaling](self, device)

    def rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        if x.shape[-1] != self.head_size:
            raise ValueError(
                f"RotaryPosition(head_size={self.head_size}) got features of width {x.shape[-1]}"
            )
        if self.scaling is None:
            return rotary(x, start, self.theta)
        return rotary(x, start, frequencies=self.frequencies(x.device))

    def extra_repr(self) -> str:
        text = f"head_size={self.head_size}, theta={self.theta:g}"
        if self.scaling is not None:
            text += f", scaling={self.scaling!r}, factor={self.factor:g}"
        return text


def alibi_slopes(num_heads: int) -> list[float]:
    r"""ALiBi's head slopes (Press et al. 2021, Sec. 3, and their reference code).

    For :math:`n` a power of two, the geometric sequence :math:`m_h = 2^{-8h/n}`,
    :math:`h = 1, \dots, n`; otherwise the :math:`2^{\lfloor \log_2 n \rfloor}` slopes of that power
    of two followed by every other slope of the next power of two, as many as are missing.

    Args:
        num_heads: :math:`n`.

    Returns:
        The ``num_heads`` slopes, largest first.
    """
    check_positive_int(num_heads, "num_heads")
    power = 2 ** math.floor(math.log2(num_heads))
    slopes = [2.0 ** (-8.0 * h / power) for h in range(1, power + 1)]
    if power < num_heads:
        slopes += alibi_slopes(2 * power)[0::2][: num_heads - power]
    return slopes


class ALiBi(Position):
    r"""Attention with linear biases (Press et al. 2021, "Train short, test long", Sec. 3).

    No rotation; head :math:`h` adds to its logits the bias

    .. math::

        b_{h,ij} = -m_h\,(i - j), \qquad j \le i,

    with the slopes :math:`m_h` of :func:`alibi_slopes`.

    Args:
        num_heads: heads of the attention (query heads).

    Examples::

        >>> ALiBi(4).logit_bias(3, 3, start=0)[0]
        tensor([[ 0.0000,  0.2500,  0.5000],
                [-0.2500,  0.0000,  0.2500],
                [-0.5000, -0.2500,  0.0000]])
    """

    has_logit_bias = True

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.slopes = alibi_slopes(num_heads)

    @classmethod
    def for_attention(cls, head_size: int, num_heads: int) -> ALiBi:
        return cls(num_heads)

    def logit_bias(
        self, query_length: int, key_length: int, start: int, *, device=None, dtype=None
    ) -> torch.Tensor:
        """``-m_h (i - j)`` ``(H, T_q, T_k)`` for queries at ``start + i`` and keys at ``j`` (the
        entries above the diagonal are masked by the causal attention)."""
        rows = torch.arange(start, start + query_length, device=device, dtype=dtype)
        cols = torch.arange(key_length, device=device, dtype=dtype)
        slopes = torch.tensor(self.slopes, device=device, dtype=dtype)
        return slopes[:, None, None] * (cols[None, :] - rows[:, None])  # -m (i - j)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


#: the position classes by name.
POSITIONS: dict[str, type[Position]] = {"rope": RotaryPosition, "alibi": ALiBi, "none": NoPosition}


def position_for(position: str | Position, head_size: int, num_heads: int) -> Position:
    """The :class:`Position` named ``position`` (a key of ``POSITIONS``) with default options for
    an attention of ``num_heads`` heads that rotates ``head_size`` features, or ``position``
    itself when it is a :class:`Position` (then checked against those sizes)."""
    if isinstance(position, Position):
        size = getattr(position, "head_size", head_size)
        heads = getattr(position, "num_heads", num_heads)
        if (size, heads) != (head_size, num_heads):
            raise ValueError(
                f"position {position!r} was built for head_size={size}, num_heads={heads}; this "
                f"attention needs head_size={head_size}, num_heads={num_heads}"
            )
        return position
    check_choice(position, "position", POSITIONS)
    if position == "rope" and head_size % 2:
        raise ValueError(f"position='rope' needs an even rotary width, got head_size={head_size}")
    return POSITIONS[position].for_attention(head_size, num_heads)
