"""Compatibility name: the loaders live in :mod:`manifoldnn.datasets`."""

from .datasets import *  # noqa: F403
from .datasets import __all__  # noqa: F401
