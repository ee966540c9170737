"""Deprecated home of :func:`~manifoldnn.layers.rotary`, which moved to
:mod:`manifoldnn.layers.positions` beside the other token positions; ``manifoldnn.models.rope.rotary``
and ``manifoldnn.models.rotary`` still work for one release, with a ``FutureWarning``."""

from __future__ import annotations

from ..layers.positions import rotary as _rotary
from ..validation import warn_renamed

__all__: list[str] = []


def __getattr__(name: str) -> object:
    if name == "rotary":
        warn_renamed(f"{__name__.rsplit('.', 1)[0]}.rotary", "manifoldnn.layers.rotary")
        return _rotary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
