r"""Symmetric InfoNCE alignment loss with in-batch negatives.

For paired embeddings :math:`z^a_i, z^b_i` (i = 1..N) and similarities
:math:`s_{ij} = \langle \hat z^a_i, \hat z^b_j \rangle / \tau` (cosine when normalised),

.. math::

    \mathcal{L} = \frac{1}{2N} \sum_i \Big[
        -\log \frac{e^{s_{ii}}}{\sum_j e^{s_{ij}}} - \log \frac{e^{s_{ii}}}{\sum_j e^{s_{ji}}} \Big],

the InfoNCE bound of van den Oord, Li, Vinyals 2018 ("Representation learning with contrastive
predictive coding", eq. 4) taken in both directions as in Radford et al. 2021 (CLIP, fig. 3).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_choice, check_positive_float

__all__ = ["info_nce_loss", "InfoNCELoss"]

Reduction = Literal["mean", "sum", "none"]


def info_nce_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    temperature: float | torch.Tensor = 0.1,
    *,
    normalize: bool = True,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of ``z_a`` and ``z_b``.

    Args:
        z_a: paired embeddings ``(..., N, d)``: row i of ``z_a`` is the positive of row i of
            ``z_b``, the other N - 1 rows are negatives; leading dims are independent batches.
        z_b: paired embeddings ``(..., N, d)``.
        temperature: positive scalar tau (float or 0-dim tensor, may require grad). Default: ``0.1``.
        normalize: L2-normalise rows first (cosine similarity), as in CLIP. Default: ``True``.
        reduction: ``"mean"`` (over pairs and leading dims), ``"sum"`` or ``"none"`` (per-pair
            losses ``(..., N)``, each the mean of its two directions). Default: ``"mean"``.

    Returns:
        A scalar, or ``(..., N)`` for ``reduction="none"``.

    Shape:
        ``(..., N, d), (..., N, d) -> ()`` (``(..., N)`` with ``reduction="none"``).
    """
    if not isinstance(z_a, torch.Tensor) or not isinstance(z_b, torch.Tensor):
        raise ValueError("z_a and z_b must be tensors")
    if z_a.dim() < 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"z_a and z_b must have the same shape (..., N, d), got {tuple(z_a.shape)} and "
            f"{tuple(z_b.shape)}"
        )
    if z_a.shape[-2] < 2:
        raise ValueError(
            f"InfoNCE needs N >= 2 pairs for in-batch negatives, got N={z_a.shape[-2]}"
        )
    if not z_a.is_floating_point() or z_a.dtype != z_b.dtype:
        raise ValueError(f"z_a and z_b must share a floating dtype, got {z_a.dtype}, {z_b.dtype}")
    if isinstance(temperature, torch.Tensor):
        if temperature.dim() != 0:
            raise ValueError(f"temperature must be a scalar, got shape {tuple(temperature.shape)}")
        # a tensor's sign is checked in eager mode only (reading it synchronises the device)
        if not torch.compiler.is_compiling() and not bool(temperature > 0):
            raise ValueError(f"temperature must be positive, got {temperature}")
    else:
        check_positive_float(temperature, "temperature")
    temperature = torch.as_tensor(temperature, dtype=z_a.dtype, device=z_a.device)
    check_choice(reduction, "reduction", ("mean", "sum", "none"))
    if normalize:
        z_a = F.normalize(z_a, dim=-1)
        z_b = F.normalize(z_b, dim=-1)
    logits = z_a @ z_b.transpose(-1, -2) / temperature
    positives = torch.diagonal(logits, dim1=-2, dim2=-1)
    a_to_b = torch.logsumexp(logits, dim=-1) - positives
    b_to_a = torch.logsumexp(logits, dim=-2) - positives
    per_pair = 0.5 * (a_to_b + b_to_a)
    if reduction == "none":
        return per_pair
    return per_pair.mean() if reduction == "mean" else per_pair.sum()


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce_loss` with a fixed or learnable temperature.

    Args:
        temperature: initial tau > 0. Default: ``0.1``.
        learnable_temperature: learn ``log tau`` (CLIP, Radford et al. 2021, sec. 2.5).
            Default: ``False``.
        normalize: as in :func:`info_nce_loss`. Default: ``True``.
        reduction: as in :func:`info_nce_loss`. Default: ``"mean"``.
        device: device of the (log-)temperature. Default: ``None``.
        dtype: dtype of the (log-)temperature. Default: ``None``.

    Shape:
        ``forward(z_a (..., N, d), z_b (..., N, d))`` returns a scalar (``(..., N)`` with
        ``reduction="none"``).
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        learnable_temperature: bool = False,
        normalize: bool = True,
        reduction: Reduction = "mean",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        temperature = check_positive_float(temperature, "temperature")
        log_tau = torch.log(torch.tensor(float(temperature), device=device, dtype=dtype))
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau)
        self.normalize, self.reduction = normalize, reduction

    @property
    def temperature(self) -> torch.Tensor:
        """Current tau (0-dim tensor)."""
        return self.log_temperature.exp()

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """Loss for paired ``z_a``, ``z_b`` ``(..., N, d)``."""
        return info_nce_loss(
            z_a,
            z_b,
            self.temperature.to(z_a.dtype),
            normalize=self.normalize,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.4g}, normalize={self.normalize}"
