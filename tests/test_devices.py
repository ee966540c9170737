"""Forward and backward of the main layers on every device present, in float32 and float64: the
outputs and every gradient stay on the input's device and in its dtype."""

from __future__ import annotations

import pytest
import torch

from manifoldnn.layers import FavorAttention, GeodesicAttention, OrthogonalDirectSum
from manifoldnn.linalg import qr_positive
from manifoldnn.losses import ProjectionMetricContrastiveLoss
from manifoldnn.manifolds import Grassmann
from manifoldnn.models import (
    BDH,
    GPT,
    BDHConfig,
    FusedStreamLM,
    GPTConfig,
    GrNet,
    MultiViewGrassmannNet,
)

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


def _favor(device, dtype, generator):
    layer = FavorAttention(Grassmann(), 6, 4, num_heads=2, num_features=16, out_size=3)
    x = qr_positive(torch.randn(3, 5, 6, 2, generator=generator, dtype=dtype))
    return layer, (x,), {"is_causal": True}, lambda out: out[0] @ out[0].transpose(-1, -2)


def _fusion(device, dtype, generator):
    layer = OrthogonalDirectSum(4, 2, 3, 12, parametrization="cayley", num_tokens=5)
    a = torch.randn(3, 4, generator=generator, dtype=dtype)
    ids = torch.randint(0, 5, (3, 2), generator=generator)
    return layer, (a, ids), {}, lambda out: layer.decompose(out)[1]


def _bdh(device, dtype, generator):
    model = BDH(BDHConfig(num_layers=2, dim=8, num_heads=2, num_neurons=16, dropout=0.0))
    return model, (torch.randint(0, 256, (2, 9), generator=generator),), {}, lambda out: out


def _gpt(device, dtype, generator):
    model = GPT(GPTConfig(num_layers=1, dim=8, num_heads=2))
    return model, (torch.randint(0, 256, (2, 9), generator=generator),), {}, lambda out: out


def _fused_lm(device, dtype, generator):
    model = FusedStreamLM(5, 2, 4, 20, text_size=4, code_size=3, num_layers=1, num_heads=2)
    text = torch.randint(0, 5, (2, 6), generator=generator)
    codes = torch.randint(0, 4, (2, 6, 2), generator=generator)
    return model, (text, codes), {}, lambda out: out


def _multiview(device, dtype, generator):
    model = MultiViewGrassmannNet([5, 4], 3, hidden=(8,), in_size=6, rank=2, out_size=4)
    views = [
        torch.randn(4, 5, generator=generator, dtype=dtype),
        torch.randn(4, 4, generator=generator, dtype=dtype),
    ]
    return model, (views,), {}, lambda out: out.probabilities


MODULES = {
    "favor_attention": _favor,
    "orthogonal_direct_sum": _fusion,
    "bdh": _bdh,
    "gpt": _gpt,
    "fused_stream_lm": _fused_lm,
    "multiview_grassmann_net": _multiview,
}


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    return [v.to(device) for v in value]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_forward_backward(name, device, dtype):
    generator = torch.Generator().manual_seed(3)
    module, inputs, options, read = MODULES[name](device, dtype, generator)
    module = module.to(device=device, dtype=dtype)
    out = read(module(*(_to(x, device) for x in inputs), **options))
    assert same_place(out, device, dtype) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    trained = [p for p in module.parameters() if p.grad is not None]
    check_gradients(trained, device, dtype)
