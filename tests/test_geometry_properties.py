"""Properties every registered geometry must have, over float32/float64 and the devices present.

The cases are built from :func:`manifoldnn.manifolds.registered_geometries` (the classes
:func:`~manifoldnn.manifolds.geometry_for` chooses from), so a new geometry class is tested as soon
as it exists; :class:`ProductGeometry` below is such a class, defined here by one class only.

Tolerances. Every quantity compared here is a composition of a few maps that are well conditioned
on the sampled points (tangent vectors of norm at most ``RADIUS = 1``: principal angles at most 1
rad on the Grassmannian, where the logarithm's amplification ``1 / cos(theta)`` is below 2; SPD
eigenvalues within ``e^{+-2}`` of the base point's), applied to entries of size O(1). Each map
then contributes an absolute error of a few ``eps`` per entry, summed over the ``size`` entries
of a point, so the bound used is ``ROUNDING * size * eps`` with ``ROUNDING = 64`` (a few dozen
operations, each exact to ``eps / 2``), scaled by the size of the compared values where they
exceed 1.

Injectivity radius. ``expmap(logmap(x, y))`` is compared within distance ``RADIUS = 1`` of ``x``,
inside the injectivity radius of every registered manifold (pi on the sphere, pi/2 on the
Grassmannian, infinite on the Hadamard manifolds: Euclidean, SPD, Poincaré ball, hyperboloid). Points are
compared through :meth:`~manifoldnn.manifolds.ManifoldGeometry.value_features`, their extrinsic
embedding: on the quotient Grassmannian these are the projectors ``Y Y^T``, so subspaces are
compared, never bases.
"""

import math

import geoopt
import pytest
import torch

from manifoldnn.layers import geodesic_attention
from manifoldnn.linalg import tolerance
from manifoldnn.manifolds import (
    Euclidean,
    GeometryModule,
    ManifoldGeometry,
    Sphere,
    geometry,
    geometry_for,
    karcher_mean,
    registered_geometries,
)

ROUNDING = 64
RADIUS = 1.0
DTYPES = [torch.float32, torch.float64]


class ProductGeometry(ManifoldGeometry):
    r"""Product :math:`M_1 \times \dots \times M_k` of manifolds of vector points
    (``geoopt.ProductManifold``): squared distances add, logarithms, exponentials and extrinsic
    means act factor by factor through each factor's own geometry."""

    manifold_type = geoopt.ProductManifold

    def __init__(self, manifold):
        super().__init__(manifold)
        if any(factor.ndim != 1 for factor in manifold.manifolds):
            raise ValueError("ProductGeometry needs factors of vector points")
        self.factors = [geometry_for(factor) for factor in manifold.manifolds]
        self.widths = [
            geometry.value_features(factor.origin(1, *shape)).shape[-1]
            for geometry, factor, shape in zip(self.factors, manifold.manifolds, manifold.shapes)
        ]

    @classmethod
    def example_manifold(cls):
        return geoopt.ProductManifold((Sphere(), 3), (Euclidean(ndim=1), 2))

    def _split(self, x):
        return [x[..., part] for part in self.manifold.slices]

    def dist(self, x, y, distance=None):
        self.check_distance(distance)
        squares = [
            g.dist(a, b).pow(2) for g, a, b in zip(self.factors, self._split(x), self._split(y))
        ]
        return sum(squares).sqrt()

    def pairwise_sq_dist(self, q, k, distance=None):
        return sum(
            g.pairwise_sq_dist(a, b)
            for g, a, b in zip(self.factors, self._split(q), self._split(k))
        )

    def logmap(self, x, y):
        parts = zip(self.factors, self._split(x), self._split(y))
        return torch.cat([g.logmap(a, b) for g, a, b in parts], -1)

    def pairwise_log(self, q, v):
        parts = zip(self.factors, self._split(q), self._split(v))
        return torch.cat([g.pairwise_log(a, b) for g, a, b in parts], -1)

    def expmap(self, x, u):
        parts = zip(self.factors, self._split(x), self._split(u))
        return torch.cat([g.expmap(a, b) for g, a, b in parts], -1)

    def value_features(self, v):
        return torch.cat([g.value_features(a) for g, a in zip(self.factors, self._split(v))], -1)

    def aggregate(self, mean, point_shape):
        means = mean.split(self.widths, -1)
        shapes = self.manifold.shapes
        parts = zip(self.factors, means, shapes)
        return torch.cat([g.aggregate(m, torch.Size(shape)) for g, m, shape in parts], -1)


GEOMETRIES = registered_geometries()


def _id(cls):
    return cls.__name__


def _point_shape(manifold):
    """A small valid point shape of ``manifold`` (vectors of 5, 6 x 2 bases, 4 x 4 matrices)."""
    for shape in ((5,), (6, 2), (4, 4)):
        if len(shape) != manifold.ndim:
            continue
        try:
            origin = manifold.origin(*shape, dtype=torch.float64)
        except (ValueError, RuntimeError):
            continue
        if tuple(origin.shape) == shape and manifold.check_point_on_manifold(origin):
            return shape
    raise AssertionError(f"no test point shape for {manifold}")


def _bound(dtype, size, scale=1.0):
    return ROUNDING * size * torch.finfo(dtype).eps * max(float(scale), 1.0)


def _norm(manifold, x, u):
    """Riemannian norm of ``u`` at ``x``, shape ``x.shape[:-ndim]``."""
    sq = manifold.inner(x, u, u, keepdim=True)
    batch = x.shape[: x.dim() - manifold.ndim]
    sq = sq.expand(batch + sq.shape[sq.dim() - manifold.ndim :]).reshape(batch)
    return sq.clamp_min(0).sqrt()


def _near(geometry, base, radius, generator):
    """Points at Riemannian distance in ``[radius / 4, radius]`` of ``base`` (same shape)."""
    manifold = geometry.manifold
    noise = torch.randn(base.shape, generator=generator, dtype=torch.float64)
    u = manifold.proju(base, noise.to(base))
    lengths = radius * (
        0.25
        + 0.75
        * torch.rand(
            base.shape[: base.dim() - manifold.ndim], generator=generator, dtype=torch.float64
        )
    )
    scale = lengths.to(base) / _norm(manifold, base, u).clamp_min(torch.finfo(base.dtype).tiny)
    return geometry.expmap(base, u * scale.reshape(scale.shape + (1,) * manifold.ndim))


def _sample(cls, batch, dtype, device, seed):
    """The class's example manifold, its geometry and points ``(*batch, *point_shape)`` near a
    common base point (within ``RADIUS`` of it)."""
    manifold = cls.example_manifold()
    geometry = geometry_for(manifold)
    assert type(geometry) is cls
    generator = torch.Generator().manual_seed(seed)
    shape = _point_shape(manifold)
    origin = manifold.origin(*shape, dtype=dtype, device=device)
    centre = _near(geometry, origin, 0.5 * RADIUS, generator)
    base = centre.expand(tuple(batch) + tuple(shape)).contiguous()
    return manifold, geometry, _near(geometry, base, RADIUS, generator), shape


def _pairs(geometry, q, k):
    nd = geometry.point_ndim
    return q.unsqueeze(-1 - nd), k.unsqueeze(-2 - nd)


def _distance_cases():
    return [
        pytest.param(cls, name, id=f"{cls.__name__}-{name}")
        for cls in GEOMETRIES
        for name in geometry_for(cls.example_manifold()).distances
    ]


def _sdpa_cases():
    return [
        pytest.param(cls, name, id=f"{cls.__name__}-{name}")
        for cls in GEOMETRIES
        for name in sorted(cls.sdpa_distances)
    ]


def test_the_registry_holds_the_library_geometries_and_the_new_one():
    """Every geometry class the library exports is registered (a new one cannot be forgotten),
    and so is the one this file adds."""
    exported = {
        name
        for name in geometry.__all__
        if name.endswith("Geometry") and name != "ManifoldGeometry"
    }
    assert len(exported) >= 6
    assert exported | {"ProductGeometry"} <= {cls.__name__ for cls in GEOMETRIES}


@pytest.mark.parametrize("cls", GEOMETRIES, ids=_id)
def test_a_geometry_module_takes_a_manifold_or_its_geometry(cls):
    manifold = cls.example_manifold()
    for argument in (manifold, geometry_for(manifold)):
        module = GeometryModule(argument)
        assert type(module.geometry) is cls and module.manifold is manifold


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, distance", _distance_cases())
def test_pairwise_sq_dist_equals_dist_squared(cls, distance, dtype, device):
    _, geometry, q, shape = _sample(cls, (2, 3), dtype, device, seed=1)
    _, _, k, _ = _sample(cls, (2, 4), dtype, device, seed=1)  # same centre: some close pairs
    got = geometry.pairwise_sq_dist(q, k, distance)
    reference = geometry.dist(*_pairs(geometry, q, k), distance).pow(2)
    assert got.shape == (2, 3, 4)
    bound = _bound(dtype, math.prod(shape), reference.abs().max())
    torch.testing.assert_close(got, reference, atol=bound, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", GEOMETRIES, ids=_id)
def test_expmap_of_logmap_returns_the_point_within_the_injectivity_radius(cls, dtype, device):
    _, geometry, x, shape = _sample(cls, (6,), dtype, device, seed=2)
    generator = torch.Generator().manual_seed(3)
    y = _near(geometry, x, RADIUS, generator)  # each y within RADIUS of its x
    back = geometry.expmap(x, geometry.logmap(x, y))
    expected = geometry.value_features(y)
    bound = _bound(dtype, math.prod(shape), expected.abs().max())
    torch.testing.assert_close(geometry.value_features(back), expected, atol=bound, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, distance", _sdpa_cases())
def test_sdpa_features_give_minus_the_squared_distance_up_to_a_query_constant(
    cls, distance, dtype, device
):
    _, geometry, q, _ = _sample(cls, (2, 3), dtype, device, seed=4)
    _, _, k, _ = _sample(cls, (2, 5), dtype, device, seed=5)
    phi, psi = geometry.sdpa_features(q, k, distance)
    scores = phi @ psi.transpose(-1, -2) + geometry.pairwise_sq_dist(q, k, distance)
    # each inner product sums F products of size |phi| |psi|
    scale = phi.abs().max() * psi.abs().max()
    bound = _bound(dtype, phi.shape[-1], scale)
    torch.testing.assert_close(scores, scores[..., :1].expand_as(scores), atol=bound, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", GEOMETRIES, ids=_id)
def test_aggregates_stay_on_the_manifold(cls, dtype, device):
    manifold, geometry, v, shape = _sample(cls, (2, 5), dtype, device, seed=6)
    generator = torch.Generator().manual_seed(7)
    weights = torch.softmax(torch.randn(2, 3, 5, generator=generator, dtype=dtype), -1).to(device)
    features = geometry.value_features(v)
    out = geometry.aggregate(weights @ features, torch.Size(shape))
    assert out.shape == (2, 3) + tuple(shape)
    ok, reason = manifold.check_point_on_manifold(
        out, explain=True, atol=_bound(dtype, math.prod(shape)), rtol=0
    )
    assert ok, reason


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", GEOMETRIES, ids=_id)
def test_batched_equals_looped(cls, dtype, device):
    manifold, geometry, q, shape = _sample(cls, (3, 2), dtype, device, seed=8)
    _, _, k, _ = _sample(cls, (3, 4), dtype, device, seed=9)
    size = math.prod(shape)
    distance = geometry.default_distance
    batched = geometry.pairwise_sq_dist(q, k, distance)
    looped = torch.stack([geometry.pairwise_sq_dist(q[b], k[b], distance) for b in range(3)])
    torch.testing.assert_close(batched, looped, atol=_bound(dtype, size, looped.max()), rtol=0)
    logs = geometry.pairwise_log(q, k)
    assert logs.shape == (3, 2, 4) + tuple(shape)
    for b in range(3):
        for i in range(2):
            for j in range(4):
                torch.testing.assert_close(
                    logs[b, i, j],
                    geometry.logmap(q[b, i], k[b, j]),
                    atol=_bound(dtype, size, logs.abs().max()),
                    rtol=0,
                )
    means = karcher_mean(manifold, k)
    looped_means = torch.stack([karcher_mean(manifold, k[b]) for b in range(3)])
    # both stop at the Karcher tolerance: the means agree to it, not to rounding
    bound = tolerance("karcher_tol", dtype) + _bound(dtype, size)
    distances = geometry.dist(means, looped_means)
    assert bool((distances <= bound).all()), distances


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", GEOMETRIES, ids=_id)
def test_karcher_mean_gradient_vanishes_at_its_output(cls, dtype, device):
    manifold, geometry, points, shape = _sample(cls, (2, 6), dtype, device, seed=10)
    generator = torch.Generator().manual_seed(11)
    weights = (0.5 + torch.rand(2, 6, generator=generator, dtype=dtype)).to(device)
    mean = karcher_mean(manifold, points, weights)
    normalised = weights / weights.sum(-1, keepdim=True)
    # the gradient recomputed with the geometry's plain logarithms (not the solver's own form)
    gradient = ManifoldGeometry.weighted_logmap_sum(geometry, mean, points, normalised)
    norm = _norm(manifold, mean, gradient)
    # the solver stops at the Karcher tolerance; the final projection moves the mean by rounding
    bound = tolerance("karcher_tol", dtype) + _bound(dtype, math.prod(shape))
    assert bool((norm <= bound).all()), norm


# ------------------------------------------------------------------ a manifold added by one class
@pytest.mark.parametrize("dtype", DTYPES)
def test_karcher_mean_and_attention_on_a_manifold_added_by_one_class(dtype, device):
    """The product of a sphere and a line: its Karcher mean is the pair of the factors' means
    (the cost separates), and attention's output is the pair of the factors' extrinsic means
    under the weights of the summed squared distances."""
    manifold, geometry, points, _ = _sample(ProductGeometry, (2, 5), dtype, device, seed=12)
    assert isinstance(geometry, ProductGeometry)
    sphere_points, line_points = points[..., :3], points[..., 3:]

    mean = karcher_mean(manifold, points)
    sphere_mean = karcher_mean(Sphere(), sphere_points)
    bound = tolerance("karcher_tol", dtype) + _bound(dtype, 5)
    assert bool((Sphere().dist(mean[..., :3], sphere_mean) <= bound).all())
    torch.testing.assert_close(mean[..., 3:], line_points.mean(-2), atol=bound, rtol=0)

    query, key = points[:, :2], points
    result = geodesic_attention(manifold, query, key, key, tau=0.5)
    out = result[0] if isinstance(result, tuple) else result
    sq = (
        2
        * torch.atan2(
            (query[..., None, :3] - key[..., None, :, :3]).norm(dim=-1),
            (query[..., None, :3] + key[..., None, :, :3]).norm(dim=-1),
        )
    ).pow(2) + (query[..., None, 3:] - key[..., None, :, 3:]).pow(2).sum(-1)
    weights = torch.softmax(-sq / 0.5, -1)
    sphere_part = weights @ key[..., :3]
    expected = torch.cat(
        [sphere_part / sphere_part.norm(dim=-1, keepdim=True), weights @ key[..., 3:]], -1
    )
    torch.testing.assert_close(out, expected, atol=_bound(dtype, 5), rtol=0)
    ok, reason = manifold.check_point_on_manifold(out, explain=True, atol=_bound(dtype, 5), rtol=0)
    assert ok, reason
