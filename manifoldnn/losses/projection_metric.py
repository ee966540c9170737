r"""Projection-metric losses for multi-view subspace learning and deep clustering.

* :func:`projection_metric_distance` -- pairwise projection metric between two batches of subspaces,
  :math:`d(Y_1, Y_2) = \|Y_1 Y_1^\top - Y_2 Y_2^\top\|_F / \sqrt 2
  = \sqrt{p - \|Y_1^\top Y_2\|_F^2}` (Hamm & Lee, ICML 2008, "Grassmann discriminant analysis",
  eq. 6; Edelman, Arias & Smith 1998, Sec. 4.3), computed without forming ``n x n`` projectors.
* :class:`ProjectionMetricContrastiveLoss` -- InfoNCE over views (van den Oord et al. 2018, eq. 4)
  with the similarity :math:`-d^2 / \tau` between the subspaces of two views of the samples, the
  instance-level loss of DGMVCL (Electronic Research Archive 2024, eq. 10) and CVCL (ICCV 2023).
* :class:`ClusterContrastiveLoss` -- contrastive loss between the cluster-assignment columns of two
  views with an entropy term against collapse (Li et al., AAAI 2021, "Contrastive clustering",
  eqs. 6-9).
* :class:`DECClusteringLoss` -- self-training KL divergence to a sharpened target distribution
  (Xie, Girshick & Farhadi, ICML 2016, "Unsupervised deep embedding for clustering analysis",
  eqs. 2-3).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..linalg import check_orthonormal
from ..manifolds.projection import (
    cross_products_cheaper,
    projection_metric_distance,
    projection_metric_similarity,
    projector_vectors,
)
from ..validation import check_choice, check_nonnegative_float, check_positive_float

__all__ = [
    "projection_metric_distance",
    "projection_metric_similarity",
    "ProjectionMetricContrastiveLoss",
    "ClusterContrastiveLoss",
    "DECClusteringLoss",
    "dec_target_distribution",
]

Reduction = Literal["mean", "sum", "none"]

# a positives mask with at most this many entries per row (on average) is gathered pair by pair
# in the contrastive loss; denser masks are summed against the full logits
_SPARSE_POSITIVES = 16


def _reduce(per_item: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return per_item
    return per_item.mean() if reduction == "mean" else per_item.sum()


def _check_reduction(reduction: str) -> None:
    check_choice(reduction, "reduction", ("mean", "sum", "none"))


def _check_orthonormal_views(views: torch.Tensor) -> None:
    detached = views.detach()
    if not bool(torch.isfinite(detached).all()):
        raise ValueError("views hold NaN or infinite values")
    check_orthonormal(views, "views")


class ProjectionMetricContrastiveLoss(nn.Module):
    r"""InfoNCE across views with the projection metric as (negative) similarity.

    For views ``a != b`` of N samples with subspaces :math:`Y^a_i` and logits
    :math:`s_{ij} = -d^2(Y^a_i, Y^b_j) / \tau`, the loss of the pair of views is
    :math:`\frac1N \sum_i -\log \frac{e^{s_{ii}}}{\sum_j e^{s_{ij}}}` (van den Oord, Li & Vinyals 2018,
    eq. 4): positives are the same sample seen in another view, negatives the other samples of the
    batch. It is averaged over all ordered pairs of views (any number V >= 2), as the instance-level
    loss of DGMVCL (ERA 2024, eq. 10) with the projection metric of its eq. 4. Because
    :math:`d^2 = p - \|Y_1^\top Y_2\|_F^2`, the logits are, up to a constant that cancels in the
    softmax, the projection-kernel similarities :math:`\|Y^{a\top}_i Y^b_j\|_F^2 / \tau`.

    Args:
        temperature: positive tau. Distances lie in ``[0, p]``; ``tau`` around ``0.1 p`` to
            ``0.5 p`` works for small p. Default: ``0.5``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(V, N)`` per view and sample, each
            averaged over the other views). Default: ``"mean"``.
        validate: in eager mode, raise a ``ValueError`` for views holding NaN/inf or bases that
            are not orthonormal (:func:`manifoldnn.linalg.check_orthonormal`), which would otherwise
            give an infinite or NaN loss. Costs one host synchronisation per call. Default: ``True``.

    With ``positives`` (a bool ``(N, N)`` mask with a true diagonal), the anchor's term becomes the
    mean of :math:`-\log` softmax over all its positives (the multi-positive loss of Khosla et al.,
    NeurIPS 2020, "Supervised contrastive learning", eq. 2, "L_out"), e.g. to add the anchor's
    nearest neighbours in another view as positives.

    With ``view_weights`` :math:`w \in \mathbb R^V_{\ge 0}`, the pair of views (a, b) is weighted by
    :math:`w_a w_b` (normalised so that equal weights give the unweighted loss): views that disagree
    with the others (e.g. rotation-invariant features that cannot tell a 6 from a 9) can be
    down-weighted instead of pulling the other views towards their confusions.

    Shape:
        ``forward(views, positives=None, view_weights=None)`` with ``views`` a tensor
        ``(V, N, n, p)`` or a sequence of V tensors ``(N, n, p)`` of orthonormal bases; returns a
        scalar (or ``(V, N)``).

    Examples::

        >>> import torch
        >>> from manifoldnn.linalg import qr_positive
        >>> views = qr_positive(torch.randn(2, 8, 6, 2))
        >>> ProjectionMetricContrastiveLoss(temperature=0.5)(views).shape
        torch.Size([])
    """

    def __init__(
        self, temperature: float = 0.5, reduction: Reduction = "mean", *, validate: bool = True
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.temperature = check_positive_float(temperature, "temperature")
        self.reduction = reduction
        self.validate = validate

    def forward(
        self,
        views: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...],
        positives: torch.Tensor | None = None,
        view_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not isinstance(views, torch.Tensor):
            shapes = {tuple(v.shape) for v in views}
            if len(shapes) > 1:
                raise ValueError(
                    f"all views must have the same shape (N, n, p), got {sorted(shapes)}"
                )
            views = torch.stack(list(views))
        if views.dim() != 4:
            raise ValueError(f"views must have shape (V, N, n, p), got {tuple(views.shape)}")
        num_views, num_samples = views.shape[:2]
        if num_views < 2:
            raise ValueError(f"the contrastive loss needs at least 2 views, got {num_views}")
        if num_samples < 2:
            raise ValueError(f"in-batch negatives need N >= 2 samples, got {num_samples}")
        if self.validate and not torch.compiler.is_compiling():
            _check_orthonormal_views(views)
        if positives is not None:
            if positives.shape != (num_samples, num_samples) or positives.dtype != torch.bool:
                raise ValueError(
                    f"positives must be a bool mask ({num_samples}, {num_samples}), got "
                    f"{tuple(positives.shape)} {positives.dtype}"
                )
            if not bool(positives.diagonal().all()):
                raise ValueError(
                    "positives must contain the diagonal (a sample is its own positive)"
                )
            positives = positives.to(views.device)
        first, second = torch.triu_indices(num_views, num_views, 1, device=views.device)
        forward_term, backward_term = self._log_probabilities(views, first, second, positives)
        if view_weights is None:
            pair_weight = torch.full_like(first, 1.0, dtype=views.dtype) / (num_views - 1)
        else:
            view_weights = torch.as_tensor(view_weights, dtype=views.dtype, device=views.device)
            if view_weights.shape != (num_views,) or not bool((view_weights >= 0).all()):
                raise ValueError(
                    f"view_weights must be {num_views} non-negative numbers, got "
                    f"{tuple(view_weights.shape)}"
                )
            products = view_weights[first] * view_weights[second]
            if not bool(products.sum() > 0):
                raise ValueError("view_weights must give at least one pair of views a weight > 0")
            # normalised so that uniform weights give 1 / (V - 1), the unweighted loss
            pair_weight = products / products.sum() * num_views / 2
        pair_weight = pair_weight[:, None]
        per_sample = torch.zeros(num_views, num_samples, dtype=views.dtype, device=views.device)
        per_sample = per_sample.index_add(0, first, -forward_term * pair_weight).index_add(
            0, second, -backward_term * pair_weight
        )
        return _reduce(per_sample, self.reduction)

    def _log_probabilities(
        self,
        views: torch.Tensor,
        first: torch.Tensor,
        second: torch.Tensor,
        positives: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean log-softmax over the positives, ``(P, N)`` each, for the anchors of view
        ``first[k]`` (softmax over the samples of view ``second[k]``) and the other direction.

        The ``(P, N, N)`` logits of the P pairs of views are formed once; their softmax is never
        materialised: log-softmax at a positive is its logit minus the row's log-sum-exp, and the
        positives' mean logit is gathered at the positive pairs (sparse masks) or summed against
        the row-normalised mask (dense ones).
        """
        num_samples, (n, p) = views.shape[1], views.shape[-2:]
        tau = self.temperature
        # the two factors of the logits of every pair of views, gathered once (index_select: its
        # backward is a plain index_add); pair_logits(i, j): the logits at the sample pairs (i, j)
        if cross_products_cheaper(n, p):
            # large n: cross products of the basis vectors (see cross_products_cheaper)
            left, right = views.index_select(0, first), views.index_select(0, second)
            logits = projection_metric_similarity(left, right) / tau

            def pair_logits(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
                a, b = left.index_select(1, i), right.index_select(1, j)
                return projection_metric_similarity(a, b, pairwise=False) / tau

        else:
            # small n: inner products of the projector vectors, each view vectorised once, with
            # 1 / tau folded into one factor (no pass over the (P, N, N) logits)
            # (pair_logits gathers the samples from the V views before the P pairs: fewer rows)
            vectors = projector_vectors(views)  # (V, N, n (n + 1) / 2)
            scaled = vectors / tau
            left, right = vectors.index_select(0, first), scaled.index_select(0, second)
            logits = left @ right.transpose(-1, -2)

            def pair_logits(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
                a = vectors.index_select(1, i).index_select(0, first)
                b = scaled.index_select(1, j).index_select(0, second)
                return (a * b).sum(-1)

        # mean logit over each anchor's positives (the anchor itself when no mask is given)
        if positives is None:
            rows = cols = torch.arange(num_samples, device=views.device)
            counts = torch.ones(num_samples, dtype=torch.long, device=views.device)
        else:
            rows, cols = positives.nonzero(as_tuple=True)
            counts = positives.sum(-1)
        if len(rows) <= _SPARSE_POSITIVES * num_samples:
            # gathered at the positive pairs
            share = (1.0 / counts.to(logits.dtype))[rows]
            zeros = logits.new_zeros(logits.shape[:2])
            forward_positive = zeros.index_add(1, rows, pair_logits(rows, cols) * share)
            backward_positive = zeros.index_add(1, rows, pair_logits(cols, rows) * share)
        else:
            # summed against the row-normalised mask (the product saves the mask, not the logits)
            weight = positives.to(logits.dtype) / counts[:, None].to(logits.dtype)
            forward_positive = (logits * weight).sum(-1)
            backward_positive = (logits.transpose(-1, -2) * weight).sum(-1)
        # log-sum-exp over rows (anchors of view first[k]) and over columns (anchors of view
        # second[k]). The similarities lie in [0, p], so the logits lie in [0, p / tau]: when
        # exp(-p / tau) cannot underflow, one exp of the logits shifted by p / tau serves both,
        # computed in place (the logits are a temporary that no backward needs).
        shift = p / tau
        if shift <= 0.5 * -math.log(torch.finfo(logits.dtype).tiny):
            shifted = logits.sub_(shift).exp_()
            row_lse = shift + shifted.sum(-1).log()
            column_lse = shift + shifted.sum(-2).log()
        else:
            row_lse = torch.logsumexp(logits, dim=-1)
            column_lse = torch.logsumexp(logits, dim=-2)
        return forward_positive - row_lse, backward_positive - column_lse

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"


class ClusterContrastiveLoss(nn.Module):
    r"""Cluster-level contrastive loss between views of soft cluster assignments.

    Each cluster k of view a is represented by the column :math:`q^a_{\cdot k} \in \mathbb R^N` of the
    assignment matrix; the same cluster in another view is its positive and the other clusters are
    negatives, with cosine similarity over temperature (Li, Hu, Liu, Peng, Zhou & Peng, AAAI 2021,
    "Contrastive clustering", eqs. 6-8; used across views by CVCL, ICCV 2023). The entropy of the
    mean assignment of each view, :math:`\log K - H(\bar q^a)` (ibid., eq. 9), is added with weight
    ``entropy_weight`` to keep clusters from collapsing.

    Args:
        temperature: positive temperature of the cosine similarities. Default: ``1.0``.
        entropy_weight: non-negative weight of the entropy term. Default: ``1.0``.

    Shape:
        ``forward(probs)``: ``probs`` ``(V, N, K)`` (or a sequence of V ``(N, K)``) rows summing to
        one; returns a scalar.
    """

    def __init__(self, temperature: float = 1.0, entropy_weight: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_positive_float(temperature, "temperature")
        self.entropy_weight = check_nonnegative_float(entropy_weight, "entropy_weight")

    def forward(self, probs: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]):
        if not isinstance(probs, torch.Tensor):
            shapes = {tuple(v.shape) for v in probs}
            if len(shapes) > 1:
                raise ValueError(f"all views must have the same shape (N, K), got {sorted(shapes)}")
            probs = torch.stack(list(probs))
        if probs.dim() != 3:
            raise ValueError(f"probs must have shape (V, N, K), got {tuple(probs.shape)}")
        num_views, _, num_clusters = probs.shape
        if num_views < 2 or num_clusters < 2:
            raise ValueError(
                f"need at least 2 views and 2 clusters, got shape {tuple(probs.shape)}"
            )
        columns = F.normalize(probs.transpose(-1, -2), dim=-1)  # (V, K, N)
        logits = columns[:, None] @ columns[None, :].transpose(-1, -2) / self.temperature
        log_prob = logits.diagonal(dim1=-2, dim2=-1) - torch.logsumexp(logits, dim=-1)  # (V, V, K)
        off_diagonal = ~torch.eye(num_views, dtype=torch.bool, device=probs.device)
        contrast = -(log_prob * off_diagonal[..., None]).sum((0, 1)).mean() / (
            num_views * (num_views - 1)
        )
        mean_assignment = probs.mean(1).clamp_min(torch.finfo(probs.dtype).tiny)  # (V, K)
        entropy = -(mean_assignment * mean_assignment.log()).sum(-1)
        balance = (math.log(num_clusters) - entropy).mean()
        return contrast + self.entropy_weight * balance

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, entropy_weight={self.entropy_weight}"


def dec_target_distribution(q: torch.Tensor) -> torch.Tensor:
    r"""DEC's sharpened target :math:`p_{ik} \propto q_{ik}^2 / f_k`, :math:`f_k = \sum_i q_{ik}`.

    Xie, Girshick & Farhadi, ICML 2016, eq. 3. ``q``: ``(..., N, K)`` -> ``(..., N, K)`` rows summing
    to one. No gradient flows through the target (it is a fixed self-training label).
    """
    if q.dim() < 2:
        raise ValueError(f"q must have shape (..., N, K), got {tuple(q.shape)}")
    q = q.detach()
    weight = q.pow(2) / q.sum(-2, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
    return weight / weight.sum(-1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)


class DECClusteringLoss(nn.Module):
    r"""DEC self-training loss :math:`\mathrm{KL}(P \| Q) = \sum_{ik} p_{ik} \log(p_{ik} / q_{ik})`.

    Xie, Girshick & Farhadi, ICML 2016, eqs. 2-3: ``Q`` are soft assignments, ``P`` the sharpened
    target of :func:`dec_target_distribution` (computed from ``Q`` unless given). Averaged over samples
    (``reduction="mean"``), summed, or per sample (``"none"``).

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``. Default: ``"mean"``.

    Shape:
        ``forward(q, target=None)``: ``q`` ``(..., N, K)`` rows summing to one; returns a scalar
        (``(..., N)`` for ``"none"``).
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, q: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        if q.dim() < 2:
            raise ValueError(f"q must have shape (..., N, K), got {tuple(q.shape)}")
        target = dec_target_distribution(q) if target is None else target.detach()
        if target.shape != q.shape:
            raise ValueError(f"target shape {tuple(target.shape)} differs from q {tuple(q.shape)}")
        tiny = torch.finfo(q.dtype).tiny
        per_sample = (target * (target.clamp_min(tiny).log() - q.clamp_min(tiny).log())).sum(-1)
        return _reduce(per_sample, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
