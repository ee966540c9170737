"""GrassmannKMeans, projection-affinity spectral clustering and the clustering metrics."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from manifoldnn.clustering import (
    GrassmannKMeans,
    GrassmannSpectralClustering,
    adjusted_rand_index,
    best_matching,
    clustering_accuracy,
    clustering_report,
    extrinsic_mean,
    normalized_mutual_info,
    projection_affinity,
    purity,
)
from manifoldnn.linalg import qr_positive
from manifoldnn.manifolds import Grassmann, karcher_mean


def _planted(clusters=4, per_cluster=15, n=10, p=3, spread=0.15, seed=0, dtype=torch.float64):
    """Subspaces scattered around ``clusters`` random centres, each with a random basis."""
    generator = torch.Generator().manual_seed(seed)
    grassmann = Grassmann()
    centres = qr_positive(torch.randn(clusters, n, p, generator=generator, dtype=dtype))
    tangent = grassmann.proju(
        centres[:, None], torch.randn(clusters, per_cluster, n, p, generator=generator, dtype=dtype)
    )
    points = grassmann.expmap(centres[:, None], spread * tangent)
    rotations = qr_positive(
        torch.randn(clusters, per_cluster, p, p, generator=generator, dtype=dtype)
    )
    labels = torch.arange(clusters).repeat_interleave(per_cluster)
    order = torch.randperm(clusters * per_cluster, generator=generator)
    return (points @ rotations).reshape(-1, n, p)[order], labels[order].numpy(), centres


@pytest.mark.parametrize("mean", ["extrinsic", "karcher"])
def test_kmeans_recovers_planted_clusters(mean, device):
    points, labels, centres = _planted()
    points, centres = points.to(device), centres.to(device)
    model = GrassmannKMeans(4, mean=mean, n_init=4, random_state=0).fit(points)
    assert adjusted_rand_score(labels, model.labels_) == 1.0
    assert np.array_equal(model.predict(points), model.labels_)
    # each centre is the mean of its cluster (a fixed point of Lloyd's iteration), near a planted one
    grassmann = Grassmann()
    for k in range(4):
        members = points[torch.as_tensor(model.labels_ == k)]
        mean_k = (
            extrinsic_mean(members) if mean == "extrinsic" else karcher_mean(grassmann, members)
        )
        assert grassmann.projection_distance(model.cluster_centers_[k], mean_k) < 1e-6
    distance = grassmann.projection_distance(model.cluster_centers_[:, None], centres[None])
    assert distance.min(1).values.max() < 0.4 < distance.max(1).values.min()
    assert model.cluster_centers_.device == points.device
    ones = model.cluster_centers_.transpose(-1, -2) @ model.cluster_centers_
    # eigenvectors of a symmetric n x n matrix: orthonormal to a few n eps (n = 10)
    eye = torch.eye(3, dtype=ones.dtype, device=device).expand_as(ones)
    assert torch.allclose(ones, eye, atol=10 * points.shape[-2] * torch.finfo(ones.dtype).eps)


def test_kmeans_float32_and_deterministic(device):
    points, labels, _ = _planted(seed=1, dtype=torch.float32)
    points = points.to(device)
    first = GrassmannKMeans(4, n_init=3, random_state=5).fit(points)
    second = GrassmannKMeans(4, n_init=3, random_state=5).fit(points)
    assert np.array_equal(first.labels_, second.labels_)
    assert first.cluster_centers_.dtype == torch.float32
    assert adjusted_rand_score(labels, first.labels_) == 1.0


def test_kmeans_lines_agree_with_sklearn_up_to_sign(device):
    # p = 1: lines through the origin; sign-aligned unit vectors clustered by scikit-learn's KMeans
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.standard_normal((5, 5)))[0][:, :4].T  # orthogonal centre lines
    vectors = np.repeat(directions, 25, axis=0) + 0.1 * rng.standard_normal((100, 5))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    signs = rng.choice([-1.0, 1.0], size=(100, 1))
    lines = torch.as_tensor(vectors * signs)[..., None].to(device)
    ours = GrassmannKMeans(4, n_init=5, random_state=0).fit_predict(lines)
    reference = KMeans(4, n_init=10, random_state=0).fit_predict(vectors)
    assert adjusted_rand_score(reference, ours) == 1.0
    # with random signs scikit-learn's Euclidean k-means no longer sees lines
    assert (
        adjusted_rand_score(
            reference, KMeans(4, n_init=10, random_state=0).fit_predict(vectors * signs)
        )
        < 1.0
    )


def test_extrinsic_mean_is_top_eigenspace(device):
    points, _, _ = _planted(clusters=1, per_cluster=20, seed=2)
    projector = (points @ points.transpose(-1, -2)).mean(0).numpy()
    expected = np.linalg.eigh(projector)[1][:, -3:]
    mean = extrinsic_mean(points.to(device))
    assert mean.device.type == device.type
    mean = mean.cpu().numpy()
    assert np.allclose(mean @ mean.T, expected @ expected.T, atol=1e-10)


def test_kmeans_errors():
    """Input errors; the parameter checks are in tests/test_estimator_contract.py."""
    with pytest.raises(ValueError, match="orthonormal"):
        GrassmannKMeans(2).fit(torch.randn(10, 5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(N, n, p\)"):
        GrassmannKMeans(2).fit(torch.randn(10, 5))
    with pytest.raises(ValueError, match="exceeds"):
        GrassmannKMeans(20).fit(_planted(clusters=2, per_cluster=5)[0])
    with pytest.raises(ValueError, match="not fitted"):
        GrassmannKMeans(2).predict(_planted(clusters=2, per_cluster=5)[0])


def test_spectral_on_projection_affinity_recovers_clusters(device):
    points, labels, _ = _planted(clusters=3, per_cluster=20, spread=0.2, seed=3)
    points = points.to(device)
    for kernel in ("projection", "heat"):
        model = GrassmannSpectralClustering(3, n_neighbors=8, kernel=kernel, random_state=0)
        assert adjusted_rand_score(labels, model.fit_predict(points)) == 1.0
    affinity = projection_affinity(points, n_neighbors=None)
    p = points.shape[-1]
    expected = (points.transpose(-1, -2)[:, None] @ points[None]).pow(2).sum((-2, -1)) / p
    expected.fill_diagonal_(0.0)
    assert np.allclose(affinity, expected.cpu().numpy(), atol=1e-12)
    sparse = projection_affinity(points, n_neighbors=5)
    assert np.allclose(sparse, sparse.T) and ((sparse > 0).sum(1) >= 5).all()


def test_projection_affinity_of_an_ensemble_is_the_mean_kernel(device):
    first, labels, _ = _planted(clusters=3, per_cluster=10, spread=0.2, seed=4)
    second = _planted(clusters=3, per_cluster=10, spread=0.6, seed=5)[0]
    first, second = first.to(device), second.to(device)
    ensemble = torch.stack([first, second])  # two embeddings of the same 30 samples
    mean = (
        projection_affinity(first, n_neighbors=None) + projection_affinity(second, n_neighbors=None)
    ) / 2
    assert np.allclose(projection_affinity(ensemble, n_neighbors=None), mean, atol=1e-12)
    # the kNN graph is built on the mean kernel, not summed per embedding
    sparse = projection_affinity(ensemble, n_neighbors=4)
    order = np.argsort(-mean, axis=1, kind="stable")[:, :4]
    kept = np.zeros_like(mean, dtype=bool)
    kept[np.arange(30)[:, None], order] = True
    kept |= kept.T
    assert np.array_equal(sparse > 0, kept & (mean > 0))
    assert np.allclose(sparse[kept], mean[kept])
    # R copies of one embedding change nothing; the estimator accepts (R, N, n, p)
    copies = torch.stack([first, first, first])
    assert np.allclose(projection_affinity(copies), projection_affinity(first), atol=1e-12)
    model = GrassmannSpectralClustering(3, n_neighbors=6, random_state=0)
    assert np.array_equal(model.fit_predict(copies), model.fit_predict(first))
    with pytest.raises(ValueError, match=r"\(R, N, n, p\)"):
        projection_affinity(torch.zeros(1, 2, 3, 4, 2, dtype=torch.float64, device=device))


def test_metrics_agree_with_sklearn_on_random_labelings():
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth = rng.integers(0, 4, 200)
        pred = rng.integers(0, 6, 200)
        assert (
            abs(normalized_mutual_info(truth, pred) - normalized_mutual_info_score(truth, pred))
            < 1e-12
        )
        assert abs(adjusted_rand_index(truth, pred) - adjusted_rand_score(truth, pred)) < 1e-12
        # ACC by brute force over injective cluster -> class maps is what Hungarian maximises
        counts = np.zeros((4, 6), dtype=int)
        np.add.at(counts, (truth, pred), 1)
        from itertools import permutations

        best = max(counts[list(perm), range(4)].sum() for perm in permutations(range(4)))
        best = max(
            best,
            max(
                sum(counts[i, c] for i, c in enumerate(cols)) for cols in permutations(range(6), 4)
            ),
        )
        assert clustering_accuracy(truth, pred) == pytest.approx(best / 200)
        assert purity(truth, pred) == pytest.approx(counts.max(0).sum() / 200)


def test_accuracy_is_one_for_permuted_labels():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 5, 100)
    permutation = np.array([3, 0, 4, 1, 2])
    pred = permutation[truth] + 10
    report = clustering_report(truth, pred)
    assert report == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0, "purity": 1.0}, abs=1e-12)
    assert report["acc"] == 1.0
    mapping = best_matching(truth, pred)
    assert all(mapping[permutation[c] + 10] == c for c in range(5))


def test_metric_errors():
    with pytest.raises(ValueError, match="same length"):
        clustering_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="integer"):
        purity([0.5, 1.0], [0, 1])


def test_benchmark_matches_numpy_reference():
    from benchmarks.clustering import main

    result = main(["--points", "300", "--n", "12", "--p", "3", "--clusters", "4"])
    assert result["same_labels"]
    assert result["ari_to_truth"] > 0.9


@pytest.mark.parametrize(
    "options, name",
    [
        ({"n_neighbors": 0}, "n_neighbors"),
        ({"n_neighbors": 10}, "n_neighbors"),  # not below N = 10
        ({"n_neighbors": 3, "kernel": "gauss"}, "kernel"),
        ({"n_neighbors": 3, "kernel": "heat", "sigma": 0.0}, "sigma"),
    ],
)
def test_projection_affinity_bad_options_name_themselves(options, name):
    points = _planted(clusters=2, per_cluster=5)[0]
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        projection_affinity(points, **options)
