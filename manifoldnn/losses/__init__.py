"""Losses for manifold-valued representations."""

__all__: list[str] = []
