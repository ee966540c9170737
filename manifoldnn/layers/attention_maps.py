r"""Geometry used by :class:`~manifoldnn.layers.GeodesicAttention`: manifold-preserving query/key/value
maps, pairwise squared distances, pairwise logarithms and extrinsic (linear) aggregation features.

Manifolds and token shapes (``...`` are batch dimensions, ``L`` the sequence length):

* ``Euclidean(ndim=1)``, ``Sphere``, ``PoincareBall``: ``(..., L, d)``;
* ``Grassmann``: orthonormal bases ``(..., L, n, p)``;
* ``SymmetricPositiveDefinite``: ``(..., L, n, n)``.
"""

from __future__ import annotations

import geoopt
import torch
from torch import nn

from ..linalg import qr_positive, symmetric_vectorize
from ..manifolds import Grassmann
from .functional import eigh_top

__all__ = [
    "manifold_kind",
    "SUPPORTED_DISTANCES",
    "ManifoldLinear",
    "pairwise_sq_dist",
    "pairwise_log",
    "pairwise_differential",
    "expmap",
    "sdpa_features",
    "extrinsic_value_features",
    "extrinsic_aggregate",
]

#: distances per manifold kind; the first is the default, those in SDPA_DISTANCES run through SDPA.
SUPPORTED_DISTANCES = {
    "euclidean": ("euclidean",),
    "sphere": ("geodesic", "chordal"),
    "grassmann": ("projection", "geodesic", "chordal"),
    "spd": ("affine", "log_euclidean"),
    "ball": ("geodesic",),
}
SDPA_DISTANCES = {
    ("euclidean", "euclidean"),
    ("sphere", "chordal"),
    ("grassmann", "projection"),
    ("spd", "log_euclidean"),
}


def manifold_kind(manifold: geoopt.Manifold) -> str:
    """One of ``euclidean``, ``sphere``, ``grassmann``, ``spd``, ``ball``; ``ValueError`` otherwise."""
    if isinstance(manifold, Grassmann):
        return "grassmann"
    if isinstance(manifold, geoopt.Sphere):
        if (
            getattr(manifold, "span", None) is not None
            or getattr(manifold, "projector", None) is not None
        ):
            raise ValueError("GeodesicAttention supports the full Sphere only (no subspace sphere)")
        return "sphere"
    if isinstance(manifold, geoopt.SymmetricPositiveDefinite):
        return "spd"
    if isinstance(manifold, geoopt.PoincareBall):
        return "ball"
    if isinstance(manifold, geoopt.Euclidean):
        if manifold.ndim != 1:
            raise ValueError(f"GeodesicAttention needs Euclidean(ndim=1), got ndim={manifold.ndim}")
        return "euclidean"
    raise ValueError(
        "GeodesicAttention supports Euclidean(ndim=1), Sphere, Grassmann, SymmetricPositiveDefinite "
        f"and PoincareBall, got {type(manifold).__name__}"
    )


# ------------------------------------------------------------------------------------ maps
class ManifoldLinear(nn.Module):
    r"""A learnable map that keeps points on the manifold, one weight per head.

    * Euclidean: :math:`x \mapsto W x + b`;
    * Sphere: :math:`x \mapsto W x / \|W x\|` (linear map then radial projection);
    * PoincareBall: Möbius matrix-vector product :math:`\exp_0(W \log_0 x)` (Ganea, Bécigneul &
      Hofmann 2018, "Hyperbolic neural networks", eq. 26, written with the maps at the origin);
    * Grassmann: FRMap + ReOrth :math:`Y \mapsto \mathrm{qf}(W Y)`, W with orthonormal rows (GrNet,
      Huang, Wu & Van Gool 2018, eqs. 1-2);
    * SPD: congruence :math:`X \mapsto W X W^\top` with W of full row rank (SPDNet BiMap, Huang &
      Van Gool 2017, eq. 1; initialised with orthonormal rows).

    Input ``(..., L, *in_shape)``; output ``(..., L, H, *head_shape)`` with ``H = heads``.
    """

    def __init__(self, manifold: geoopt.Manifold, in_size: int, out_size: int, heads: int = 1):
        super().__init__()
        self.kind = manifold_kind(manifold)
        self.manifold = manifold
        if in_size < 1 or out_size < 1 or heads < 1:
            raise ValueError(
                f"ManifoldLinear needs positive sizes, got in={in_size}, out={out_size}, "
                f"heads={heads}"
            )
        if self.kind in ("grassmann", "spd") and out_size > in_size:
            raise ValueError(
                f"ManifoldLinear on {self.kind}: out_size={out_size} must be <= in_size={in_size} "
                "(W needs full row rank to keep points on the manifold)"
            )
        self.in_size, self.out_size, self.heads = in_size, out_size, heads
        self.weight = nn.Parameter(torch.empty(heads, out_size, in_size))
        self.bias = nn.Parameter(torch.zeros(heads, out_size)) if self.kind == "euclidean" else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Orthonormal rows (or columns when ``out > in``): a norm-preserving start on every manifold."""
        gaussian = torch.randn(self.weight.shape, dtype=self.weight.dtype)
        if self.out_size <= self.in_size:
            w = qr_positive(gaussian.transpose(-1, -2)).transpose(-1, -2)
        else:
            w = qr_positive(gaussian)
        self.weight.copy_(w)
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.kind in ("euclidean", "sphere", "ball"):
            if x.shape[-1] != self.in_size:
                raise ValueError(f"expected (..., L, {self.in_size}), got {tuple(x.shape)}")
            if self.kind == "ball":
                x = self.manifold.logmap0(x)
            y = torch.einsum("hoi,...i->...ho", w, x)
            if self.kind == "euclidean":
                return y + self.bias
            if self.kind == "sphere":
                return y / y.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
            return self.manifold.expmap0(y)
        if x.shape[-2] != self.in_size:
            raise ValueError(f"expected (..., L, {self.in_size}, ...), got {tuple(x.shape)}")
        y = w @ x.unsqueeze(-3)  # (..., L, H, out, p) or (..., L, H, out, n)
        if self.kind == "grassmann":
            return qr_positive(y)
        y = y @ w.transpose(-1, -2)
        return 0.5 * (y + y.transpose(-1, -2))

    def extra_repr(self) -> str:
        return f"{self.kind}, in={self.in_size}, out={self.out_size}, heads={self.heads}"


# ----------------------------------------------------------------------- pairwise geometry
def _sym_log(x: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(x)
    return (vectors * values.log().unsqueeze(-2)) @ vectors.transpose(-1, -2)


def _sym_exp(x: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(x)
    return (vectors * values.exp().unsqueeze(-2)) @ vectors.transpose(-1, -2)


def _sphere_chord_sq(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise ``||q - k||^2`` and cosines for unit vectors, ``(..., Lq, d), (..., Lk, d)``.

    ``2 - 2 <q, k>`` from one matrix product loses all relative accuracy near 0; pairs with a chord
    below 0.1 are recomputed from the explicit difference (few pairs, gathered by index).
    """
    cos = q @ k.transpose(-1, -2)
    chord_sq = (2.0 - 2.0 * cos).clamp_min(0.0)
    close = chord_sq < 1e-2
    if bool(close.any()):
        idx = close.nonzero(as_tuple=True)
        qb = q.expand(cos.shape[:-1] + q.shape[-1:])
        kb = k.unsqueeze(-3).expand(cos.shape + k.shape[-1:])
        exact = (qb[idx[:-1]] - kb[idx]).pow(2).sum(-1)
        chord_sq = chord_sq.index_put(idx, exact)
    return chord_sq, cos


def _chord_to_angle(chord_sq: torch.Tensor) -> torch.Tensor:
    """Arc length ``2 atan2(c/2, sqrt(1 - c^2/4))`` from the squared chord ``c^2`` (accurate near 0)."""
    half = 0.25 * chord_sq
    return 2.0 * torch.atan2(half.sqrt(), (1.0 - half).clamp_min(0.0).sqrt())


def pairwise_sq_dist(kind: str, manifold, distance: str, q: torch.Tensor, k: torch.Tensor):
    """Squared distances between every query and key: ``(..., Lq, *s), (..., Lk, *s) -> (..., Lq, Lk)``.

    Formulas: Euclidean ``||q - k||^2``; sphere arc length (atan2 of the chord) or chord;
    Grassmann ``||theta||^2`` (Edelman, Arias & Smith 1998, Sec. 4.3), projection ``||sin theta||^2``,
    chordal ``||2 sin(theta/2)||^2``; SPD affine-invariant ``||log(Q^{-1/2} K Q^{-1/2})||_F^2``
    (Pennec, Fillard & Ayache 2006, eq. 3) and log-Euclidean ``||log Q - log K||_F^2`` (Arsigny et al.
    2007, eq. 3.5); Poincaré ball ``d(q, k) = 2 artanh ||-q (+) k||`` (Ganea et al. 2018, eq. 4).
    """
    if kind == "euclidean":
        return (q.unsqueeze(-2) - k.unsqueeze(-3)).pow(2).sum(-1)
    if kind == "sphere":
        chord_sq, _ = _sphere_chord_sq(q, k)
        return chord_sq if distance == "chordal" else _chord_to_angle(chord_sq).pow(2)
    if kind == "grassmann":
        qb, kb = q.unsqueeze(-3), k.unsqueeze(-4)
        if distance == "projection":
            residual = kb - qb @ (qb.transpose(-1, -2) @ kb)
            return residual.pow(2).sum((-2, -1))
        theta = manifold.principal_angles(qb, kb)
        if distance == "chordal":
            return (2.0 * torch.sin(0.5 * theta)).pow(2).sum(-1)
        return theta.pow(2).sum(-1)
    if kind == "spd":
        if distance == "log_euclidean":
            diff = _sym_log(q).unsqueeze(-3) - _sym_log(k).unsqueeze(-4)
            return diff.pow(2).sum((-2, -1))
        chol = torch.linalg.cholesky(q).unsqueeze(-3)
        left = torch.linalg.solve_triangular(chol, k.unsqueeze(-4), upper=False)
        whitened = torch.linalg.solve_triangular(chol, left.transpose(-1, -2), upper=False)
        eigenvalues = torch.linalg.eigvalsh(0.5 * (whitened + whitened.transpose(-1, -2)))
        return eigenvalues.log().pow(2).sum(-1)
    # Poincaré ball
    return manifold.dist(q.unsqueeze(-2), k.unsqueeze(-3)).pow(2)


def _sphere_log(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Log_q v = atan2(|w|, <q, v>) w / |w|`` with ``w = v - <q, v> q`` (finite at v == q)."""
    cos = (q * v).sum(-1, keepdim=True)
    w = v - cos * q
    sin = w.norm(dim=-1, keepdim=True)
    positive = sin > 0
    safe = torch.where(positive, sin, torch.ones_like(sin))
    scale = torch.where(positive, torch.atan2(sin, cos) / safe, torch.ones_like(sin))
    return w * scale


def pairwise_log(kind: str, manifold, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Log_{q_i}(v_j)`` for every pair: ``(..., Lq, *s), (..., Lk, *s) -> (..., Lq, Lk, *s)``."""
    nd = manifold.ndim
    qb = q.unsqueeze(-1 - nd)
    vb = v.unsqueeze(-2 - nd)
    if kind == "euclidean":
        return vb - qb
    if kind == "sphere":
        return _sphere_log(qb, vb)
    qb = qb.expand(torch.broadcast_shapes(qb.shape, vb.shape))
    return manifold.logmap(qb, vb.expand_as(qb))


def pairwise_differential(
    kind: str, manifold, q: torch.Tensor, egrad: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    r"""``db(q_i)[Log_{q_i} k_j] = <egrad_i, Log_{q_i} k_j>`` (ambient pairing) for every pair.

    ``q (..., Lq, *s)``, ``egrad (..., Lq, M, *s)`` (M bias losses), ``k (..., Lk, *s)`` ->
    ``(..., Lq, Lk, M)``. On the sphere, ``<e, Log_q k> = theta / sin(theta) (<e, k> - <q, k><e, q>)``
    is evaluated from matrix products without forming the ``(Lq, Lk, d)`` logarithms.
    """
    if kind == "sphere":
        chord_sq, cos = _sphere_chord_sq(q, k)
        theta = _chord_to_angle(chord_sq)
        sin = torch.sin(theta)
        factor = torch.where(sin > 0, theta / torch.where(sin > 0, sin, 1.0), 1.0)
        ek = egrad @ k.unsqueeze(-3).transpose(-1, -2)  # (..., Lq, M, Lk)
        eq = (egrad * q.unsqueeze(-2)).sum(-1)  # (..., Lq, M)
        tangential = ek - cos.unsqueeze(-2) * eq.unsqueeze(-1)
        return (factor.unsqueeze(-2) * tangential).transpose(-1, -2)
    if kind == "euclidean":
        ek = egrad @ k.unsqueeze(-3).transpose(-1, -2)
        eq = (egrad * q.unsqueeze(-2)).sum(-1)
        return (ek - eq.unsqueeze(-1)).transpose(-1, -2)
    logs = pairwise_log(kind, manifold, q, k)  # (..., Lq, Lk, *s)
    nd = manifold.ndim
    dims = tuple(range(-nd, 0))
    return (logs.unsqueeze(-1 - nd) * egrad.unsqueeze(-2 - nd)).sum(dims)


def expmap(kind: str, manifold, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exponential map; on the sphere ``cos|u| x + sin|u| u/|u|`` re-normalised."""
    if kind == "euclidean":
        return x + u
    if kind == "sphere":
        norm = u.norm(dim=-1, keepdim=True)
        positive = norm > 0
        safe = torch.where(positive, norm, torch.ones_like(norm))
        y = torch.cos(norm) * x + torch.where(positive, torch.sin(norm) / safe, 1.0) * u
        return y / y.norm(dim=-1, keepdim=True)
    return manifold.projx(manifold.expmap(x, u))


# ---------------------------------------------------------------- SDPA / extrinsic features
def sdpa_features(
    kind: str, distance: str, q: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Features with ``<phi(q), psi(k)> = -d^2(q, k) + c(q)`` (``c`` constant per query, cancels in the
    softmax), for the distances in ``SDPA_DISTANCES``:

    * Euclidean: ``phi = [2q, 1]``, ``psi = [k, -|k|^2]``;
    * sphere chord ``2 - 2<q, k>``: ``phi = 2q``, ``psi = k``;
    * Grassmann projection ``p - tr(P_Q P_K)``: ``phi = psi = vec(Y Y^T)`` (Hamm & Lee 2008,
      "Grassmann discriminant analysis", projection kernel);
    * SPD log-Euclidean: ``phi = [2 vec log Q, 1]``, ``psi = [vec log K, -|log K|^2]``.

    ``vec`` is :func:`manifoldnn.linalg.symmetric_vectorize`, with ``<vec A, vec B> = tr(A B)``.
    """
    if kind == "euclidean" or kind == "spd":
        if kind == "spd":
            q, k = symmetric_vectorize(_sym_log(q)), symmetric_vectorize(_sym_log(k))
        one = torch.ones_like(q[..., :1])
        return torch.cat([2.0 * q, one], -1), torch.cat([k, -k.pow(2).sum(-1, keepdim=True)], -1)
    if kind == "sphere":
        return 2.0 * q, k
    if kind == "grassmann":
        return (
            symmetric_vectorize(q @ q.transpose(-1, -2)),
            symmetric_vectorize(k @ k.transpose(-1, -2)),
        )
    raise ValueError(f"no SDPA features for {kind} with distance {distance}")


def extrinsic_value_features(kind: str, manifold, v: torch.Tensor) -> torch.Tensor:
    """Values as vectors whose weighted mean is then mapped back (``extrinsic_aggregate``):
    Euclidean / sphere: ``v``; ball: ``log_0 v``; Grassmann: upper triangle of ``V V^T``; SPD: upper
    triangle of ``log V``."""
    if kind in ("euclidean", "sphere"):
        return v
    if kind == "ball":
        return manifold.logmap0(v)
    matrix = v @ v.transpose(-1, -2) if kind == "grassmann" else _sym_log(v)
    rows, cols = torch.triu_indices(matrix.shape[-1], matrix.shape[-1], device=v.device)
    return matrix[..., rows, cols]  # upper triangle: n(n+1)/2 numbers


def extrinsic_aggregate(kind: str, manifold, mean: torch.Tensor, point_shape) -> torch.Tensor:
    r"""Map a weighted mean of ``extrinsic_value_features`` back to the manifold.

    Sphere: radial projection (extrinsic mean, Bhattacharya & Patrangenaru 2003); ball: ``exp_0``;
    Grassmann: top-p eigenvectors of the weighted mean projector (Srivastava & Klassen 2002,
    "Monte Carlo extrinsic estimators of manifold-valued parameters"); SPD: ``exp`` of the weighted
    mean logarithm (log-Euclidean mean, Arsigny et al. 2007, eq. 3.8).
    """
    if kind == "euclidean":
        return mean
    if kind == "sphere":
        return mean / mean.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(mean.dtype).tiny)
    if kind == "ball":
        return manifold.expmap0(mean)
    n, p = point_shape
    rows, cols = torch.triu_indices(n, n, device=mean.device)
    matrix = mean.new_zeros(mean.shape[:-1] + (n, n))
    matrix[..., rows, cols] = mean
    matrix[..., cols, rows] = mean
    if kind == "grassmann":
        if torch.is_grad_enabled() and matrix.requires_grad:
            return eigh_top(matrix, p)[1]  # backward finite at repeated eigenvalues
        return torch.linalg.eigh(matrix)[1][..., -p:]
    return _sym_exp(matrix)
