"""Forward and backward of the main layers on every device present, in float32 and float64: the
outputs and every gradient stay on the input's device and in its dtype."""

from __future__ import annotations

import pytest
import torch

from manifoldnn.layers import GeodesicAttention
from manifoldnn.linalg import qr_positive
from manifoldnn.losses import ProjectionMetricContrastiveLoss
from manifoldnn.manifolds import Grassmann
from manifoldnn.models import GrNet

DTYPES = [torch.float32, torch.float64]


def same_place(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> bool:
    return tensor.device.type == device.type and tensor.dtype == dtype


def check_gradients(parameters, device: torch.device, dtype: torch.dtype) -> None:
    grads = [q.grad for q in parameters]
    assert grads and all(g is not None for g in grads)
    for grad in grads:
        assert same_place(grad, device, dtype) and torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_attention_on_the_grassmannian(device, dtype):
    generator = torch.Generator().manual_seed(0)
    layer = GeodesicAttention(Grassmann(), 6, 4, num_heads=2, device=device, dtype=dtype)
    x = qr_positive(torch.randn(3, 5, 6, 2, generator=generator, dtype=dtype)).to(device)
    x.requires_grad_(True)
    out = layer(x)[0]
    assert same_place(out, device, dtype) and torch.isfinite(out).all()
    (out @ out.transpose(-1, -2)).pow(2).sum().backward()
    check_gradients([x, *layer.parameters()], device, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grnet(device, dtype):
    generator = torch.Generator().manual_seed(1)
    model = GrNet(8, 2, 3, out_sizes=(6, 4), channels=4, pool_size=2).to(device=device, dtype=dtype)
    features = torch.randn(5, 8, 7, generator=generator, dtype=dtype).to(device)
    logits = model(features)
    assert logits.shape == (5, 3) and same_place(logits, device, dtype)
    labels = torch.tensor([0, 1, 2, 0, 1], device=device)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    check_gradients(list(model.parameters()), device, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_projection_metric_loss(device, dtype):
    generator = torch.Generator().manual_seed(2)
    views = qr_positive(torch.randn(3, 6, 5, 2, generator=generator, dtype=dtype)).to(device)
    views.requires_grad_(True)
    loss = ProjectionMetricContrastiveLoss(0.5)(views)
    assert loss.shape == () and same_place(loss, device, dtype) and torch.isfinite(loss)
    loss.backward()
    check_gradients([views], device, dtype)
