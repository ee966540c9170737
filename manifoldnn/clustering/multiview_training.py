"""Training steps of :class:`~manifoldnn.clustering.MultiViewSubspaceClustering`.

The contrastive epochs, the view weights, the neighbour-consistency filter and the self-labelling
rounds, as functions of explicit arguments; the estimator holds the hyper-parameters and calls
them in order, and they serve any :class:`~manifoldnn.models.MultiViewGrassmannNet` trained by
hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import geoopt
import numpy as np
import torch

from ..losses import ClusterContrastiveLoss, ProjectionMetricContrastiveLoss
from ..models import MultiViewGrassmannNet, MultiViewOutput, fuse_subspaces
from .spectral import projection_affinity

__all__ = [
    "view_agreement_weights",
    "FusedOutputs",
    "fused_outputs",
    "confident_samples",
    "contrastive_epochs",
    "self_label",
    "self_label_rounds",
]


def _progress_bar(iterable: Iterable, verbose: bool, description: str):
    """A tqdm bar over ``iterable`` when ``verbose``, else the iterable itself."""
    if not verbose:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=description)


def view_agreement_weights(
    subspaces: torch.Tensor, temperature: float, iterations: int = 3
) -> torch.Tensor:
    r"""Unsupervised view weights ``(V,)`` from each view's agreement with the fused subspaces.

    .. math::
        a_v = \frac1{Np} \sum_i \|Z_i^{v\top} F_i\|_F^2, \qquad w = \operatorname{softmax}(a / T),

    with :math:`F` the view-weighted extrinsic mean (:func:`~manifoldnn.layers.fuse_subspaces`),
    re-fused and re-scored ``iterations`` times from uniform weights: the auto-weighting of
    multi-view graph learning (Nie, Li & Li, IJCAI 2016, Sec. 3), with a softmax in place of their
    inverse-square-root rule. ``subspaces`` ``(V, N, m, p)``.
    """
    num_views, rank = subspaces.shape[0], subspaces.shape[-1]
    weights = torch.full(
        (num_views,), 1.0 / num_views, dtype=subspaces.dtype, device=subspaces.device
    )
    for _ in range(iterations):
        fused = fuse_subspaces(subspaces, weights)
        agreement = (subspaces.transpose(-1, -2) @ fused).pow(2).sum((-2, -1)).mean(-1) / rank
        weights = torch.softmax(agreement / temperature, 0)
    return weights


class FusedOutputs(NamedTuple):
    """A network's outputs in eval mode, its view weights ``(V,)`` and fused subspaces
    ``(N, m, p)`` (float64)."""

    outputs: MultiViewOutput
    view_weights: torch.Tensor
    fused: torch.Tensor


def fused_outputs(
    model: MultiViewGrassmannNet, views: Sequence[torch.Tensor], view_temperature: float
) -> FusedOutputs:
    """Evaluate ``model`` (eval mode, no gradient; it is left in training mode) and fuse the views
    of each sample with the view weights of :func:`view_agreement_weights`."""
    model.eval()
    with torch.no_grad():
        out = model(views)
    model.train()
    subspaces = out.subspaces.double()
    weights = view_agreement_weights(subspaces, view_temperature)
    return FusedOutputs(out, weights, fuse_subspaces(subspaces, weights))


def confident_samples(
    subspaces: torch.Tensor,
    labels: np.ndarray,
    k: int,
    threshold: float,
    *,
    balanced: bool = False,
) -> np.ndarray:
    r"""Bool ``(N,)``: the samples whose nearest neighbours carry their label.

    Sample i of cluster c is confident when at least ``threshold`` of its
    :math:`k_i = \min(k, n_c - 1)` nearest neighbours (projection kernel of ``subspaces``
    ``(N, m, p)``, or the mean kernel of an ensemble ``(R, N, m, p)``) carry its label: the
    neighbour-consistency filter of SCAN (Van Gansbeke et al., ECCV 2020, Sec. 3.2), with k capped
    by the number of other members of the cluster so that a cluster of at most k samples can be
    confident at all (a sample of a cluster of 7 has only 6 neighbours that can share its label).
    A singleton cluster has no such neighbour and agreement 0.

    With ``balanced``, a cluster c of which no sample passes the threshold keeps its
    :math:`\lceil q\, n_c \rceil` most consistent members (highest neighbour agreement, ties by
    index), q the overall confident share: the per-class selection of class-balanced self-training
    (CBST, Zou et al., ECCV 2018, Sec. 3.2) applied where the threshold leaves a cluster without
    targets, so that self-labelling cannot drop a cluster for want of them; clusters that have
    confident samples are left as the threshold makes them.

    Args:
        subspaces: ``(N, m, p)`` or ``(R, N, m, p)`` orthonormal bases.
        labels: ``(N,)`` integer clusters.
        k: neighbours looked at (before the cap).
        threshold: share of them that must carry the label, in (0, 1].
        balanced: give a cluster without confident samples its most consistent members.
            Default: ``False``.
    """
    labels = np.asarray(labels)
    affinity = projection_affinity(subspaces, n_neighbors=None)
    order = np.argsort(-affinity, axis=1, kind="stable")[:, :k]
    _, cluster, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    looked = np.minimum(order.shape[1], sizes[cluster] - 1)  # k_i
    within = np.arange(order.shape[1]) < looked[:, None]
    agreeing = ((labels[order] == labels[:, None]) & within).sum(1)
    agreement = agreeing / np.maximum(looked, 1)
    confident = agreement >= threshold
    if balanced and confident.any():
        share = confident.mean()
        for c, size in enumerate(sizes):
            members = np.flatnonzero(cluster == c)
            wanted = int(np.ceil(share * size))
            if not confident[members].any():
                best = members[np.argsort(-agreement[members], kind="stable")[:wanted]]
                confident[best] = True
    return confident


def contrastive_epochs(
    model: MultiViewGrassmannNet,
    views: Sequence[torch.Tensor],
    positives: torch.Tensor | None,
    *,
    epochs: int,
    batch_size: int,
    temperature: float,
    cluster_temperature: float,
    cluster_weight: float,
    reweight_views: bool,
    warmup: int,
    view_temperature: float,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
    verbose: bool = False,
    description: str = "training",
) -> list[float]:
    """Mini-batch training on the projection-metric InfoNCE across views plus ``cluster_weight``
    times the cluster-level contrastive loss; returns the mean loss of each epoch.

    ``positives`` (bool ``(N, N)`` on the CPU, or ``None``) adds positive pairs to the InfoNCE.
    With ``reweight_views``, from epoch ``warmup`` on and every 10 epochs, the view pairs of the
    InfoNCE are weighted by :func:`view_agreement_weights`. Batches are drawn from ``generator``;
    the last incomplete batch of an epoch is dropped.
    """
    instance = ProjectionMetricContrastiveLoss(temperature)
    cluster = ClusterContrastiveLoss(cluster_temperature)
    device = views[0].device
    n = views[0].shape[0]
    batch = min(batch_size, n)
    history: list[float] = []
    weights = None
    bar = _progress_bar(range(epochs), verbose, description)
    for epoch in bar:
        if reweight_views and epoch >= warmup and (epoch - warmup) % 10 == 0:
            model.eval()
            with torch.no_grad():
                subspaces = model(views).subspaces.double()
            model.train()
            weights = view_agreement_weights(subspaces, view_temperature).to(views[0].dtype)
        order = torch.randperm(n, generator=generator)
        total, steps = 0.0, 0
        for start in range(0, n - batch + 1, batch):
            index = order[start : start + batch]
            out = model([v[index.to(device)] for v in views])
            mask = positives[index][:, index].to(device) if positives is not None else None
            loss = instance(out.subspaces, mask, weights)
            loss = loss + cluster_weight * cluster(out.probabilities)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, steps = total + loss.item(), steps + 1
        history.append(total / steps)
        if verbose:
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history


def self_label(
    model: MultiViewGrassmannNet,
    views: Sequence[torch.Tensor],
    labels: np.ndarray,
    confident: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    verbose: bool = False,
    description: str = "self-labelling",
) -> None:
    """Self-labelling (SCAN, Van Gansbeke et al., ECCV 2020, Sec. 3.3): fine-tune the whole network
    with the cross-entropy between every view's head output and ``labels``, on the ``confident``
    samples only (bool ``(N,)``); the model is left in eval mode.

    RiemannianAdam at ``lr`` keeps the FRMap weight on the Stiefel manifold; mini-batches of fewer
    than two samples are skipped (batch normalisation needs two).
    """
    device = views[0].device
    target = torch.as_tensor(labels, device=device)
    index = torch.as_tensor(np.flatnonzero(confident))
    optimiser = geoopt.optim.RiemannianAdam(model.parameters(), lr=lr)
    batch = min(batch_size, len(index))
    model.train()
    loss = None
    bar = _progress_bar(range(epochs), verbose, description)
    for _ in bar:
        order = index[torch.randperm(len(index), generator=generator)]
        for start in range(0, len(order), batch):
            chosen = order[start : start + batch].to(device)
            if len(chosen) < 2:
                continue
            probabilities = model([v[chosen] for v in views]).probabilities  # (V, B, K)
            log_probabilities = probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()
            loss = torch.nn.functional.nll_loss(
                log_probabilities.flatten(0, 1), target[chosen].repeat(len(views))
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if verbose and loss is not None:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()


def self_label_rounds(
    models: Sequence[MultiViewGrassmannNet],
    views: Sequence[torch.Tensor],
    labels: np.ndarray,
    confident: np.ndarray,
    *,
    rounds: int,
    epochs: int,
    batch_size: int,
    lr: float,
    neighbors: int,
    confidence: float,
    view_temperature: float,
    seeds: Sequence[int],
    balanced: bool = False,
    verbose: bool = False,
) -> np.ndarray:
    """``rounds`` rounds of :func:`self_label` of every model; returns the final clusters ``(N,)``.

    Round 1 trains on ``labels`` of the ``confident`` samples. Every round ends with new clusters,
    the argmax of the heads' probabilities averaged over models and views; a later round trains on
    those, with the confident samples recomputed (:func:`confident_samples`) on the fused subspaces
    of the fine-tuned models (the re-labelling rounds of self-training, Xie et al., CVPR 2020,
    with neighbour consistency as the filter). Model r draws its mini-batches from one generator
    seeded ``seeds[r]``. Stops early when fewer than two samples are confident. ``balanced`` is
    passed to :func:`confident_samples`.
    """
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    for round_index in range(rounds):
        if round_index > 0:
            fused = [fused_outputs(model, views, view_temperature).fused for model in models]
            ensemble = torch.stack(fused) if len(models) > 1 else fused[0]
            confident = confident_samples(
                ensemble, labels, neighbors, confidence, balanced=balanced
            )
        if confident.sum() < 2:
            break
        mean_probabilities = 0.0
        for restart, (model, generator) in enumerate(zip(models, generators)):
            self_label(
                model, views, labels, confident, epochs=epochs, batch_size=batch_size, lr=lr,
                generator=generator, verbose=verbose,
                description=f"self-labelling {round_index + 1}/{rounds}, restart {restart + 1}",
            )  # fmt: skip
            with torch.no_grad():
                mean_probabilities = mean_probabilities + model(views).probabilities.mean(0)
        labels = mean_probabilities.argmax(-1).cpu().numpy()
    return labels
