"""Whole networks built from manifoldnn's layers."""

from .grnet import GrNet, ProjectorClassifier
from .multiview import MultiViewGrassmannNet, MultiViewOutput, fuse_subspaces

__all__ = [
    "GrNet",
    "ProjectorClassifier",
    "MultiViewGrassmannNet",
    "MultiViewOutput",
    "fuse_subspaces",
]
