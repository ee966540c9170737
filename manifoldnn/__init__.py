"""manifoldnn: geometric deep learning on manifolds for PyTorch.

Subpackages, each importing only those listed before it:

================ ================================================================================
linalg           differentiable linear algebra (sign-fixed QR, gap-safe spectral functions,
                 per-dtype tolerances); with ``validation``, ``utils`` and ``datasets`` the bottom
manifolds        geometry: Grassmann for geoopt, an accurate Sphere, Karcher and extrinsic means,
                 the projection metric, one pairwise-geometry class per manifold
losses           losses for manifold-valued representations
fairness         a Riemannian metric stretched along bias gradients
parametrizations orthonormal frames (Stiefel parameter, matrix exponential, Cayley)
optim            geoopt's Riemannian optimisers, resuming exactly
layers           ``nn.Module`` layers on manifold-valued data
models           whole networks (GrNet, MultiViewGrassmannNet)
clustering       scikit-learn-style estimators and clustering metrics
merging          model merging in shared subspaces, and the field's baselines
datasets         multi-view and word2vec loaders (nothing is downloaded)
================ ================================================================================

The names used most are importable from here too (``manifoldnn.Grassmann``, ``manifoldnn.GrNet``,
...); they are loaded on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "manifolds": ("Grassmann", "Sphere", "karcher_mean", "extrinsic_mean", "geometry_for"),
    "layers": (
        "FRMap",
        "ReOrth",
        "ProjMap",
        "ProjPooling",
        "KarcherPool",
        "OrthMap",
        "GeodesicAttention",
        "OrthogonalDirectSum",
    ),
    "models": ("GrNet", "MultiViewGrassmannNet"),
    "losses": ("ProjectionMetricContrastiveLoss", "InfoNCELoss"),
    "fairness": ("FairnessMetric",),
    "parametrizations": ("OrthonormalFrame",),
    "clustering": ("GrassmannKMeans",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'manifoldnn' has no attribute {name!r}")
