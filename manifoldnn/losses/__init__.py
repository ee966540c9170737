"""Losses for manifold-valued representations."""

__all__: list[str] = []

from .infonce import InfoNCELoss, info_nce_loss  # noqa: E402

__all__ += ["InfoNCELoss", "info_nce_loss"]
