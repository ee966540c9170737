"""manifoldnn: geometric deep learning on manifolds for PyTorch.

Layering. Each subpackage imports only those on the levels below it (``tests/test_architecture.py``
checks this), and none imports another's private names:

================ ================================================================================
level 0          ``validation`` (argument checks, deprecation aliases)
level 1          ``linalg`` (sign-fixed QR, gap-safe spectral functions, per-dtype tolerances),
                 ``utils`` (optional dependencies, the estimator contract, threads,
                 paired-representation metrics)
level 2          ``datasets`` (loaders; nothing is downloaded); ``manifolds``: Grassmann and an
                 accurate Sphere for geoopt, the Karcher and extrinsic means, the projection
                 metric, one ``ManifoldGeometry`` class per manifold
level 3          ``losses``, ``fairness`` (a metric stretched along bias gradients, debiasing),
                 ``parametrizations`` (orthonormal frames), ``optim`` (geoopt's Riemannian
                 optimisers, resuming exactly)
level 4          ``layers``: ``nn.Module`` layers on manifold-valued data, attention, fusion
level 5          ``models``: whole networks (GrNet, BDH, GPT, FusedStreamLM, ...)
level 6          ``clustering``, ``merging``: scikit-learn-style estimators, model merging;
                 ``embedding``: hierarchies embedded in hyperbolic space
================ ================================================================================

Sizes. One vocabulary for every layer and model: a width is ``*_size``, a count is ``num_*``.

- ``in_size``, ``out_size``: the size a layer maps from / to: the ambient size n of matrix points
  (n x p frames, n x n SPD matrices or projectors), the width of vector points;
- ``ambient_size``: the ambient size n of a point that is held rather than mapped (an
  ``OrthonormalFrame`` of n x p);
- ``rank``: the number p of columns of a frame, i.e. the dimension of a subspace;
- ``num_heads``, ``head_size`` (a head's ``out_size``), ``num_kv_heads``;
- ``dim``: the width of the token vectors in a sequence model's residual stream (GPT, BDH,
  FusedStreamLM), where in and out widths are equal;
- the widths of two modalities, ``text_size`` and ``code_size`` (fusion);
- ``num_classes``, ``num_layers``, ``num_neurons`` (BDH), ``num_codebooks``, ``vocab_size``;
- estimators keep scikit-learn's names: ``n_clusters``, ``n_components``, ``max_iter``, ``tol``,
  ``random_state``, ``verbose``.

Models take their few size arguments positionally and every option as a keyword; layers take
``device=None, dtype=None``.

Dependencies. The core install (torch, geoopt, numpy, scipy, scikit-learn, tqdm) imports every
subpackage; a feature that needs more imports it when used and names the extra that installs it
(``pip install "manifoldnn[speech]"``; see :mod:`manifoldnn.utils.optional`).

The names used most are importable from here too (``manifoldnn.Grassmann``, ``manifoldnn.GrNet``,
...); they are loaded on first use. Documentation: ``docs/`` (``mkdocs serve``).
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
