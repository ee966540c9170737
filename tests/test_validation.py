"""Bad input gets a ValueError that names the argument, never a silently wrong result; half
precision is evaluated in float32 and returned in the input dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifoldnn.clustering import GrassmannKMeans
from manifoldnn.datasets import load_multiview_file
from manifoldnn.layers import GeodesicAttention, ReOrth
from manifoldnn.linalg import qr_positive
from manifoldnn.losses import ProjectionMetricContrastiveLoss
from manifoldnn.manifolds import Grassmann, karcher_mean
from manifoldnn.models import GrNet

gr = Grassmann()


def bases(*shape, dtype=torch.float64):
    return qr_positive(torch.randn(*shape, dtype=dtype))


def test_grassmann_points_of_different_p_are_refused():
    x = bases(10, 3)
    for method in ("dist", "logmap", "projection_distance", "chordal_distance"):
        with pytest.raises(ValueError, match=r"same Gr\(n, p\).*\(10, 3\).*\(10, 2\)"):
            getattr(gr, method)(x, x[..., :2])
    with pytest.raises(ValueError, match="weights"):
        gr.weighted_logmap_sum(x, bases(4, 10, 3), torch.ones(3, dtype=x.dtype))


def test_logmap_refuses_bases_far_from_orthonormal():
    x, y = bases(4, 10, 3), bases(4, 10, 3)
    assert torch.isfinite(gr.logmap(x, y)).all()
    with pytest.raises(ValueError, match="y must be orthonormal"):
        gr.logmap(x, 1.5 * y)  # cosines above 1: acos would return NaN
    with pytest.raises(ValueError, match="x must be orthonormal"):
        gr.logmap(x + 0.3, y)
    # a perturbation at the size finite differences use stays accepted and finite
    assert torch.isfinite(gr.logmap(x, y + 1e-6)).all()


def test_reorth_refuses_rank_deficient_input():
    x = torch.randn(5, 8, 3, dtype=torch.float64)
    x[2, :, 2] = x[2, :, 0] + x[2, :, 1]  # third column in the span of the first two
    with pytest.raises(ValueError, match="input.*rank-deficient"):
        ReOrth()(x)
    # the check can be switched off (e.g. to keep the forward free of host synchronisation)
    assert ReOrth(validate=False)(x).shape == x.shape


def test_contrastive_loss_refuses_non_orthonormal_and_nan_views():
    views = bases(3, 16, 8, 2)
    loss = ProjectionMetricContrastiveLoss()
    assert torch.isfinite(loss(views))
    with pytest.raises(ValueError, match="views must be orthonormal"):
        loss(3.0 * views)
    broken = views.clone()
    broken[1, 4, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="views hold NaN"):
        loss(broken)


def test_karcher_mean_bad_weights_init_and_empty_batches():
    points = bases(6, 5, 10, 3)
    for bad in (float("nan"), float("inf")):
        weights = torch.ones(6, 5, dtype=points.dtype)
        weights[2, 1] = bad
        with pytest.raises(ValueError, match="weights hold NaN or infinite"):
            karcher_mean(gr, points, weights)
    with pytest.raises(ValueError, match=r"init must be.*\(6, 10, 3\)"):
        karcher_mean(gr, points, init=bases(4, 10, 3))
    empty = karcher_mean(gr, bases(0, 6, 10, 3))
    assert empty.shape == (0, 10, 3)


def test_kmeans_refuses_fewer_distinct_points_than_clusters_and_no_points():
    same = bases(10, 3).expand(6, 10, 3)
    with pytest.raises(ValueError, match="only 1 distinct subspace.*n_clusters=3"):
        GrassmannKMeans(n_clusters=3, random_state=0).fit(same)
    # the same basis up to a rotation is the same subspace
    rotation = qr_positive(torch.randn(3, 3, dtype=torch.float64))
    rotated = torch.cat([same[:3], same[3:] @ rotation])
    with pytest.raises(ValueError, match="only 1 distinct"):
        GrassmannKMeans(n_clusters=2, random_state=0).fit(rotated)
    with pytest.raises(ValueError, match="points is empty"):
        GrassmannKMeans(n_clusters=1).fit(torch.zeros(0, 10, 3))


def test_attention_mask_of_the_wrong_batch_and_too_small_heads():
    tokens = bases(2, 7, 6, 2, dtype=torch.float32)
    layer = GeodesicAttention(gr, 6, 4, num_heads=2)
    with pytest.raises(ValueError, match=r"key_padding_mask.*\(3,\).*\(2,\)"):
        layer(tokens, key_padding_mask=torch.zeros(3, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"head_size=8 must be <= in_size=6"):
        GeodesicAttention(gr, 6, 8)
    narrow = GeodesicAttention(gr, 6, 1)
    with pytest.raises(ValueError, match="p=2 columns"):
        narrow(tokens)


def test_data_files_that_are_not_archives(tmp_path):
    corrupt = tmp_path / "views.npz"
    corrupt.write_bytes(b"not a zip archive at all")
    with pytest.raises(ValueError, match="views.npz is not a readable .npz archive"):
        load_multiview_file(corrupt)
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises(ValueError, match="folder.npz is not a file"):
        load_multiview_file(folder)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_evaluated_in_float32_and_returned_in_its_dtype(dtype):
    torch.manual_seed(0)
    x, y = bases(8, 10, 3, dtype=torch.float32), bases(8, 10, 3, dtype=torch.float32)
    eps = torch.finfo(dtype).eps
    # the rounding of the inputs to the half dtype moves each result by a few eps (p = 3 angles,
    # entries of size <= 1), and the result is rounded once more on return
    for name, fn in (("dist", gr.dist), ("logmap", gr.logmap)):
        half = fn(x.to(dtype), y.to(dtype))
        assert half.dtype == dtype, name
        reference = fn(x.to(dtype).float(), y.to(dtype).float())
        torch.testing.assert_close(half.float(), reference, atol=4 * eps, rtol=2 * eps)
    points = torch.stack([x, y], 1).to(dtype)
    mean = karcher_mean(gr, points)
    assert mean.dtype == dtype
    reference = karcher_mean(gr, gr.projx(points.float()))
    assert gr.dist(mean.float(), reference).max() <= 8 * eps


def test_grnet_under_cpu_autocast_bfloat16():
    torch.manual_seed(1)
    model = GrNet(12, 3, 4, out_sizes=(8, 6), channels=4, pool_size=2)
    x = torch.randn(5, 12, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    # logits agree with float32 to the bfloat16 rounding of the layers (8 bits: a few 1e-2)
    reference = model(x)
    assert (out.float() - reference).abs().max() <= 0.05 * reference.abs().max() + 1e-2


def test_flagship_estimator_refuses_nan_views():
    from manifoldnn.clustering import MultiViewSubspaceClustering

    views = [np.random.default_rng(0).normal(size=(20, 4)) for _ in range(2)]
    views[1][3, 2] = np.nan
    with pytest.raises(ValueError, match="views"):
        MultiViewSubspaceClustering(n_clusters=2, epochs=1).fit(views)
