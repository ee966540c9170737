"""Argument checks shared by the public constructors and functions (errors name the argument)."""

from __future__ import annotations

__all__ = ["check_positive_int"]


def check_positive_int(value: object, name: str) -> int:
    """``value`` if it is an ``int >= 1`` (not a bool); otherwise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
