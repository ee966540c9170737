"""Embeddings of hierarchies in hyperbolic space: :class:`HierarchyEmbedding` (Nickel & Kiela 2017,
2018; Poincaré ball, hyperboloid, Euclidean for comparison) and its evaluation by reconstruction
and link prediction (mean rank and MAP)."""

from . import evaluation, hierarchy
from .evaluation import *  # noqa: F403
from .hierarchy import *  # noqa: F403

__all__ = [*hierarchy.__all__, *evaluation.__all__]
