r"""Multi-view clustering on the Grassmannian, as a scikit-learn-style estimator.

Each view of a sample is encoded as a point of Gr(n, p); a Grassmann block shared by the views
(FRMap -> ReOrth) maps it to Gr(m, p) and a cluster head reads its projector
(:class:`~manifoldnn.models.MultiViewGrassmannNet`, the DGMVCL architecture). The network is
trained with the projection-metric InfoNCE across views and a cluster-level contrastive loss
(DGMVCL, Electronic Research Archive 2024), the views are fused per sample (view-weighted
extrinsic mean), several training restarts are combined by spectral clustering of their mean
projection kernel, and the clusters are refined by self-labelling on the confident samples (SCAN,
Van Gansbeke et al., ECCV 2020). The reported clusters are chosen without labels among the
self-labelled clusters, the consensus and spectral clustering of the input views, by their
modularity on the views' neighbour graphs (:func:`select_partition`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import geoopt
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin

from ..models import MultiViewGrassmannNet
from ..utils.estimators import store_parameters, torch_seed, validate_parameters
from ..validation import (
    check_bool,
    check_choice,
    check_in_range,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    int_at_least,
    optional,
    renamed_arguments,
)
from .multiview_training import (
    confident_samples,
    contrastive_epochs,
    fused_outputs,
    self_label_rounds,
)
from .preprocessing import as_numpy_views, mutual_neighbor_graph, preprocess_views
from .selection import multiview_knn_graph, select_partition
from .spectral import GrassmannSpectralClustering, spectral_clustering_of_views

__all__ = ["MultiViewSubspaceClustering", "auto_restarts"]


def auto_restarts(n_samples: int, sample_budget: int = 6000, most: int = 5) -> int:
    r"""Training restarts whose projection kernels are averaged:
    :math:`\min(\text{most}, \max(1, \lfloor \text{sample\_budget} / N \rfloor))`.

    As many restarts as fit a budget of about ``sample_budget`` training samples (N times the
    restarts), so the run time stays bounded: 5 up to 1,200 samples, 3 at 2,000, one from 3,001 on.
    The rule looks at the sample count only, never at labels.

    Args:
        n_samples: N.
        sample_budget: N times the restarts, at most. Default: 6000.
        most: the largest number of restarts. Default: 5.
    """
    return min(most, max(1, sample_budget // max(n_samples, 1)))


def _check_widths(value: object, name: str) -> Sequence[int]:
    """``value`` if it is a sequence of positive ints (hidden widths); else a ``ValueError``."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}")
    for width in value:
        check_positive_int(width, f"{name} entries")
    return value


class MultiViewSubspaceClustering(ClusterMixin, BaseEstimator):
    r"""Multi-view clustering by projection-metric contrastive learning on the Grassmannian.

    Every view :math:`x^v_i` of sample i is encoded as a subspace :math:`Z^v_i \in` Gr(m, p) by
    :class:`~manifoldnn.models.MultiViewGrassmannNet`, trained (RiemannianAdam) on

    .. math::
        \mathcal L = \mathcal L_{\mathrm{InfoNCE}}\big(k(Z^u_i, Z^v_j) / \tau\big)
            + \lambda\, \mathcal L_{\mathrm{cluster}}, \qquad
        k(X, Y) = \|X^\top Y\|_F^2 ,

    the projection-metric InfoNCE across views (positives: the same sample in the other views and
    its mutual ``neighbors`` nearest neighbours in the input space; view pairs weighted by view
    agreement after ``warmup`` epochs) plus the cluster-level contrastive loss of the heads
    (DGMVCL, ERA 2024, eq. 10, :class:`~manifoldnn.losses.ProjectionMetricContrastiveLoss`; Li et
    al., AAAI 2021, :class:`~manifoldnn.losses.ClusterContrastiveLoss`). The views of a sample are fused into
    the view-weighted extrinsic mean :math:`F_i` (top-p eigenvectors of
    :math:`\sum_v w_v Z^v_i Z^{v\top}_i`, Chikuse 2003, Sec. 8.2; weights from each view's agreement
    with :math:`F`, Nie, Li & Li, IJCAI 2016). ``restarts`` networks (seeds ``random_state + 1000
    r``) are trained and the mean projection kernel of their fused subspaces is clustered
    spectrally (:class:`GrassmannSpectralClustering`, ``assign_labels="cluster_qr"``): the
    consensus clusters. Finally every network is fine-tuned ``self_label_rounds`` times for
    ``self_label_epochs`` epochs with the cross-entropy of its heads on the labels of the
    confident samples (at least ``confidence`` of their ``neighbors`` nearest neighbours share
    their label), and every sample takes the argmax of the heads' mean probabilities (SCAN, Van
    Gansbeke et al., ECCV 2020, Secs. 3.2-3.3; later rounds re-label from the previous round; a
    cluster without a confident sample keeps its most consistent members, :func:`confident_samples`
    with ``balanced``, after CBST, Zou et al., ECCV 2018). With ``select``, the reported clusters are the best of three
    candidates, the self-labelled clusters, the consensus and spectral clustering of the
    concatenated input views (their symmetric ``neighbors``-NN graph, scikit-learn's
    ``SpectralClustering``), by their modularity on the mean of the views' own ``neighbors``-NN
    graphs (:func:`~manifoldnn.clustering.multiview_knn_graph`,
    :func:`~manifoldnn.clustering.select_partition`): the partition that agrees best with the
    neighbourhoods of every view; a candidate that leaves some of the K clusters empty is set
    aside. No label is used anywhere; the method is transductive (no ``predict``), like
    scikit-learn's ``SpectralClustering``.

    Args:
        n_clusters: number of clusters K (>= 2). Default: 10.
        epochs: contrastive training epochs per restart. Default: 150.
        batch_size: mini-batch size (>= 2; the last incomplete batch is dropped). Default: 500.
        lr: RiemannianAdam learning rate (training and self-labelling). Default: 2e-3.
        hidden: hidden widths of each view's encoder. Default: ``(64,)``.
        ambient_size: n of the per-view Gr(n, p). Default: 24.
        rank: p, the subspace dimension. Default: 4.
        projected_size: m after the shared FRMap (``rank <= projected_size <= ambient_size``).
            Default: 10.
        temperature: InfoNCE temperature :math:`\tau`. Default: 0.5.
        cluster_temperature: temperature of the cluster-level loss. Default: 1.0.
        cluster_weight: :math:`\lambda`. Default: 1.0.
        reweight_views: weight view pairs by view agreement after ``warmup`` epochs (re-computed
            every 10 epochs). Default: ``True``.
        warmup: epochs before the first view weighting. Default: 20.
        restarts: trainings combined in the consensus; ``None``: :func:`auto_restarts` of the
            sample count. Default: ``None``.
        confidence: share of the ``neighbors`` nearest neighbours that must carry a sample's
            label for it to be confident, in (0, 1]. Default: 0.9.
        self_label_epochs: epochs of each self-labelling round; 0 keeps the consensus clusters.
            Default: 20.
        self_label_rounds: rounds of self-labelling; 0 keeps the consensus clusters. Default: 3.
        view_temperature: softmax temperature of the view weights. Default: 0.02.
        neighbors: k of the mutual-kNN positives, the spectral affinity and the confidence
            filter (``1 <= neighbors < n_samples``). Default: 10.
        neighbor_positives: add the input-space mutual neighbours as positives. Default: ``True``.
        preprocess: apply :func:`preprocess_views` to the views first. Default: ``True``.
        select: choose the reported clusters among the candidates (above); ``False`` reports the
            self-labelled clusters (the consensus when no round ran). Default: ``True``.
        random_state: seed of restart 0 (restart r uses ``seed + 1000 r``): an int, ``None`` (a
            fresh one) or a ``numpy.random.RandomState`` to draw it from. The caller's global torch RNG state is left unchanged.
            Default: 0.
        device: torch device of the networks (``None``: CPU). Default: ``None``.
        dtype: ``torch.float32`` or ``torch.float64`` (``None``: float32). Default: ``None``.
        verbose: show tqdm bars over the epochs of each restart and round. Default: ``False``.

    Attributes:
        labels_: ``(N,)`` int64 reported clusters, ``candidate_labels_[chosen_]``.
        chosen_: the name of the reported candidate: ``"self_labelled"``, ``"consensus"`` or
            ``"input_spectral"``.
        candidate_labels_: dict name -> ``(N,)`` int64 labels of every candidate computed
            (``"input_spectral"`` only with ``select``).
        selection_scores_: dict name -> summed relative modularity (empty without ``select``).
        consensus_labels_: ``(N,)`` int64 spectral clusters of the restarts' mean kernel.
        confident_: ``(N,)`` bool, the confident samples of the consensus.
        subspaces_: ``(R, N, m, p)`` float64 fused subspaces of each restart after the contrastive
            training (before self-labelling).
        view_weights_: ``(R, V)`` float64 view weights of each restart (same time; V = 2 for one
            view and its copy).
        head_labels_: ``(R, N)`` int64 argmax of each restart's heads (same time).
        models_: the R trained :class:`~manifoldnn.models.MultiViewGrassmannNet` (after
            self-labelling), in eval mode.
        loss_curve_: for each restart, the mean contrastive loss of every epoch.
        n_restarts_: R.
        n_views_: V as given.
        self_labelled_: whether self-labelling ran.
        seed_: the seed of restart 0 (``random_state``, or the one drawn for ``None``).

    Shape:
        ``fit(views)``: a list of V arrays ``(N, d_v)`` (NumPy or torch; images ``(N, H, W)`` or
        ``(N, C, H, W)`` are flattened). One view is contrasted with a copy of itself.

    Examples::

        >>> from manifoldnn.datasets import load_digits_views
        >>> data = load_digits_views()
        >>> model = MultiViewSubspaceClustering(n_clusters=10, epochs=30, restarts=1)
        >>> labels = model.fit_predict(data.views)  # doctest: +SKIP
        >>> labels.shape, model.subspaces_.shape  # doctest: +SKIP
        ((1797,), torch.Size([1, 1797, 10, 4]))
    """

    _parameter_checks = {
        "n_clusters": int_at_least(2),
        **dict.fromkeys(
            ("epochs", "batch_size", "ambient_size", "rank", "projected_size"),
            check_positive_int,
        ),
        **dict.fromkeys(
            ("warmup", "self_label_epochs", "self_label_rounds"), check_nonnegative_int
        ),
        "neighbors": check_positive_int,
        "restarts": optional(check_positive_int),
        **dict.fromkeys(
            ("lr", "temperature", "cluster_temperature", "view_temperature"), check_positive_float
        ),
        "cluster_weight": check_nonnegative_float,
        "confidence": functools.partial(check_in_range, low=0, high=1, low_open=True),
        "hidden": _check_widths,
        **dict.fromkeys(
            ("reweight_views", "neighbor_positives", "preprocess", "select", "verbose"), check_bool
        ),
        "dtype": optional(functools.partial(check_choice, choices=(torch.float32, torch.float64))),
    }

    @renamed_arguments(ambient_dim="ambient_size", projected_dim="projected_size")
    def __init__(
        self,
        n_clusters: int = 10,
        *,
        epochs: int = 150,
        batch_size: int = 500,
        lr: float = 2e-3,
        hidden: Sequence[int] = (64,),
        ambient_size: int = 24,
        rank: int = 4,
        projected_size: int = 10,
        temperature: float = 0.5,
        cluster_temperature: float = 1.0,
        cluster_weight: float = 1.0,
        reweight_views: bool = True,
        warmup: int = 20,
        restarts: int | None = None,
        confidence: float = 0.9,
        self_label_epochs: int = 20,
        self_label_rounds: int = 3,
        view_temperature: float = 0.02,
        neighbors: int = 10,
        neighbor_positives: bool = True,
        preprocess: bool = True,
        select: bool = True,
        random_state: int | np.random.RandomState | None = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        verbose: bool = False,
    ) -> None:
        store_parameters(self, locals())

    def _validate_params(self) -> None:
        validate_parameters(self, self._parameter_checks)
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 (batch normalisation), got {self.batch_size!r}"
            )
        if not self.rank <= self.projected_size <= self.ambient_size:
            raise ValueError(
                "rank, projected_size and ambient_size must satisfy rank <= projected_size <= "
                f"ambient_size, got rank={self.rank}, projected_size={self.projected_size}, "
                f"ambient_size={self.ambient_size}"
            )

    def fit(self, views: Sequence, y=None) -> MultiViewSubspaceClustering:
        """Train the networks on ``views`` and cluster the samples; returns ``self``.

        Args:
            views: list of V arrays ``(N, d_v)`` (NumPy or torch), the same N samples in the same
                order in every view.
            y: ignored (scikit-learn convention).
        """
        self._validate_params()
        arrays = as_numpy_views(views)
        n_samples = arrays[0].shape[0]
        if self.n_clusters > n_samples:
            raise ValueError(
                f"n_clusters={self.n_clusters} exceeds the number of samples n_samples={n_samples}"
            )
        if self.neighbors >= n_samples:
            raise ValueError(
                f"neighbors must be below the number of samples ({n_samples}), got {self.neighbors}"
            )
        try:
            device = torch.device("cpu" if self.device is None else self.device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"device: {error}") from error
        dtype = torch.float32 if self.dtype is None else self.dtype
        numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype
        if self.preprocess:
            arrays = preprocess_views(arrays, dtype=numpy_dtype)
        else:
            arrays = [np.asarray(a, dtype=numpy_dtype) for a in arrays]
        seed = torch_seed(self.random_state)

        positives = None
        if self.neighbor_positives:
            positives = torch.as_tensor(mutual_neighbor_graph(np.hstack(arrays), self.neighbors))
        model_views = arrays if len(arrays) > 1 else arrays * 2  # one view: contrast with itself
        tensors = [torch.as_tensor(v, device=device) for v in model_views]
        restarts = self.restarts if self.restarts is not None else auto_restarts(n_samples)
        seeds = [seed + 1000 * r for r in range(restarts)]

        models, histories, fused, weights, heads = [], [], [], [], []
        consensus = None
        rng_devices = [] if device.type == "cpu" else [device]
        with torch.random.fork_rng(devices=rng_devices, device_type=device.type):
            for restart, restart_seed in enumerate(seeds):
                torch.manual_seed(restart_seed)  # the network's initialisation
                model = MultiViewGrassmannNet(
                    [v.shape[1] for v in model_views],
                    self.n_clusters,
                    hidden=list(self.hidden),
                    in_size=self.ambient_size,
                    rank=self.rank,
                    out_size=self.projected_size,
                ).to(device=device, dtype=dtype)
                optimiser = geoopt.optim.RiemannianAdam(model.parameters(), lr=self.lr)
                histories.append(
                    contrastive_epochs(
                        model, tensors, positives, epochs=self.epochs,
                        batch_size=self.batch_size, temperature=self.temperature,
                        cluster_temperature=self.cluster_temperature,
                        cluster_weight=self.cluster_weight, reweight_views=self.reweight_views,
                        warmup=self.warmup, view_temperature=self.view_temperature,
                        optimiser=optimiser,
                        generator=torch.Generator().manual_seed(restart_seed),
                        verbose=self.verbose,
                        description=f"training, restart {restart + 1}/{restarts}",
                    )
                )  # fmt: skip
                outputs = fused_outputs(model, tensors, self.view_temperature)
                models.append(model)
                fused.append(outputs.fused)
                weights.append(outputs.view_weights)
                heads.append(outputs.outputs.probabilities.mean(0).argmax(-1))
            # one training: its fused subspaces; several: the stack, clustered on the mean kernel
            ensemble = torch.stack(fused) if restarts > 1 else fused[0]
            consensus = GrassmannSpectralClustering(
                self.n_clusters,
                n_neighbors=self.neighbors,
                assign_labels="cluster_qr",
                random_state=seed,
            ).fit_predict(ensemble)
            confident = confident_samples(
                ensemble, consensus, self.neighbors, self.confidence, balanced=True
            )
            self_labelled = self.self_label_epochs > 0 and self.self_label_rounds > 0
            self_labelled = self_labelled and int(confident.sum()) >= 2
            labels = consensus
            if self_labelled:
                labels = self_label_rounds(
                    models, tensors, consensus, confident, rounds=self.self_label_rounds,
                    epochs=self.self_label_epochs, batch_size=self.batch_size, lr=self.lr,
                    neighbors=self.neighbors, confidence=self.confidence,
                    view_temperature=self.view_temperature, seeds=seeds, balanced=True,
                    verbose=self.verbose,
                )  # fmt: skip
        candidates = {"self_labelled": labels} if self_labelled else {}
        candidates["consensus"] = consensus
        chosen, scores = next(iter(candidates)), {}
        if self.select:
            candidates["input_spectral"] = spectral_clustering_of_views(
                arrays, self.n_clusters, self.neighbors, random_state=seed
            )
            graphs = [multiview_knn_graph(arrays, self.neighbors)]
            chosen, scores = select_partition(candidates, graphs, self.n_clusters)
        labels = candidates[chosen]
        for model in models:
            model.eval()

        self.labels_ = np.asarray(labels, dtype=np.int64)
        self.consensus_labels_ = np.asarray(consensus, dtype=np.int64)
        self.confident_ = np.asarray(confident, dtype=bool)
        self.subspaces_ = torch.stack(fused)
        self.view_weights_ = torch.stack(weights).cpu().numpy()
        self.head_labels_ = torch.stack(heads).cpu().numpy().astype(np.int64)
        self.models_ = models
        self.loss_curve_ = histories
        self.n_restarts_ = restarts
        self.self_labelled_ = bool(self_labelled)
        self.chosen_ = chosen
        self.candidate_labels_ = {k: np.asarray(v, dtype=np.int64) for k, v in candidates.items()}
        self.selection_scores_ = scores
        self.seed_ = seed
        self.n_views_ = len(arrays)
        return self
