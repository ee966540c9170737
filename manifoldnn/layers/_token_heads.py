"""The shared frame of the causal token-attention layers (Transformer-VQ, random-feature and ReLU²
attention): the size checks, one fused query/key/value map of ``dim`` into ``num_heads`` heads of
``head_size``, the output map back to ``dim``, and the cache checks."""

from __future__ import annotations

import torch
from torch import nn

from ..validation import check_positive_int, check_positive_ints


class TokenHeads(nn.Module):
    """Base of the causal token-attention layers; subclasses write ``attend(q, k, v, cache)``
    returning ``(output (B, H, T, head_size), cache)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_size: int | None = None,
        *,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_ints(dim=dim, num_heads=num_heads)
        if head_size is None:
            if dim % num_heads:
                raise ValueError(
                    f"num_heads must divide dim when head_size is None, got dim={dim}, "
                    f"num_heads={num_heads}"
                )
            head_size = dim // num_heads
        check_positive_int(head_size, "head_size")
        factory_kwargs = {"device": device, "dtype": dtype}
        self.dim, self.num_heads, self.head_size = dim, num_heads, head_size
        self.qkv = nn.Linear(dim, 3 * num_heads * head_size, bias=bias, **factory_kwargs)
        self.out = nn.Linear(num_heads * head_size, dim, bias=bias, **factory_kwargs)

    def forward(self, x: torch.Tensor, cache=None):
        if x.dim() not in (2, 3) or x.shape[-1] != self.dim:
            raise ValueError(
                f"x must have shape (B, T, {self.dim}) or (T, {self.dim}), got {tuple(x.shape)}"
            )
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        batch, length = x.shape[0], x.shape[1]
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, head_size) each
        out, cache = self.attend(q, k, v, cache)
        out = self.out(out.transpose(1, 2).reshape(batch, length, -1))
        return (out[0] if unbatched else out), cache

    def attend(self, q, k, v, cache):
        raise NotImplementedError

    def check_cache(self, cache, shapes: dict[str, tuple[int, ...]]) -> None:
        """``cache`` must be a tuple of tensors of the ``shapes`` (names for the message)."""
        expected = tuple(shapes.values())
        ok = isinstance(cache, tuple) and len(cache) == len(expected)
        ok = ok and all(
            isinstance(c, torch.Tensor) and tuple(c.shape) == s for c, s in zip(cache, expected)
        )
        if not ok:
            got = (
                tuple(
                    tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
                    for c in cache
                )
                if isinstance(cache, tuple)
                else type(cache).__name__
            )
            described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
            raise ValueError(
                f"cache does not fit this {type(self).__name__} and input (from another "
                f"configuration or batch?): expected ({described}), got {got}"
            )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, head_size={self.head_size}"
