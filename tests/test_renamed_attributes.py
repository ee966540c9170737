"""Renamed module attributes keep a deprecation alias for one release (see CHANGELOG.md)."""

import pytest

from manifoldnn.layers import FRMap, ManifoldLinear, OrthMap, OrthogonalDirectSum, SubspaceEmbedding
from manifoldnn.manifolds import Sphere
from manifoldnn.models import FusedStreamLM, GrNet, MultiViewGrassmannNet, ProjectorClassifier
from manifoldnn.parametrizations import OrthonormalFrame

CASES = [
    (lambda: FRMap(8, 5), {"in_dim": "in_size", "out_dim": "out_size"}),
    (lambda: ManifoldLinear(Sphere(), 5, 3, num_heads=4), {"heads": "num_heads"}),
    (lambda: OrthMap(2), {"p": "rank"}),
    (lambda: SubspaceEmbedding(3), {"p": "rank"}),
    (lambda: OrthonormalFrame(6, 2), {"n": "ambient_size", "p": "rank"}),
    (
        lambda: OrthogonalDirectSum(7, 3, 5, 22),
        {"n": "text_size", "K": "num_codebooks", "V": "code_size", "c": "out_size"},
    ),
    (lambda: OrthogonalDirectSum(7, 3, 5, 22, readout_size=4), {"readout_dim": "readout_size"}),
    (
        lambda: MultiViewGrassmannNet([20, 30], 4, hidden=(32,), in_size=10, rank=2, out_size=6),
        {"view_dims": "view_sizes", "ambient_dim": "in_size", "projected_dim": "out_size"},
    ),
    (
        lambda: GrNet(12, 3, 4, out_sizes=(10, 8)),
        {"in_dim": "in_size", "p": "rank", "dims": "out_sizes"},
    ),
    (lambda: ProjectorClassifier(6, 3), {"n": "in_size"}),
    (
        lambda: FusedStreamLM(40, 4, 64, 96, text_size=32, code_size=16),
        {
            "n_codebooks": "num_codebooks",
            "c": "dim",
            "text_dim": "text_size",
            "code_dim": "code_size",
        },
    ),
]

PAIRS = [(build, old, new) for build, renames in CASES for old, new in renames.items()]


@pytest.mark.parametrize(
    ("build", "old", "new"),
    PAIRS,
    ids=[f"{build().__class__.__name__}.{old}" for build, old, _ in PAIRS],
)
def test_old_attribute_warns_and_equals_new(build, old, new):
    module = build()
    with pytest.warns(FutureWarning, match=f"{old} is renamed .*{new}"):
        value = getattr(module, old)
    assert value == getattr(module, new)
    with pytest.raises(AttributeError):
        setattr(module, old, value)
