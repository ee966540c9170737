"""The Grassmann manifold inside geoopt: ManifoldParameter, Riemannian optimisers, state_dict, deepcopy."""

import copy
import io

import geoopt
import numpy as np
import pytest
import scipy.linalg
import torch

from manifoldnn.manifolds import Grassmann

N, P = 12, 3


class Subspace(torch.nn.Module):
    def __init__(self, n: int, p: int, device=None):
        super().__init__()
        manifold = Grassmann()
        self.basis = geoopt.ManifoldParameter(
            manifold.random(n, p, dtype=torch.float64, device=device), manifold=manifold
        )

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        # negative Rayleigh trace: minimised by the dominant p-dimensional eigenspace of a
        return -torch.trace(self.basis.T @ a @ self.basis)


def _symmetric_with_gap(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    eigenvalues = np.concatenate([[5.0, 4.5, 4.0], rng.uniform(0.0, 2.0, N - 3)])
    return (q * eigenvalues) @ q.T


@pytest.mark.parametrize(
    "optimizer_cls, lr, steps",
    [(geoopt.optim.RiemannianAdam, 0.05, 600), (geoopt.optim.RiemannianSGD, 0.05, 600)],
)
def test_optimisers_find_dominant_eigenspace(optimizer_cls, lr, steps, device):
    torch.manual_seed(0)
    a_np = _symmetric_with_gap(1)
    a = torch.from_numpy(a_np).to(device)
    model = Subspace(N, P, device)
    optimizer = optimizer_cls(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        model(a).backward()
        optimizer.step()
    _, vectors = scipy.linalg.eigh(a_np)
    reference = torch.from_numpy(vectors[:, -P:]).to(device)
    manifold = model.basis.manifold
    assert manifold.projection_distance(model.basis.detach(), reference) < 1e-4
    ok, reason = manifold.check_point_on_manifold(model.basis.detach(), explain=True, atol=1e-10)
    assert ok, reason


def test_state_dict_and_deepcopy_round_trip(device):
    torch.manual_seed(1)
    model = Subspace(N, P, device)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = Subspace(N, P, device)
    assert not torch.equal(other.basis, model.basis)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other.basis, model.basis)
    assert isinstance(other.basis, geoopt.ManifoldParameter)
    assert isinstance(other.basis.manifold, Grassmann)

    clone = copy.deepcopy(model)
    assert torch.equal(clone.basis, model.basis)
    assert isinstance(clone.basis.manifold, Grassmann)
    assert clone.basis.data_ptr() != model.basis.data_ptr()
    # the copy trains independently and stays on the manifold
    optimizer = geoopt.optim.RiemannianAdam(clone.parameters(), lr=0.1)
    clone(torch.from_numpy(_symmetric_with_gap(2)).to(device)).backward()
    optimizer.step()
    assert not torch.equal(clone.basis, model.basis)
    assert clone.basis.manifold.check_point_on_manifold(clone.basis.detach(), atol=1e-10)


def test_manifold_parameter_checks_points(device):
    manifold = Grassmann()
    off = geoopt.ManifoldParameter(torch.randn(5, 2, device=device), manifold=manifold)
    with pytest.raises(ValueError, match="X\\^T X"):
        manifold.assert_check_point_on_manifold(off)
    param = geoopt.ManifoldParameter(manifold.random(5, 2, device=device), manifold=manifold)
    assert param.manifold.check_point_on_manifold(param.detach())
