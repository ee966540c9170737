r"""k-means on the Grassmann manifold, in the style of scikit-learn's ``KMeans``.

Points are subspaces given by orthonormal bases ``(N, n, p)``. Assignments use the projection metric
:math:`d^2(X, Y) = p - \|X^\top Y\|_F^2` (Hamm & Lee, ICML 2008, eq. 6). Centres are either

* ``"extrinsic"`` -- the minimiser of the summed squared projection distances, the top-p
  eigenvectors of the mean projector :math:`\frac1{|C|}\sum_{i\in C} Y_i Y_i^\top` (Chikuse 2003,
  "Statistics on special manifolds", Sec. 8.2; Srivastava & Klassen 2002), which makes Lloyd's
  iteration monotone for this objective; or
* ``"karcher"`` -- the Karcher (geodesic) mean of the cluster (Karcher 1977), computed by
  :func:`manifoldnn.manifolds.karcher_mean`, warm-started from the extrinsic mean.

Seeding is k-means++ with the same distance (Arthur & Vassilvitskii, SODA 2007, Sec. 2.2), and the
best of ``n_init`` restarts (lowest inertia, the sum of squared projection distances) is kept. All
restarts run as one batch of torch operations.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from ..linalg import check_orthonormal
from ..manifolds import (
    Grassmann,
    extrinsic_mean,
    karcher_mean,
    mean_projector,
    projection_metric_distance,
    top_eigenspace,
)
from ..manifolds.projection import similarity_rounding
from ..utils.estimators import store_parameters, torch_seed, validate_parameters
from ..validation import check_choice, check_nonnegative_float, check_positive_int

__all__ = ["GrassmannKMeans"]


class GrassmannKMeans(ClusterMixin, BaseEstimator):
    r"""k-means clustering of subspaces (points of Gr(n, p)) with the projection metric.

    Lloyd's iteration on :math:`d^2(X, Y) = p - \|X^\top Y\|_F^2` (Hamm & Lee, ICML 2008, eq. 6)
    with k-means++ seeding (Arthur & Vassilvitskii, SODA 2007); the centres are the extrinsic or the
    Karcher means of the clusters (module docstring).

    Args:
        n_clusters: number of clusters K. Default: ``8``.
        init: ``"k-means++"``, or initial centres ``(K, n, p)`` (orthonormal bases; then one run).
            Default: ``"k-means++"``.
        mean: ``"extrinsic"`` (the exact Lloyd centre for the projection metric) or ``"karcher"``
            (the geodesic mean). Default: ``"extrinsic"``.
        n_init: number of k-means++ restarts; the one with the lowest inertia is kept.
            Default: ``10``.
        max_iter: maximum Lloyd iterations per restart. Default: ``100``.
        tol: stop when the relative decrease of the inertia is below ``tol``. Default: ``1e-6``.
        random_state: seed of the k-means++ draws: ``None``, an int or a
            ``numpy.random.RandomState`` (scikit-learn's convention). Default: ``None``.

    Attributes:
        cluster_centers_: ``(K, n, p)`` tensor, orthonormal bases of the centres (the points'
            device and dtype).
        labels_: ``(N,)`` int64 NumPy array, the cluster of each training point.
        inertia_: sum of squared projection distances of the points to their centres.
        n_iter_: Lloyd iterations run by the kept restart.

    Shape:
        ``fit(points)``, ``predict(points)``: a tensor or array ``(N, n, p)`` of orthonormal bases
        (any floating dtype, any device) -> ``(N,)`` int64 labels.

    Examples::

        >>> import torch
        >>> from manifoldnn.linalg import qr_positive
        >>> points = qr_positive(torch.randn(40, 6, 2, dtype=torch.float64))
        >>> model = GrassmannKMeans(n_clusters=3, random_state=0).fit(points)
        >>> model.labels_.shape, tuple(model.cluster_centers_.shape)
        ((40,), (3, 6, 2))
    """

    _parameter_checks = {
        "n_clusters": check_positive_int,
        "mean": functools.partial(check_choice, choices=("extrinsic", "karcher")),
        "n_init": check_positive_int,
        "max_iter": check_positive_int,
        "tol": check_nonnegative_float,
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | torch.Tensor | np.ndarray = "k-means++",
        mean: Literal["extrinsic", "karcher"] = "extrinsic",
        n_init: int = 10,
        max_iter: int = 100,
        tol: float = 1e-6,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        store_parameters(self, locals())

    # ------------------------------------------------------------------ helpers
    def _validate(self, points) -> torch.Tensor:
        if not isinstance(points, torch.Tensor):
            points = torch.as_tensor(np.asarray(points))
        if points.dim() != 3:
            raise ValueError(
                f"GrassmannKMeans expects points as bases of shape (N, n, p), got "
                f"{tuple(points.shape)}"
            )
        if points.shape[0] == 0:
            raise ValueError("points is empty: GrassmannKMeans needs at least one basis (N >= 1)")
        if not points.is_floating_point():
            points = points.to(torch.get_default_dtype())
        if points.shape[-2] < points.shape[-1]:
            raise ValueError(f"bases must be tall (n >= p), got n, p = {tuple(points.shape[-2:])}")
        if not torch.isfinite(points).all():
            raise ValueError("points contain NaN or infinite values")
        check_orthonormal(points, "points")
        return points

    @staticmethod
    def _squared_distances(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """``points`` ``(N, n, p)``, ``centers`` ``(R, K, n, p)`` -> ``(R, N, K)`` squared
        projection distances ``p - ||X^T C||_F^2`` (Hamm & Lee 2008, eq. 6)."""
        return projection_metric_distance(points.unsqueeze(0), centers, squared=True)

    def _seed(self, points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """k-means++ seeding for ``n_init`` restarts at once -> ``(R, K, n, p)``."""
        num_points = points.shape[0]
        restarts = self.n_init
        first = torch.randint(num_points, (restarts,), generator=generator)
        chosen = [first]
        closest = self._squared_distances(points, points[first][:, None])[..., 0]  # (R, N)
        # squared distances below the rounding of p - ||X^T Y||^2 are coincident points
        floor = similarity_rounding(points.shape[-1], points.dtype)
        for found in range(1, self.n_clusters):
            weights = torch.where(closest > floor, closest, 0.0).double().cpu()
            if bool((weights.sum(-1) == 0).any()):
                raise ValueError(
                    f"points hold only {found} distinct subspace(s) (up to rounding), fewer than "
                    f"n_clusters={self.n_clusters}"
                )
            index = torch.multinomial(weights, 1, generator=generator)[:, 0]
            chosen.append(index)
            new = self._squared_distances(points, points[index.to(points.device)][:, None])[..., 0]
            closest = torch.minimum(closest, new)
        indices = torch.stack(chosen, dim=1).to(points.device)  # (R, K)
        return points[indices]

    def _centres(
        self, points: torch.Tensor, labels: torch.Tensor, old: torch.Tensor
    ) -> torch.Tensor:
        """New centres ``(R, K, n, p)`` from labels ``(R, N)``; empty clusters keep their centre."""
        one_hot = torch.nn.functional.one_hot(labels, self.n_clusters).to(points.dtype)  # (R, N, K)
        counts = one_hot.sum(1)  # (R, K)
        weights = one_hot.transpose(1, 2)  # (R, K, N)
        batch = points.expand(*weights.shape[:2], *points.shape)  # (R, K, N, n, p)
        if self.mean == "extrinsic":
            normalised = weights / counts.clamp_min(1.0)[..., None]
            centres = top_eigenspace(mean_projector(points, normalised), points.shape[-1])
        else:
            safe = torch.where(counts[..., None] > 0, weights, torch.ones_like(weights))
            init = extrinsic_mean(batch, safe)
            centres = karcher_mean(Grassmann(), batch, safe, init=init, check=False)
        return torch.where((counts > 0)[..., None, None], centres, old)

    # -------------------------------------------------------------- public API
    def fit(self, points, y=None) -> GrassmannKMeans:
        """Cluster ``points`` ``(N, n, p)``.

        Args:
            points: orthonormal bases ``(N, n, p)`` (tensor or array).
            y: ignored (scikit-learn's convention).

        Returns:
            ``self``.
        """
        validate_parameters(self, self._parameter_checks)
        points = self._validate(points)
        if self.n_clusters > points.shape[0]:
            raise ValueError(
                f"n_clusters={self.n_clusters} exceeds the number of points {points.shape[0]}"
            )
        generator = torch.Generator().manual_seed(torch_seed(self.random_state))
        with torch.no_grad():
            if isinstance(self.init, str):
                if self.init != "k-means++":
                    raise ValueError(
                        f"init must be 'k-means++' or centres (K, n, p), got {self.init!r}"
                    )
                centres = self._seed(points, generator)
            else:
                centres = self._validate(self.init).to(points.device, points.dtype)
                if centres.shape != (self.n_clusters, *points.shape[1:]):
                    raise ValueError(
                        f"init centres must have shape {(self.n_clusters, *points.shape[1:])}, "
                        f"got {tuple(centres.shape)}"
                    )
                centres = centres[None]
            restarts = centres.shape[0]
            previous = torch.full(
                (restarts,), float("inf"), dtype=points.dtype, device=points.device
            )
            active = torch.ones(restarts, dtype=torch.bool, device=points.device)
            iterations = torch.zeros(restarts, dtype=torch.long)
            for _ in range(self.max_iter):
                distances = self._squared_distances(points, centres)
                closest, labels = distances.min(-1)
                inertia = closest.sum(-1)
                converged = (previous - inertia) <= self.tol * inertia.abs().clamp_min(
                    torch.finfo(points.dtype).tiny
                )
                active = active & ~converged
                if not bool(active.any()):
                    break
                iterations += active.cpu().long()
                previous = torch.where(active, inertia, previous)
                updated = self._centres(points, labels, centres)
                centres = torch.where(active[:, None, None, None], updated, centres)
            distances = self._squared_distances(points, centres)
            closest, labels = distances.min(-1)
            inertia = closest.sum(-1)
            best = int(inertia.argmin())
        self.cluster_centers_ = centres[best]
        self.labels_ = labels[best].cpu().numpy().astype(np.int64)
        self.inertia_ = float(inertia[best])
        self.n_iter_ = int(iterations[best])
        return self

    def predict(self, points) -> np.ndarray:
        """Index of the nearest centre (projection metric) for each of ``points`` ``(N, n, p)``.

        Returns:
            ``(N,)`` int64 NumPy array.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
        """
        check_is_fitted(self, "cluster_centers_")
        points = self._validate(points)
        centres = self.cluster_centers_.to(points.device, points.dtype)
        if points.shape[-2:] != centres.shape[-2:]:
            raise ValueError(
                f"points live in Gr{tuple(points.shape[-2:])}, the centres in Gr{tuple(centres.shape[-2:])}"
            )
        with torch.no_grad():
            distances = self._squared_distances(points, centres[None])[0]
        return distances.argmin(-1).cpu().numpy().astype(np.int64)
