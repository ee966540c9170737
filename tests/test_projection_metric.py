"""Projection-metric distance and the contrastive / clustering losses built on it."""

import math

import numpy as np
import pytest
import torch

from manifoldnn.linalg import qr_positive
from manifoldnn.losses import (
    ClusterContrastiveLoss,
    DECClusteringLoss,
    ProjectionMetricContrastiveLoss,
    dec_target_distribution,
    projection_metric_distance,
)


def _bases(*shape, dtype=torch.float64, seed=0, device=None):
    generator = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same on every device
    return qr_positive(torch.randn(*shape, generator=generator, dtype=dtype).to(device))


@pytest.mark.parametrize("n, p", [(7, 3), (30, 2), (5, 1), (13, 1), (4, 4)])  # both paths
def test_distance_matches_explicit_projectors(n, p, device):
    x, y = _bases(5, n, p, seed=1, device=device), _bases(4, n, p, seed=2, device=device)
    px, py = x @ x.transpose(-1, -2), y @ y.transpose(-1, -2)
    reference = torch.linalg.matrix_norm(px[:, None] - py[None], dim=(-2, -1)) / math.sqrt(2)
    assert torch.allclose(projection_metric_distance(x, y), reference, atol=1e-10, rtol=0)
    elementwise = projection_metric_distance(x[:4], y, pairwise=False)
    assert torch.allclose(elementwise, reference.diagonal()[:4], atol=1e-10, rtol=0)


def test_distance_matches_principal_angles_scipy(device):
    import scipy.linalg

    x, y = _bases(6, 2, seed=3, device=device), _bases(6, 2, seed=4, device=device)
    angles = scipy.linalg.subspace_angles(x.cpu().numpy(), y.cpu().numpy())
    expected = np.linalg.norm(np.sin(angles))
    assert abs(projection_metric_distance(x, y, pairwise=False).item() - expected) < 1e-12


def test_distance_symmetric_and_basis_invariant(device):
    x = _bases(6, 9, 4, seed=5, device=device)
    d = projection_metric_distance(x, x)
    assert torch.allclose(d, d.T, atol=1e-14)
    rotation = _bases(6, 4, 4, seed=6, device=device)  # another basis of each subspace
    same = projection_metric_distance(x, x @ rotation, pairwise=False)
    assert same.abs().max() == 0.0
    assert d.diagonal().abs().max() == 0.0
    assert (
        d + torch.eye(6, dtype=d.dtype, device=device)
    ).min() > 0.1  # distinct subspaces are apart


def test_distance_gradcheck_and_finite_at_coincidence(device):
    x = _bases(3, 5, 2, seed=7, device=device).requires_grad_(True)
    y = _bases(2, 5, 2, seed=8, device=device).requires_grad_(True)
    assert torch.autograd.gradcheck(projection_metric_distance, (x, y))
    assert torch.autograd.gradcheck(
        lambda a, b: projection_metric_distance(a, b, squared=True), (x, y)
    )
    z = _bases(4, 6, 3, dtype=torch.float32, seed=9, device=device)
    a = z.clone().requires_grad_(True)
    b = (z @ _bases(4, 3, 3, dtype=torch.float32, seed=10, device=device)).requires_grad_(True)
    projection_metric_distance(a, b, pairwise=False).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_distance_errors(device):
    with pytest.raises(ValueError, match="same Gr"):
        projection_metric_distance(_bases(2, 5, 2, device=device), _bases(2, 6, 2, device=device))
    with pytest.raises(ValueError, match="tall"):
        flat = torch.randn(2, 2, 5, device=device)
        projection_metric_distance(flat, flat)


def _contrastive_reference(views, tau, positives=None, per_anchor=False):
    """Loop over ordered view pairs with explicit projectors: for every anchor, the mean over its
    positives of -log softmax of -d^2 / tau, d^2 = ||P_i - P_j||_F^2 / 2 (averaged over the other
    views: ``(V, N)`` when ``per_anchor``)."""
    num_views, num_samples = views.shape[:2]
    if positives is None:
        positives = torch.eye(num_samples, dtype=torch.bool, device=views.device)
    projectors = views @ views.transpose(-1, -2)
    weight = positives.to(views.dtype) / positives.sum(-1, keepdim=True)
    per_sample = torch.zeros(num_views, num_samples, dtype=views.dtype, device=views.device)
    for a in range(num_views):
        for b in range(num_views):
            if a == b:
                continue
            difference = projectors[a][:, None] - projectors[b][None, :]  # (N, N, n, n)
            d2 = 0.5 * torch.linalg.matrix_norm(difference) ** 2
            log_softmax = torch.log_softmax(-d2 / tau, -1)
            per_sample[a] -= (log_softmax * weight).sum(-1) / (num_views - 1)
    return per_sample if per_anchor else per_sample.mean()


@pytest.mark.parametrize("num_views", [2, 3])
def test_contrastive_matches_reference(num_views, device):
    views = _bases(num_views, 5, 6, 2, seed=11, device=device)
    loss = ProjectionMetricContrastiveLoss(temperature=0.3)(views)
    assert torch.allclose(loss, _contrastive_reference(views, 0.3), atol=1e-10)
    as_list = ProjectionMetricContrastiveLoss(temperature=0.3)(list(views))
    assert torch.allclose(loss, as_list)


@pytest.mark.parametrize("n, p", [(6, 2), (30, 2)])  # projector vectors, basis cross products
@pytest.mark.parametrize("density", ["sparse", "dense"])  # gathered / summed positives
@pytest.mark.parametrize("tau", [0.3, 0.004])  # one shifted exp / two log-sum-exps (p / tau > 354)
def test_contrastive_positives_match_reference(n, p, density, tau, device):
    num_samples = 40
    views = _bases(3, num_samples, n, p, seed=21, device=device)
    eye = torch.eye(num_samples, dtype=torch.bool, device=device)
    if density == "sparse":
        positives = eye | eye.roll(2, 1)  # asymmetric: a sample and the one two after it
    else:
        generator = torch.Generator().manual_seed(22)
        draws = torch.rand(num_samples, num_samples, generator=generator).to(device)
        positives = eye | (draws < 0.7)
    assert (positives.sum() <= 16 * num_samples) == (density == "sparse")
    loss = ProjectionMetricContrastiveLoss(temperature=tau)
    expected = _contrastive_reference(views, tau, positives)
    assert torch.isfinite(expected)
    assert torch.allclose(loss(views, positives=positives), expected, atol=1e-10, rtol=1e-10)
    per_anchor = ProjectionMetricContrastiveLoss(temperature=tau, reduction="none")
    assert torch.allclose(
        per_anchor(views, positives=positives),
        _contrastive_reference(views, tau, positives, per_anchor=True),
        atol=1e-10,
        rtol=1e-10,
    )
    assert torch.allclose(loss(views), _contrastive_reference(views, tau), atol=1e-10, rtol=1e-10)
    single = views.float()
    result = loss(single, positives=positives)
    assert torch.isfinite(result) and abs(result.item() - expected.item()) <= 1e-4 * max(
        1.0, abs(expected.item())
    )


def test_contrastive_positives_gradcheck(device):
    views = _bases(3, 5, 6, 2, seed=23, device=device).requires_grad_(True)
    eye = torch.eye(5, dtype=torch.bool, device=device)
    positives = eye | eye.roll(1, 1)
    loss = ProjectionMetricContrastiveLoss(
        temperature=0.4, validate=False
    )  # finite differences leave the manifold
    assert torch.autograd.gradcheck(lambda v: loss(v, positives=positives), (views,))
    # more than 16 positives per anchor: summed against the full logits, not gathered
    dense_views = _bases(2, 18, 5, 2, seed=24, device=device).requires_grad_(True)
    dense = torch.ones(18, 18, dtype=torch.bool, device=device)
    assert torch.autograd.gradcheck(lambda v: loss(v, positives=dense), (dense_views,))


def test_contrastive_prefers_aligned_views_and_gradcheck(device):
    anchor = _bases(8, 6, 2, seed=12, device=device)
    loss = ProjectionMetricContrastiveLoss(temperature=0.2)
    aligned = loss(torch.stack([anchor, anchor @ _bases(8, 2, 2, seed=13, device=device)]))
    shuffled = loss(torch.stack([anchor, anchor[torch.randperm(8, device=device)]]))
    assert aligned < shuffled
    views = _bases(2, 4, 5, 2, seed=14, device=device).requires_grad_(True)
    # finite differences step off the manifold, where the value check would refuse the views
    unchecked = ProjectionMetricContrastiveLoss(temperature=0.2, validate=False)
    assert torch.autograd.gradcheck(unchecked, (views,))


def test_contrastive_errors(device):
    loss = ProjectionMetricContrastiveLoss()
    with pytest.raises(ValueError, match="at least 2 views"):
        loss(_bases(1, 4, 5, 2, device=device))
    with pytest.raises(ValueError, match="same shape"):
        loss([_bases(4, 5, 2, device=device), _bases(3, 5, 2, device=device)])
    with pytest.raises(ValueError, match="temperature"):
        ProjectionMetricContrastiveLoss(temperature=0.0)


def test_cluster_contrastive_reference_and_balance(device):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 10, 3, generator=generator, dtype=torch.float64).to(device)
    probs = torch.softmax(logits, -1)
    loss = ClusterContrastiveLoss(temperature=0.5, entropy_weight=0.0)(probs)
    columns = torch.nn.functional.normalize(probs.transpose(1, 2), dim=-1)
    reference = 0.0
    for a, b in [(0, 1), (1, 0)]:
        logits = columns[a] @ columns[b].T / 0.5
        reference = reference - torch.log_softmax(logits, -1).diagonal().mean()
    assert torch.allclose(loss, reference / 2, atol=1e-12)
    # a collapsed assignment pays the full entropy penalty log K
    collapsed = torch.zeros(2, 10, 3, dtype=torch.float64, device=device)
    collapsed[..., 0] = 1.0
    only_entropy = ClusterContrastiveLoss(entropy_weight=1.0)
    difference = only_entropy(collapsed) - ClusterContrastiveLoss(entropy_weight=0.0)(collapsed)
    assert abs(difference.item() - math.log(3)) < 1e-9


def test_dec_target_and_kl(device):
    q = torch.tensor(
        [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64, device=device
    )
    target = dec_target_distribution(q)
    weight = q**2 / q.sum(0)
    assert torch.allclose(target, weight / weight.sum(1, keepdim=True))
    assert torch.allclose(target.sum(1), torch.ones(3, dtype=torch.float64, device=device))
    kl = DECClusteringLoss()(q)
    reference = torch.nn.functional.kl_div(q.log(), target, reduction="batchmean")
    assert torch.allclose(kl, reference)
    assert DECClusteringLoss()(target, target) == 0.0


def test_contrastive_view_weights_and_positives(device):
    views = _bases(3, 6, 5, 2, seed=15, device=device)
    loss = ProjectionMetricContrastiveLoss(temperature=0.4)
    uniform = loss(views, view_weights=torch.ones(3, dtype=torch.float64, device=device))
    assert torch.allclose(uniform, loss(views), atol=1e-12)
    # a view with zero weight drops out: the loss equals the loss of the two remaining views
    weights = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64, device=device)
    dropped = loss(views, view_weights=weights)
    assert torch.allclose(dropped, loss(views[[0, 2]]), atol=1e-12)
    # identity positives are the plain loss; extra positives average -log p over them
    eye = torch.eye(6, dtype=torch.bool, device=device)
    assert torch.allclose(loss(views, positives=eye), loss(views), atol=1e-12)
    pairs = eye | eye.roll(1, 0)
    logits = -projection_metric_distance(views[0], views[1], squared=True) / 0.4
    forward = -(torch.log_softmax(logits, -1) * pairs).sum(-1) / 2
    backward = -(torch.log_softmax(logits.T, -1) * pairs).sum(-1) / 2
    expected = (forward.mean() + backward.mean()) / 2
    assert torch.allclose(loss(views[:2], positives=pairs), expected, atol=1e-12)
    with pytest.raises(ValueError, match="diagonal"):
        loss(views, positives=~eye)
    with pytest.raises(ValueError, match="non-negative"):
        loss(views, view_weights=torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64, device=device))
