"""HierarchyEmbedding and its evaluation: the loss and its gradient against a float64 reference,
points on their manifold after training, the metrics against a brute-force ranking, the balanced
tree of Nickel & Kiela (2017) reconstructed, and clear errors on bad input."""

import math

import geoopt
import numpy as np
import pytest
import torch
from sklearn.base import clone

from manifoldnn.datasets import balanced_tree, transitive_closure
from manifoldnn.embedding import (
    HierarchyEmbedding,
    hierarchy_distance,
    hierarchy_loss,
    link_prediction_scores,
    reconstruction_scores,
)
from manifoldnn.manifolds.lorentz import ball_to_hyperboloid

MANIFOLDS = ["poincare", "lorentz", "euclidean"]


def _tiny_tree():
    """The closure of a binary tree of depth 2 (7 nodes, 10 pairs) as index pairs."""
    pairs = transitive_closure(balanced_tree(2, 2))
    nodes = sorted({n for p in pairs for n in p})
    index = {n: i for i, n in enumerate(nodes)}
    return len(nodes), torch.tensor([(index[u], index[a]) for u, a in pairs])


def _ball_points(n, dim, seed, radius=0.8):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    r = radius * torch.rand(n, 1, generator=generator, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True) * r


def _points(manifold, n, dim, seed):
    p = _ball_points(n, dim, seed)
    return ball_to_hyperboloid(p) if manifold == "lorentz" else p


def _reference_distance(manifold, x, y):
    """The textbook forms in float64: Nickel & Kiela 2017 eq. 1; 2018 eq. 4; Euclidean."""
    if manifold == "poincare":
        sq = ((x - y) ** 2).sum(-1)
        ratio = sq / ((1 - (x**2).sum(-1)) * (1 - (y**2).sum(-1)))
        return torch.acosh(1 + 2 * ratio)
    if manifold == "lorentz":
        inner = (x[..., 1:] * y[..., 1:]).sum(-1) - x[..., 0] * y[..., 0]
        return torch.acosh(-inner)
    return ((x - y) ** 2).sum(-1).sqrt()


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_loss_and_gradient_match_a_float64_reference(manifold, dtype, device):
    n, pairs = _tiny_tree()
    generator = torch.Generator().manual_seed(1)
    # negatives other than u (the sampler never draws u itself)
    shift = 1 + torch.randint(n - 1, (len(pairs), 4), generator=generator)
    negatives = (pairs[:, :1] + shift) % n
    valid = torch.rand(len(pairs), 4, generator=generator) > 0.2
    points64 = _points(manifold, n, 3, seed=2)

    reference_points = points64.clone().requires_grad_(True)
    u = reference_points[pairs[:, 0]]
    others = reference_points[torch.cat([pairs[:, 1:], negatives], 1)]
    d = _reference_distance(manifold, u.unsqueeze(1), others)
    weights = torch.cat([torch.ones(len(pairs), 1, dtype=torch.bool), valid], 1)
    # -log(exp(-d_0) / sum_valid exp(-d_j)), the sum over the positive and the valid negatives
    exp = torch.where(weights, torch.exp(-d), torch.zeros_like(d))
    reference = -torch.log(exp[:, 0] / exp.sum(1))
    reference = reference.sum()
    (reference_grad,) = torch.autograd.grad(reference, reference_points)

    points = points64.to(device, dtype).requires_grad_(True)
    loss = hierarchy_loss(
        manifold, points, pairs.to(device), negatives.to(device), valid.to(device)
    )
    (grad,) = torch.autograd.grad(loss, points)

    eps = torch.finfo(dtype).eps
    terms = pairs.shape[0] * (1 + negatives.shape[1])
    # each distance is exact to a few eps relative to its size (at most about 6 here) and each
    # term's log-sum-exp adds a few eps; the loss sums `terms` of them
    bound = 64 * terms * eps * max(1.0, float(reference.detach()))
    torch.testing.assert_close(loss.double().cpu(), reference, atol=bound, rtol=0)
    # the gradient of a distance at points this far apart (d >= 0.05) is amplified by at most 1/d
    smallest = float(d.detach().min())
    assert smallest > 0.05
    # Riemannian gradients: on the hyperboloid the two forms of the distance agree on the
    # manifold but not off it, so their ambient gradients differ by normal components
    manifold_object = HierarchyEmbedding(3, manifold)._manifold()
    grad = manifold_object.egrad2rgrad(points64, grad.double().cpu().clone())
    reference_grad = manifold_object.egrad2rgrad(points64, reference_grad.clone())
    grad_bound = 64 * terms * eps / smallest * max(1.0, float(reference_grad.detach().abs().max()))
    torch.testing.assert_close(grad, reference_grad, atol=grad_bound, rtol=0)


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_distances_are_the_textbook_ones(manifold, dtype):
    x = _points(manifold, 6, 4, seed=3).to(dtype)
    y = _points(manifold, 6, 4, seed=4).to(dtype)
    reference = _reference_distance(manifold, x.double(), y.double())
    eps = torch.finfo(dtype).eps
    got = hierarchy_distance(manifold, x, y).double()
    # arcosh's condition number z / sqrt(z^2 - 1) is below 1 / d; entries of size up to 20
    bound = 64 * 20 * eps / float(reference.min())
    torch.testing.assert_close(got, reference, atol=bound * float(reference.max()), rtol=0)


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_points_stay_on_their_manifold_after_training(manifold, dtype, device):
    pairs = transitive_closure(balanced_tree(3, 2))
    factory_kwargs = {"device": device, "dtype": dtype}
    options = {"epochs": 15, "burn_in": 5, "lr": 1.0, "negatives": 4, "random_state": 0}
    model = HierarchyEmbedding(3, manifold, **options, **factory_kwargs).fit(pairs)
    assert model.fit(pairs) is model
    points = model.embedding_
    assert isinstance(points, geoopt.ManifoldParameter)
    assert points.dtype == dtype and points.device.type == torch.device(device).type
    assert len(model.nodes_) == points.shape[0] == 15
    assert bool(torch.isfinite(points).all())
    eps = torch.finfo(dtype).eps
    if manifold == "poincare":
        assert points.shape[1] == 3
        assert bool((points.detach().norm(dim=-1) < 1).all())
    elif manifold == "lorentz":
        assert points.shape[1] == 4
        x = points.detach()
        square = (x[:, 1:] ** 2).sum(-1) - x[:, 0] ** 2
        # x_0 = sqrt(1 + |x_1:|^2) rounded: <x, x>_L = -1 to a few eps x_0^2
        bound = 8 * eps * float(x[:, 0].max()) ** 2
        torch.testing.assert_close(square, torch.full_like(square, -1.0), atol=bound, rtol=0)
        assert bool((x[:, 0] > 0).all())
    assert len(model.loss_curve_) == 15 and math.isfinite(model.loss_)


def _brute_force(points, manifold, positives, known=()):
    """Rank every node by distance one by one; precision at each positive of the walk."""
    positives_of, known_of = {}, {}
    for u, a in positives:
        positives_of.setdefault(u, set()).add(a)
    for u, a in known:
        known_of.setdefault(u, set()).add(a)
    ranks, precisions = [], []
    for u, related in positives_of.items():
        skip = {u} | known_of.get(u, set())
        candidates = [v for v in range(len(points)) if v not in skip]
        distance = {
            v: float(_reference_distance(manifold, points[u], points[v])) for v in candidates
        }
        negatives = [v for v in candidates if v not in related]
        for a in related:
            ranks.append(1 + sum(distance[v] < distance[a] for v in negatives))
        hits, precision = 0, []
        for position, v in enumerate(sorted(candidates, key=distance.get), 1):
            if v in related:
                hits += 1
                precision.append(hits / position)
        precisions.append(np.mean(precision))
    return float(np.mean(ranks)), float(np.mean(precisions))


def _random_pairs(n, count, seed):
    rng = np.random.default_rng(seed)
    pairs = set()
    while len(pairs) < count:
        u, a = rng.integers(n, size=2)
        if u != a:
            pairs.add((int(u), int(a)))
    return sorted(pairs)


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_reconstruction_scores_equal_a_brute_force_ranking(manifold, device):
    points = _points(manifold, 25, 3, seed=5)
    pairs = _random_pairs(25, 60, seed=6)
    mean_rank, mean_precision = _brute_force(points, manifold, pairs)
    scores = reconstruction_scores(points.to(device), pairs, manifold=manifold)
    assert scores["mean_rank"] == pytest.approx(mean_rank, abs=1e-12)
    assert scores["map"] == pytest.approx(mean_precision, abs=1e-12)
    names = [f"n{i}" for i in range(25)]
    named = [(names[u], names[a]) for u, a in pairs]
    again = reconstruction_scores(points, named, manifold=manifold, nodes=names)
    assert again == pytest.approx(scores)


def test_link_prediction_scores_equal_a_brute_force_ranking(device):
    points = _points("poincare", 30, 3, seed=7)
    pairs = _random_pairs(30, 90, seed=8)
    train, test = pairs[::3] + pairs[1::3], pairs[2::3]
    mean_rank, mean_precision = _brute_force(points, "poincare", test, known=train)
    scores = link_prediction_scores(points.to(device), train, test)
    assert scores["mean_rank"] == pytest.approx(mean_rank, abs=1e-12)
    assert scores["map"] == pytest.approx(mean_precision, abs=1e-12)


def test_a_perfect_embedding_scores_rank_one_and_map_one():
    """A path 0 <- 1 <- 2 <- 3 on a line, gaps growing: each parent is the closest node."""
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    pairs = [(1, 0), (2, 1), (3, 2)]
    assert reconstruction_scores(points, pairs, manifold="euclidean") == {
        "mean_rank": 1.0,
        "map": 1.0,
    }


@pytest.mark.parametrize("manifold", ["poincare", "lorentz"])
def test_balanced_tree_is_reconstructed_in_five_dimensions(manifold):
    """Depth 4, branching 3 (121 nodes, 426 closure pairs) in 5 dimensions: MAP >= 0.95 (gensim
    reaches 0.957 there)."""
    pairs = transitive_closure(balanced_tree(4, 3))
    model = HierarchyEmbedding(5, manifold, epochs=100, random_state=0).fit(pairs)
    assert model.score(pairs) >= 0.95


def test_same_seed_same_embedding_and_clone():
    pairs = transitive_closure(balanced_tree(2, 3))
    model = HierarchyEmbedding(2, epochs=3, negatives=3, random_state=4)
    first = model.fit(pairs).embedding_.detach().clone()
    twin = clone(model).fit(pairs)
    torch.testing.assert_close(twin.embedding_.detach(), first, atol=0, rtol=0)
    assert twin.get_params()["negatives"] == 3
    d = twin.distances(["0.1"], ["0"])
    assert d.shape == (1,) and d[0] > 0


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([], "empty"),
        ([("a", "b"), ("b", "b")], "self-loops"),
        ([("a", "b"), ("b", "c"), ("c", "a")], "cycle"),
    ],
)
def test_fit_rejects_bad_hierarchies(pairs, message):
    with pytest.raises(ValueError, match=message):
        HierarchyEmbedding(2, negatives=1).fit(pairs)


@pytest.mark.parametrize(
    "parameter, value",
    [
        ("dim", 0),
        ("manifold", "hyperbolic"),
        ("negatives", 0),
        ("epochs", 0),
        ("burn_in", -1),
        ("lr", 0.0),
        ("batch_size", 1.5),
        ("optimizer", "lbfgs"),
        ("verbose", "yes"),
        ("dtype", torch.int64),
    ],
)
def test_fit_names_a_bad_parameter(parameter, value):
    pairs = transitive_closure(balanced_tree(2, 3))
    with pytest.raises(ValueError, match=parameter):
        HierarchyEmbedding(**{"dim": 2, parameter: value}).fit(pairs)


def test_unknown_nodes_and_too_few_nodes_give_clear_errors():
    pairs = transitive_closure(balanced_tree(2, 3))
    model = HierarchyEmbedding(2, epochs=1, negatives=2, random_state=0).fit(pairs)
    with pytest.raises(ValueError, match="not embedded.*'zebra'"):
        model.score([("zebra", "0")])
    with pytest.raises(ValueError, match="not embedded.*'zebra'"):
        model.distances(["zebra"], ["0"])
    with pytest.raises(ValueError, match="negatives \\+ 2"):
        HierarchyEmbedding(2, negatives=10).fit([("a", "b")])
    with pytest.raises(ValueError, match="manifold must be one of"):
        reconstruction_scores(torch.zeros(3, 2), [(0, 1)], manifold="sphere")
    with pytest.raises(ValueError, match="outside"):
        reconstruction_scores(torch.zeros(3, 2), [(0, 5)])


def test_verbose_shows_a_progress_bar(capsys):
    pairs = transitive_closure(balanced_tree(2, 3))
    HierarchyEmbedding(2, epochs=2, negatives=2, random_state=0, verbose=True).fit(pairs)
    assert "HierarchyEmbedding" in capsys.readouterr().err


@pytest.mark.parametrize("manifold", ["poincare", "lorentz"])
def test_small_batches_on_a_larger_hierarchy_update_the_touched_rows(manifold):
    """121 nodes > 4 * batch_size * (negatives + 2) = 96: SGD steps only the rows each batch
    touches; the points stay on their manifold and the loss goes down."""
    pairs = transitive_closure(balanced_tree(4, 3))
    model = HierarchyEmbedding(
        5, manifold, epochs=30, burn_in=5, batch_size=8, negatives=1, random_state=0
    ).fit(pairs)
    points = model.embedding_.detach()
    if manifold == "poincare":
        assert bool((points.norm(dim=-1) < 1).all())
    else:
        square = (points[:, 1:] ** 2).sum(-1) - points[:, 0] ** 2
        bound = 8 * torch.finfo(points.dtype).eps * float(points[:, 0].max()) ** 2
        torch.testing.assert_close(square, torch.full_like(square, -1.0), atol=bound, rtol=0)
    assert model.loss_curve_[-1] < model.loss_curve_[0]
