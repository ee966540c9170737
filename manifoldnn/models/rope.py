r"""Rotary position embedding (RoPE) with angles computed per position, so no table bounds the length."""

from __future__ import annotations

import math

import torch

__all__ = ["rotary"]


def rotary(x: torch.Tensor, start: int = 0, theta: float = 10_000.0) -> torch.Tensor:
    r"""Rotate consecutive feature pairs of ``x`` by angles proportional to the token's position.

    .. math::

        (x_{2j}, x_{2j+1}) \mapsto R(p\,\theta^{-2j/F})\,(x_{2j}, x_{2j+1}), \qquad p = \text{start} + t,

    so that :math:`\langle \mathrm{RoPE}(q)_t, \mathrm{RoPE}(k)_s \rangle` depends on :math:`t - s`
    only (Su et al. 2021, "RoFormer", eq. 34). The angles are formed in float64 and reduced modulo
    :math:`2\pi` before the cast, so that float32 positions in the tens of thousands keep their
    precision and every execution mode sees the same rotation for a position.

    Args:
        x: features, ``(..., T, F)`` with ``F`` even.
        start: position of the first token. Default: 0.
        theta: base of the frequencies. Default: 10000.

    Shape:
        - Output: same as ``x``.
    """
    features = x.shape[-1]
    if features % 2:
        raise ValueError(f"rotary needs an even number of features, got {features}")
    positions = torch.arange(start, start + x.shape[-2], device=x.device, dtype=torch.float64)
    exponents = torch.arange(0, features, 2, device=x.device, dtype=torch.float64) / features
    angles = torch.remainder(positions[:, None] * theta**-exponents, 2 * math.pi).to(x.dtype)
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.unflatten(-1, (features // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
