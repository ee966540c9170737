"""The package layout: each subpackage imports only those below it, and no private names across.

The order (``manifoldnn/__init__.py`` lists it): ``validation`` at the bottom; ``linalg`` and
``utils``; ``datasets`` and ``manifolds``; ``losses``, ``fairness``, ``parametrizations``, ``optim``;
``layers``; ``models``; ``clustering``, ``merging`` and ``embedding``. ``examples/`` and
``benchmarks/`` sit above all of them; the
top-level ``manifoldnn/__init__.py`` only re-exports, lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import manifoldnn
from manifoldnn.manifolds import ManifoldGeometry, geometry_for

ROOT = Path(manifoldnn.__file__).parent

TIERS = {
    "validation": 0,
    "linalg": 1,
    "utils": 1,
    "datasets": 2,
    "manifolds": 2,
    "data": 3,  # compatibility re-export of datasets
    "losses": 3,
    "fairness": 3,
    "parametrizations": 3,
    "optim": 3,
    "layers": 4,
    "models": 5,
    "clustering": 6,
    "merging": 6,
    "embedding": 6,
}


def _imports(path: Path):
    """``(module, names)`` of every ``from X import ...`` in ``path``, relative imports resolved."""
    package = path.relative_to(ROOT.parent).with_suffix("").parts
    if package[-1] == "__init__":
        package = package[:-1]
    else:
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            yield module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "manifoldnn" and len(parts) > 1 else None


SOURCES = sorted(p for p in ROOT.rglob("*.py") if p != ROOT / "__init__.py")


def test_every_subpackage_has_a_tier():
    found = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in SOURCES}
    assert found <= set(TIERS), found - set(TIERS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_downwards_and_not_into_private_names(path):
    own = path.relative_to(ROOT).parts[0].removesuffix(".py")
    for module, names in _imports(path):
        target = _subpackage(module)
        if target is None or target == own:
            continue
        assert TIERS[target] < TIERS[own], f"{own} imports {module} (tier {TIERS[target]})"
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{own} imports private {private} from {module}"
        assert not any(part.startswith("_") for part in module.split(".")[2:]), (
            f"{own} imports the private module {module}"
        )


def test_a_new_manifold_is_one_new_class():
    """A hyperboloid subclass: registering a geometry makes attention and the fairness metric use
    it (a subclass of its own, so that the library's ``LorentzGeometry`` keeps geoopt's class)."""
    import geoopt
    import torch

    from manifoldnn.fairness import FairnessMetric
    from manifoldnn.layers import geodesic_attention

    class Hyperboloid(geoopt.Lorentz):
        pass

    class HyperboloidGeometry(ManifoldGeometry):
        manifold_type = Hyperboloid

    lorentz = Hyperboloid()
    geometry = geometry_for(lorentz)
    assert isinstance(geometry, HyperboloidGeometry)
    torch.manual_seed(0)
    x = lorentz.projx(torch.cat([torch.zeros(2, 5, 1), 0.5 * torch.randn(2, 5, 3)], -1).double())
    # keys far apart: attention to the nearest key alone at a tiny temperature returns each query
    out, _ = geodesic_attention(lorentz, x, x, x, tau=1e-4, aggregation="tangent")
    torch.testing.assert_close(out, x, atol=1e-8, rtol=0)
    # pairwise distances equal the manifold's own, so the fairness metric at alpha=0 does too
    metric = FairnessMetric(lorentz, [lambda p: p[..., 1]], alpha=0.0)
    reference = lorentz.dist(x.unsqueeze(-2), x.unsqueeze(-3)).pow(2)
    torch.testing.assert_close(metric.sq_dist(x, x), reference)
