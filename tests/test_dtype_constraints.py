"""Every module with a constrained parameter keeps its constraint to the rounding of a new dtype.

``Module.to(dtype)`` / ``.double()`` convert entry by entry, so a frame orthonormal in float32 is
orthonormal only to float32 rounding in float64 (the decomposition of the fusion layer was off by
about 1e-7). The modules re-project their constrained tensors after a floating dtype change; this
file finds the modules that hold one by scanning the package, and checks each of them.
"""

from __future__ import annotations

import inspect
import pkgutil
import re

import geoopt
import pytest
import torch
from torch import nn

import manifoldnn
from manifoldnn.layers import (
    BiMap,
    BirkhoffMixing,
    FRMap,
    HyperbolicMLR,
    HyperConnections,
    OrthogonalDirectSum,
    OrthogonalMixing,
    SPDBatchNorm,
)
from manifoldnn.models import FusedStreamLM, GrNet, MultiViewGrassmannNet, SPDNet
from manifoldnn.optim import ProjectedAveragedModel
from manifoldnn.parametrizations import PARAMETRIZATIONS, OrthonormalFrame

# one small instance per class (and per parametrisation where the class has several)
CASES = {
    "FRMap": lambda: FRMap(9, 5, channels=3),
    **{
        f"OrthonormalFrame-{p}": (lambda p=p: _moved_frame(OrthonormalFrame(11, 4, p)))
        for p in PARAMETRIZATIONS
    },
    **{
        f"OrthogonalDirectSum-{p}": (
            lambda p=p: OrthogonalDirectSum(7, 3, 5, 22, parametrization=p)
        )
        for p in PARAMETRIZATIONS
    },
    "OrthogonalDirectSum-lossy": lambda: OrthogonalDirectSum(7, 3, 5, 12, rank_a=5, rank_b=6),
    "GrNet": lambda: GrNet(8, 2, 3, out_sizes=(6, 4), channels=4, pool_size=2),
    "MultiViewGrassmannNet": lambda: MultiViewGrassmannNet(
        [5, 4], 3, hidden=(8,), in_size=6, rank=2, out_size=4
    ),
    "BiMap": lambda: BiMap(9, 5),
    "HyperbolicMLR": lambda: HyperbolicMLR(6, 4),
    "SPDBatchNorm": lambda: SPDBatchNorm(5),
    "SPDNet": lambda: SPDNet([9, 6, 4], 3, batch_norm=True),
    # the averaged copy of a constrained module keeps the module's re-projection
    "ProjectedAveragedModel": lambda: ProjectedAveragedModel(FRMap(9, 5, channels=3)),
    "FusedStreamLM": lambda: FusedStreamLM(
        5, 2, 4, 20, text_size=4, code_size=3, num_layers=1, num_heads=2
    ),
    "BirkhoffMixing": lambda: BirkhoffMixing(5),
    **{
        f"OrthogonalMixing-{p}": (lambda p=p: _moved_mixing(OrthogonalMixing(5, parametrization=p)))
        for p in PARAMETRIZATIONS
    },
    **{
        f"HyperConnections-{c}": (lambda c=c: HyperConnections(6, 4, nn.Linear(6, 6), constraint=c))
        for c in ("birkhoff", "orthogonal")
    },
}


def _moved_mixing(mixing: OrthogonalMixing) -> OrthogonalMixing:
    """An orthogonal mixing away from the identity (exact in every dtype)."""
    _moved_frame(mixing.frame)
    return mixing


def _moved_frame(frame: OrthonormalFrame) -> OrthonormalFrame:
    """A frame away from its initial point (the identity columns are exact in every dtype)."""
    gaussian = torch.randn(
        frame.ambient_size, frame.rank, generator=torch.Generator().manual_seed(3)
    )
    frame.load_(gaussian)
    if frame.parametrization != "stiefel":
        with torch.no_grad():
            frame.skew_weight.normal_(std=0.3)
    return frame


def _public_module_classes() -> dict[str, type]:
    classes = {}
    for info in pkgutil.walk_packages(manifoldnn.__path__, "manifoldnn."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = __import__(info.name, fromlist=["__all__"])
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isclass(value) and issubclass(value, nn.Module):
                classes[name] = value
    return classes


def _constrained_classes() -> set[str]:
    """Classes whose source creates a ``geoopt.ManifoldParameter`` (directly or through
    ``manifoldnn.parametrizations.stiefel_parameter``), and, transitively, the classes
    whose source builds one of those."""
    classes = _public_module_classes()
    sources = {name: inspect.getsource(cls) for name, cls in classes.items()}
    creates = re.compile(r"\b(ManifoldParameter|stiefel_parameter)\(")
    found = {name for name, source in sources.items() if creates.search(source)}
    while True:
        calls = re.compile(r"\b(" + "|".join(sorted(found)) + r")\(")
        grown = found | {name for name, source in sources.items() if calls.search(source)}
        if grown == found:
            return found
        found = grown


def test_every_constrained_module_is_checked() -> None:
    constrained = _constrained_classes()
    assert {"FRMap", "OrthonormalFrame", "OrthogonalDirectSum", "GrNet"} <= constrained
    covered = {case.split("-")[0] for case in CASES}
    assert constrained <= covered, f"add a case for {sorted(constrained - covered)}"


def _constraint_errors(module: nn.Module) -> list[tuple[str, float, int]]:
    """``(name, error, size)`` for every constrained tensor: the distance of each
    ``ManifoldParameter`` to its projection, and ``max |Q^T Q - I|`` of each frame."""
    errors = []
    for name, parameter in module.named_parameters():
        if isinstance(parameter, geoopt.ManifoldParameter):
            with torch.no_grad():
                projected = parameter.manifold.projx(parameter.detach().to(torch.float64))
            error = (projected - parameter.detach().to(torch.float64)).abs().max()
            errors.append((name, float(error), max(parameter.shape[-2:])))
    for name, frame in module.named_modules():
        if isinstance(frame, OrthonormalFrame):
            with torch.no_grad():
                q = frame().detach().to(torch.float64)
            eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
            error = (q.transpose(-1, -2) @ q - eye).abs().max()
            errors.append((name or "frame", float(error), frame.ambient_size))
    return errors


CONVERSIONS = {
    "double": (torch.float32, lambda m: m.double(), torch.float64),
    "to_float64": (torch.float32, lambda m: m.to(torch.float64), torch.float64),
    "float": (torch.float64, lambda m: m.float(), torch.float32),
}


@pytest.mark.parametrize("conversion", list(CONVERSIONS))
@pytest.mark.parametrize("case", list(CASES))
def test_constraint_holds_to_the_new_dtype_rounding(case: str, conversion: str, device) -> None:
    start, convert, target = CONVERSIONS[conversion]
    torch.manual_seed(0)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(start)
        try:
            module = CASES[case]()
        finally:
            torch.set_default_dtype(previous)
    module = convert(module.to(device))
    eps = torch.finfo(target).eps
    errors = _constraint_errors(module)
    assert errors
    for name, error, size in errors:
        # rounding of a float64 polar factor / QR stored in the target dtype: a few eps per
        # entry of Q^T Q, each a sum of ``size`` products
        assert error <= 4 * size * eps, (name, error, 4 * size * eps)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_fusion_decomposes_to_float64_rounding_after_double(parametrization: str, device) -> None:
    torch.manual_seed(0)
    module = OrthogonalDirectSum(7, 3, 5, 22, parametrization=parametrization, device=device)
    module = module.double()
    a = torch.randn(4, 7, dtype=torch.float64, device=device)
    b = torch.randn(4, 3, 5, dtype=torch.float64, device=device)
    a_hat, b_hat = module.decompose(module(a, b))
    # each coordinate is a sum of 22 products twice over: 2 * 22 eps times the largest entry
    tol = 4 * 22 * torch.finfo(torch.float64).eps * max(a.abs().max(), b.abs().max())
    assert (a_hat - a).abs().max() <= tol
    assert (b_hat - b).abs().max() <= tol
