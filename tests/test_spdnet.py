"""SPDNet: shapes, argument checks, and training on a planted two-class problem."""

import pytest
import torch

from manifoldnn.models import SPDNet


def _planted(num_per_class, n, seed, dtype=torch.float64, device="cpu"):
    """Covariances of n-channel signals whose class sets which of two fixed directions carries
    extra variance (3 times the unit noise), sampled from 40 time steps each."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.linalg.qr(torch.randn(n, 2, generator=torch.Generator().manual_seed(0)))[0]
    xs, ys = [], []
    for label in (0, 1):
        noise = torch.randn(num_per_class, n, 40, generator=generator, dtype=torch.float64)
        loud = torch.randn(num_per_class, 1, 40, generator=generator, dtype=torch.float64)
        signals = noise + 3.0 * directions[:, label].double()[None, :, None] * loud
        xs.append(signals @ signals.transpose(-1, -2) / 40)
        ys.append(torch.full((num_per_class,), label))
    return torch.cat(xs).to(dtype=dtype, device=device), torch.cat(ys).to(device)


@pytest.mark.parametrize(
    "batch_norm, variance",
    [(False, False), (True, False), (True, True)],
    ids=["plain", "batch_norm", "batch_norm_variance"],
)
def test_spdnet_learns_a_planted_two_class_problem(batch_norm, variance, device, train_classifier):
    torch.manual_seed(0)
    x_train, y_train = _planted(32, 6, seed=1, device=device)
    x_test, y_test = _planted(32, 6, seed=2, device=device)
    model = SPDNet(
        [6, 4, 3], 2, batch_norm=batch_norm, batch_norm_variance=variance,
        device=device, dtype=torch.float64,
    )  # fmt: skip
    train_classifier(model, x_train, y_train, steps=30, lr=0.02)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).double().mean()
    # the classes differ by a variance ratio of 10 along one direction: separable by far
    assert float(accuracy) >= 0.95, float(accuracy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spdnet_shapes_and_dtypes(dtype, device):
    model = SPDNet([6, 4], 3, device=device, dtype=dtype)
    x, _ = _planted(2, 6, seed=3, dtype=dtype, device=device)
    assert model(x).shape == (4, 3) and model(x).dtype == dtype
    assert model(x[0]).shape == (3,)
    double = SPDNet([6, 4, 2], 3, batch_norm=True, dtype=torch.float32).double()
    weight = double.features[0].weight.detach()
    error = (weight.T @ weight - torch.eye(4, dtype=torch.float64)).abs().max()
    assert float(error) <= 64 * 6 * torch.finfo(torch.float64).eps


def test_spdnet_arguments_are_checked_by_name():
    with pytest.raises(ValueError, match="layer_sizes"):
        SPDNet([6], 2)
    with pytest.raises(ValueError, match="layer_sizes"):
        SPDNet([4, 6], 2)
    with pytest.raises(ValueError, match="num_classes"):
        SPDNet([6, 4], 0)
    with pytest.raises(ValueError, match="batch_norm"):
        SPDNet([6, 4], 2, batch_norm=1)
    with pytest.raises(ValueError, match="batch_norm_variance"):
        SPDNet([6, 4], 2, batch_norm=True, batch_norm_variance=1)
    with pytest.raises(ValueError, match="input must be \\(\\.\\.\\., 6, 6\\)"):
        SPDNet([6, 4], 2)(torch.eye(5).expand(3, 5, 5))


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch_norm_eval"])
def test_spdnet_compiles_without_graph_breaks(batch_norm):
    torch.manual_seed(0)
    model = SPDNet([6, 4, 3], 2, batch_norm=batch_norm).eval()
    x, _ = _planted(3, 6, seed=4, dtype=torch.float32)
    torch._dynamo.reset()
    assert torch._dynamo.explain(model)(x).graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    expected = model(x).detach()
    # logits are O(1) sums over a few dozen features of the same float32 computations
    tol = 64 * 6 * torch.finfo(torch.float32).eps * max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(compiled(x).detach(), expected, atol=tol, rtol=0)
