"""Shared test plumbing: the ``device`` fixture over the devices present (CUDA skipped with its
reason when absent), a ``dtype`` fixture (float32, float64), a ``train_classifier`` fixture (full-batch
Riemannian Adam on a cross-entropy), the ``--device`` option, and the
repository root, ``examples/`` and ``benchmarks/`` on ``sys.path`` for the smoke tests of ``examples/`` and ``benchmarks/``.

``pytest --device cuda`` (or ``cpu``) runs only the tests that take the ``device`` fixture, on that
device, and with ``cuda`` also the tests named ``test_cuda_*`` / ``test_*_cuda*`` (CUDA-only tests
written without the fixture); ``scripts/gpu_check.sh`` runs the suite's CUDA tests this way.
"""

import sys
from pathlib import Path

import geoopt
import pytest
import torch

# the smoke tests import examples.x and benchmarks.x from the repository root, and those import
# their shared helpers as example_common / benchmark_common, as when run as scripts
ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT / "benchmarks", ROOT / "examples", ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() False)"
        ),
    ),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="run only the tests that take the `device` fixture, on this device (default: every "
        "test, on every device present)",
    )


def pytest_configure(config: pytest.Config) -> None:
    wanted = config.getoption("--device")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: torch.cuda.is_available() is False")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = config.getoption("--device")
    if wanted is None:
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if "device" in params:
            chosen = torch.device(params["device"]).type == wanted
        else:
            chosen = wanted == "cuda" and "cuda" in getattr(item, "originalname", item.name)
        (keep if chosen else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each device present: ``cpu`` always, ``cuda`` when ``torch.cuda.is_available()``."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    """float32 and float64 (a test's own ``@pytest.mark.parametrize("dtype", ...)`` overrides it)."""
    return request.param


@pytest.fixture
def train_classifier():
    """``train(model, x, labels, steps=, lr=)``: ``steps`` full-batch
    :class:`geoopt.optim.RiemannianAdam` steps on the cross-entropy of ``model(x)`` (manifold
    parameters stay on their manifolds); returns the per-step losses as a tensor."""

    def train(model, x, labels, *, steps: int, lr: float) -> torch.Tensor:
        optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    return train
