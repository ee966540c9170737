"""Exact resume of the Riemannian optimisers: saving and reloading equals never stopping.

A model with a Grassmann, a batched Stiefel and a Euclidean parameter trains for ``K`` steps; its
model and optimiser ``state_dict`` s are saved (through ``torch.save``/``torch.load`` to a file, or
through ``copy.deepcopy``), loaded into fresh objects, or the (model, optimiser) pair is deep-copied;
both runs then continue for ``MORE`` steps. The operations of the two runs are the same in the same
order, so the parameters must agree bit for bit, in float64 and in float32.
"""

import copy

import geoopt
import pytest
import torch

import manifoldnn.optim
from manifoldnn.manifolds import Grassmann

K, MORE = 4, 8
LR = 0.02

OPTIMISERS = {
    "adam": lambda params, cls: cls["adam"](params, lr=LR),
    "adam-amsgrad-decay-stabilize": lambda params, cls: cls["adam"](
        params, lr=LR, amsgrad=True, weight_decay=1e-3, stabilize=3
    ),
    "sgd-momentum": lambda params, cls: cls["sgd"](params, lr=LR, momentum=0.9),
    "sgd-nesterov-stabilize": lambda params, cls: cls["sgd"](
        params, lr=LR, momentum=0.9, nesterov=True, stabilize=3
    ),
}
OURS = {"adam": manifoldnn.optim.RiemannianAdam, "sgd": manifoldnn.optim.RiemannianSGD}
GEOOPTS = {"adam": geoopt.optim.RiemannianAdam, "sgd": geoopt.optim.RiemannianSGD}


class Model(torch.nn.Module):
    def __init__(self, dtype: torch.dtype, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        grassmann, stiefel = Grassmann(), geoopt.Stiefel()
        basis = torch.linalg.qr(torch.randn(12, 3, generator=generator, dtype=torch.float64))[0]
        frames = torch.linalg.qr(torch.randn(2, 8, 2, generator=generator, dtype=torch.float64))[0]
        self.basis = geoopt.ManifoldParameter(basis.to(dtype), manifold=grassmann)
        self.frames = geoopt.ManifoldParameter(frames.to(dtype), manifold=stiefel)
        self.bias = torch.nn.Parameter(
            torch.randn(5, generator=generator, dtype=torch.float64).to(dtype)
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # a Rayleigh trace per manifold parameter and a quadratic for the Euclidean one
        rayleigh = torch.trace(self.basis.mT @ a @ self.basis)
        weighted = (self.frames.mT @ b @ self.frames).diagonal(dim1=-2, dim2=-1)
        return (
            -rayleigh
            - (weighted * torch.tensor([2.0, 1.0], dtype=b.dtype)).sum()
            + ((self.bias - c) ** 2).sum()
        )


def _data(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    a = torch.randn(12, 12, generator=generator, dtype=torch.float64)
    b = torch.randn(8, 8, generator=generator, dtype=torch.float64)
    c = torch.randn(5, generator=generator, dtype=torch.float64)
    return (a + a.mT).to(dtype), (b + b.mT).to(dtype), c.to(dtype)


def _train(model: Model, optimizer: torch.optim.Optimizer, data, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        model(*data).backward()
        optimizer.step()


def _resume(kind: str, route: str, dtype: torch.dtype, classes: dict, tmp_path):
    """Train K + MORE steps straight and K, save/reload by ``route``, MORE; return both models."""
    data = _data(dtype)
    model = Model(dtype, seed=0)
    optimizer = OPTIMISERS[kind](model.parameters(), classes)
    _train(model, optimizer, data, K)
    if route == "deepcopy-pair":
        resumed_model, resumed_optimizer = copy.deepcopy((model, optimizer))
    else:
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        if route == "file":
            torch.save(checkpoint, tmp_path / "checkpoint.pt")
            checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        else:  # "deepcopy-state"
            checkpoint = copy.deepcopy(checkpoint)
        resumed_model = Model(
            dtype, seed=1
        )  # different initial values: all must come from the file
        resumed_optimizer = OPTIMISERS[kind](resumed_model.parameters(), classes)
        resumed_model.load_state_dict(checkpoint["model"])
        resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    _train(model, optimizer, data, MORE)
    _train(resumed_model, resumed_optimizer, data, MORE)
    return (model, optimizer), (resumed_model, resumed_optimizer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("route", ["file", "deepcopy-state", "deepcopy-pair"])
@pytest.mark.parametrize("kind", list(OPTIMISERS))
def test_resume_equals_never_stopping(kind, route, dtype, tmp_path):
    (model, optimizer), (resumed, resumed_optimizer) = _resume(kind, route, dtype, OURS, tmp_path)
    for name, parameter in model.named_parameters():
        other = dict(resumed.named_parameters())[name]
        assert other.dtype == dtype
        assert torch.equal(parameter, other), (name, (parameter - other).abs().max().item())
    # the optimiser states agree too, and the step counts are integers as during training
    state, resumed_state = optimizer.state_dict(), resumed_optimizer.state_dict()
    assert state["param_groups"] == resumed_state["param_groups"]
    for index, entry in state["state"].items():
        for key, value in entry.items():
            other = resumed_state["state"][index][key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), (index, key)
            else:
                assert type(other) is type(value) and other == value, (index, key, other)
    if kind.startswith("adam"):
        assert all(type(entry["step"]) is int for entry in resumed_state["state"].values())
        assert all(entry["step"] == K + MORE for entry in resumed_state["state"].values())


@pytest.mark.parametrize("route", ["file", "deepcopy-state", "deepcopy-pair"])
def test_geoopt_adam_drifts_after_resume(route, tmp_path):
    """The bug the subclass fixes: geoopt's own RiemannianAdam does not resume exactly.

    Bound from first-order error propagation: geoopt's resumed bias correction uses
    ``float32(beta2)``, off by ``delta = |float32(0.999) - 0.999| = 1.3e-8``, so ``1 - beta2**t``
    (about ``t (1 - beta2)``) is off by a relative ``delta / (1 - beta2)``; Adam's step (size about
    ``lr`` per entry) is off by half that. Each resumed step thus moves a parameter entry by
    ``lr * delta / (2 (1 - beta2))`` too much or too little; the float64 run must show at least a
    tenth of that, far above float64 rounding.
    """
    beta2 = 0.999
    delta = abs(torch.tensor(beta2, dtype=torch.float32).item() - beta2)
    first_order = LR * delta / (2 * (1 - beta2))
    assert first_order > 1e6 * torch.finfo(torch.float64).eps
    (model, _), (resumed, _) = _resume("adam", route, torch.float64, GEOOPTS, tmp_path)
    drift = max(
        (parameter - dict(resumed.named_parameters())[name]).abs().max().item()
        for name, parameter in model.named_parameters()
    )
    assert drift > 0.1 * first_order


def test_geoopt_adam_drifts_after_resume_float32(tmp_path):
    (model, _), (resumed, _) = _resume("adam", "file", torch.float32, GEOOPTS, tmp_path)
    assert not all(
        torch.equal(parameter, dict(resumed.named_parameters())[name])
        for name, parameter in model.named_parameters()
    )


def test_checkpoints_move_between_geoopt_and_manifoldnn(tmp_path):
    """Same state_dict format: a geoopt checkpoint resumes exactly in manifoldnn's class."""
    dtype = torch.float64
    data = _data(dtype)
    model = Model(dtype, seed=0)
    optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=LR)
    _train(model, optimizer, data, K)
    torch.save({"m": model.state_dict(), "o": optimizer.state_dict()}, tmp_path / "c.pt")
    checkpoint = torch.load(tmp_path / "c.pt", weights_only=True)
    resumed = Model(dtype, seed=1)
    resumed_optimizer = manifoldnn.optim.RiemannianAdam(resumed.parameters(), lr=LR)
    resumed.load_state_dict(checkpoint["m"])
    resumed_optimizer.load_state_dict(checkpoint["o"])
    _train(model, optimizer, data, MORE)  # geoopt's class never stopped: its step stayed an int
    _train(resumed, resumed_optimizer, data, MORE)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, dict(resumed.named_parameters())[name]), name


def test_adam_is_geoopts_update():
    """Uninterrupted, the subclass takes exactly geoopt's steps (it changes only the reload)."""
    dtype = torch.float64
    data = _data(dtype)
    ours, theirs = Model(dtype, seed=0), Model(dtype, seed=0)
    _train(ours, manifoldnn.optim.RiemannianAdam(ours.parameters(), lr=LR), data, K + MORE)
    _train(theirs, geoopt.optim.RiemannianAdam(theirs.parameters(), lr=LR), data, K + MORE)
    for name, parameter in ours.named_parameters():
        assert torch.equal(parameter, dict(theirs.named_parameters())[name]), name
    assert isinstance(
        manifoldnn.optim.RiemannianAdam([torch.zeros(1, requires_grad=True)]),
        geoopt.optim.RiemannianAdam,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda(tmp_path):
    device = torch.device("cuda")
    manifold = Grassmann()
    basis = geoopt.ManifoldParameter(
        manifold.random(12, 3, dtype=torch.float64, device=device), manifold=manifold
    )
    optimizer = manifoldnn.optim.RiemannianAdam([basis], lr=LR)
    (basis.sum() ** 2).backward()
    optimizer.step()
    restored = manifoldnn.optim.RiemannianAdam([basis], lr=LR)
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert type(restored.state[basis]["step"]) is int


# ProjectedAveragedModel: stochastic weight averaging that stays on the manifolds.


class Averaged(torch.nn.Module):
    """A Stiefel weight, a Grassmann basis, a Euclidean bias and a buffer."""

    def __init__(self, device, dtype):
        super().__init__()
        stiefel, grassmann = geoopt.Stiefel(), Grassmann()
        self.weight = geoopt.ManifoldParameter(
            stiefel.random(7, 3, dtype=dtype, device=device), manifold=stiefel
        )
        self.basis = geoopt.ManifoldParameter(
            grassmann.random(6, 2, dtype=dtype, device=device), manifold=grassmann
        )
        self.bias = torch.nn.Parameter(torch.zeros(3, dtype=dtype, device=device))
        self.register_buffer("count", torch.zeros((), dtype=dtype, device=device))


def _iterates(model, count, generator):
    """``count`` random on-manifold iterates of ``model``'s parameters (set in turn by the caller)."""
    iterates = []
    for _ in range(count):
        values = {}
        for name, parameter in model.named_parameters():
            step = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            value = parameter.detach().double().cpu() + 0.3 * step
            if isinstance(parameter, geoopt.ManifoldParameter):
                value = torch.linalg.qr(value)[0]
            values[name] = value
        iterates.append(values)
    return iterates


def _polar(a: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (float64 oracle)."""
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def test_projected_average_is_the_projection_of_the_mean(device, dtype):
    model = Averaged(device, dtype)
    averaged = manifoldnn.optim.ProjectedAveragedModel(model)
    iterates = _iterates(model, 3, torch.Generator().manual_seed(0))
    for index, values in enumerate(iterates):
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.copy_(values[name])
            model.count.fill_(index + 1)
        averaged.update_parameters(model)
    eps = torch.finfo(dtype).eps
    for name, parameter in averaged.module.named_parameters():
        assert parameter.device.type == device.type and parameter.dtype == dtype
        mean = sum(values[name] for values in iterates) / len(iterates)
        got = parameter.detach().double().cpu()
        if isinstance(parameter, geoopt.ManifoldParameter):
            # the projection of the mean of all iterates, not of a re-projected running mean; a
            # polar factor from an SVD of a well-conditioned matrix: O(n eps)
            expected = _polar(mean)
            if name == "basis":  # a Grassmann point: compare subspaces
                got, expected = got @ got.mT, expected @ expected.mT
            assert (got - expected).abs().max() <= 32 * 7 * eps
        else:
            assert (got - mean).abs().max() <= 8 * eps
    assert averaged.n_averaged.item() == 3
    assert averaged.module.count.item() == 3  # buffers follow the model (use_buffers=False)


def test_projected_average_of_one_iterate_is_the_iterate_and_resumes(device):
    model = Averaged(device, torch.float64)
    averaged = manifoldnn.optim.ProjectedAveragedModel(model)
    averaged.update_parameters(model)
    eps = torch.finfo(torch.float64).eps
    for (name, ours), theirs in zip(averaged.module.named_parameters(), model.parameters()):
        if name == "basis":  # a Grassmann point: compare subspaces
            ours, theirs = ours @ ours.mT, theirs @ theirs.mT
        # a point already on the manifold is its own projection, to rounding
        assert (ours - theirs).abs().max() <= 32 * 7 * eps
    # the ambient running mean is in the state dict: a reloaded average continues identically
    iterates = _iterates(model, 2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(iterates[0][name])
    averaged.update_parameters(model)
    restored = manifoldnn.optim.ProjectedAveragedModel(Averaged(device, torch.float64))
    restored.load_state_dict(averaged.state_dict())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(iterates[1][name])
    averaged.update_parameters(model)
    restored.update_parameters(model)
    for ours, theirs in zip(averaged.module.parameters(), restored.module.parameters()):
        assert torch.equal(ours, theirs)
