r"""Linear-time geodesic attention with positive orthogonal random features (FAVOR+).

On the geometries whose squared distance is an inner product of features,
:math:`\langle \phi(q), \psi(k) \rangle = -d^2(q, k) + c(q)` (each geometry's ``sdpa_distances``:
Euclidean, the sphere's chord, the Grassmann projection metric, the SPD log-Euclidean distance),
softmax attention with logits :math:`-s\, d^2 / \tau` has the kernel
:math:`\exp(x^\top y)` with :math:`x = \sqrt{s/\tau}\, \phi(q)`, :math:`y = \sqrt{s/\tau}\, \psi(k)`
(``c(q)`` cancels in the normalisation). Performer's positive random features (Choromanski et al.,
ICLR 2021, "Rethinking attention with Performers", Lemma 1)

.. math::

    \phi^+(x) = \frac{1}{\sqrt m} \exp\big(W x - \|x\|^2 / 2\big), \qquad
    \mathbb{E}\big[\phi^+(x)^\top \phi^+(y)\big] = \exp(x^\top y),

with the rows of :math:`W \in \mathbb{R}^{m \times F}` Gaussian and orthogonal within blocks of
``F`` (ibid., Sec. 2.4), give the numerator :math:`\sum_j K_{ij} f(v_j)` and the denominator
:math:`\sum_j K_{ij}` with two matrix products, :math:`O(L m F)`, and causal attention with prefix
sums. Values are aggregated extrinsically: the geometry's ``value_features``, their weighted mean,
and ``aggregate`` back to the manifold.

FAVOR++ (Likhosherstov et al., NeurIPS 2022, "Chefs' Random Tables: Non-Trigonometric Random
Features", Sec. 3-4) widens the family to the positive generalised exponential features

.. math::

    f_A(\omega, x) = (1 - 4A)^{F/4} \exp\big(A \|\omega\|^2 + \sqrt{1 - 4A}\, \omega^\top x
    - \|x\|^2 / 2\big), \qquad A < 1/8,

unbiased for every such ``A`` (``A = 0`` is FAVOR+), and picks the ``A`` that minimises the
variance on the data (the optimal positive random features, OPRF): one home for both, a
``feature_parameter`` ``A`` threaded through :func:`positive_random_features`,
:func:`favor_kernel_sums` and :func:`favor_attention` (``estimator="favor++"``).
"""

from __future__ import annotations

import math
from typing import Any

import geoopt
import torch

from ..linalg import qr_positive
from ..manifolds import ManifoldGeometry, geometry_for
from ..validation import (
    check_choice,
    check_in_range,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    renamed_arguments,
)
from .attention import (
    ManifoldAttentionHeads,
    _check_inputs,
    _check_values,
    additive_attention_mask,
)

__all__ = [
    "FavorAttention",
    "favor_attention",
    "favor_kernel_sums",
    "mean_squared_pair_norm",
    "optimal_feature_parameter",
    "orthogonal_random_features",
    "positive_random_features",
]

ESTIMATORS = ("favor+", "favor++")


def orthogonal_random_features(
    num_features: int,
    dim: int,
    *,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""Random projection ``W (*batch_shape, m, F)`` of Performer's orthogonal random features.

    Rows are drawn in blocks of ``F``: each block is a Haar-random orthogonal matrix (the Q factor
    of a Gaussian matrix with ``diag R > 0``) whose rows are rescaled by the norms of independent
    Gaussian vectors, so that every row is marginally :math:`\mathcal N(0, I_F)` (unbiased
    features) while rows of one block are exactly orthogonal (Choromanski et al. 2021, Sec. 2.4).
    A last block narrower than ``F`` keeps its first rows.

    Args:
        num_features: m, the number of random features (>= 1).
        dim: F, the size of the vectors projected (>= 1).
        batch_shape: leading dimensions (e.g. ``(H,)``: one independent draw per head). Default: ().
        generator: random generator (its device is used to draw). Default: the global one.
        device: of the result. Default: PyTorch's default.
        dtype: of the result. Default: PyTorch's default.

    Shape:
        ``(*batch_shape, num_features, dim)``.
    """
    check_positive_int(num_features, "num_features")
    check_positive_int(dim, "dim")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    draw_device = generator.device if generator is not None else device
    blocks = -(-num_features // dim)
    shape = tuple(batch_shape) + (blocks, dim, dim)
    gaussian = torch.randn(shape, generator=generator, device=draw_device, dtype=torch.float64)
    rows = qr_positive(gaussian).transpose(-1, -2)  # orthonormal rows
    norms = torch.randn(shape, generator=generator, device=draw_device, dtype=torch.float64)
    w = (rows * norms.norm(dim=-1, keepdim=True)).flatten(-3, -2)[..., :num_features, :]
    return w.to(device=device if device is not None else w.device, dtype=dtype)


@torch.no_grad()
def _redraw_orthogonal_features(features: torch.Tensor, generator: torch.Generator | None) -> None:
    """Draw ``features (*batch, m, F)`` of :func:`orthogonal_random_features` again, in place (same
    shape, device and dtype): the ``redraw_features`` of the random-feature attention layers."""
    *batch_shape, num_features, size = features.shape
    features.copy_(
        orthogonal_random_features(
            num_features,
            size,
            batch_shape=tuple(batch_shape),
            generator=generator,
            device=features.device,
            dtype=features.dtype,
        )
    )


def positive_random_features(
    x: torch.Tensor, features: torch.Tensor, *, feature_parameter: torch.Tensor | float = 0.0
) -> torch.Tensor:
    r"""Positive random features :math:`f_A(\omega_r, x) / \sqrt m`: Performer's
    :math:`\exp(W x - \|x\|^2/2) / \sqrt m` (Lemma 1) at ``A = 0``, FAVOR++'s generalised
    exponential features otherwise (Likhosherstov et al. 2022, Sec. 3).

    Unstabilised (it overflows for large :math:`W x`); :func:`favor_attention` works with the
    logarithms and shifts them. ``E[prf(x) . prf(y)] = exp(x . y)`` over ``W ~ N(0, I)`` rows, for
    every ``A < 1/4``; the relative variance of one feature's product is

    .. math::

        \Big(\frac{(1 - 4A)^2}{1 - 8A}\Big)^{F/2} \exp\Big(\frac{\|x + y\|^2}{1 - 8A}\Big) - 1
        \qquad (A < 1/8).

    Args:
        x: vectors ``(..., L, F)``.
        features: random projection ``(..., m, F)`` (rows ``N(0, I)``).
        feature_parameter: ``A``, a float or a tensor broadcasting to the leading dimensions
            ``(...)`` (e.g. one per head, from :func:`optimal_feature_parameter`). Default: ``0.0``
            (FAVOR+).

    Shape:
        ``x (..., L, F)``, ``features (..., m, F)`` (broadcast) -> ``(..., L, m)``.
    """
    m = features.shape[-2]
    return torch.exp(_log_features(x, features, feature_parameter) - 0.5 * math.log(m))


def optimal_feature_parameter(rho: torch.Tensor | float, dim: int) -> torch.Tensor | float:
    r"""FAVOR++'s optimal ``A`` (OPRF) for the mean squared pair norm ``rho`` in dimension ``F``.

    Minimises the logarithm of the relative second moment of
    :func:`positive_random_features` averaged over the pairs,
    :math:`\tfrac F2 \log\frac{(1-4A)^2}{1-8A} + \frac{\rho}{1-8A}` with
    :math:`\rho = \operatorname{mean}_{ij} \|x_i + y_j\|^2` (Likhosherstov et al. 2022,
    Sec. 4); setting its derivative to zero gives

    .. math::

        A^* = \frac{1}{16}\Big(1 - 2\bar\rho - \sqrt{(2\bar\rho + 1)^2 + 8\bar\rho}\Big),
        \qquad \bar\rho = \rho / F,

    with :math:`A^* \le 0` (``0`` at ``rho = 0``, FAVOR+).

    Args:
        rho: :math:`\rho \ge 0` (float or tensor, e.g. from :func:`mean_squared_pair_norm`).
        dim: F, the size of the vectors (>= 1).

    Returns:
        ``A*``, of ``rho``'s type and shape.
    """
    check_positive_int(dim, "dim")
    r = rho / dim
    root = (2 * r + 1) ** 2 + 8 * r
    root = root.sqrt() if isinstance(root, torch.Tensor) else math.sqrt(root)
    return (1 - 2 * r - root) / 16


def mean_squared_pair_norm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`\rho = \operatorname{mean}_{i, j} \|x_i + y_j\|^2` over all pairs, in ``O(L F)``:
    :math:`\overline{\|x\|^2} + \overline{\|y\|^2} + 2\, \bar x^\top \bar y`.

    Shape:
        ``x (..., L_q, F)``, ``y (..., L_k, F)`` -> ``(...)`` (broadcast).
    """
    squares = x.pow(2).sum(-1).mean(-1) + y.pow(2).sum(-1).mean(-1)
    return squares + 2 * (x.mean(-2) * y.mean(-2)).sum(-1)


def _log_features(x: torch.Tensor, w: torch.Tensor, a=0.0) -> torch.Tensor:
    half_square = 0.5 * x.pow(2).sum(-1, keepdim=True)
    if not isinstance(a, torch.Tensor) and a == 0.0:
        return x @ w.transpose(-1, -2) - half_square
    # sqrt(1 - 4A) goes into the (m, F) projection and A |w_r|^2 + (F/4) log(1 - 4A) into a
    # per-feature offset, so that the (L, m) logits take two passes, as FAVOR+'s do
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)[..., None, None]
    one_minus = 1 - 4 * a
    offset = a * w.pow(2).sum(-1).unsqueeze(-2) + 0.25 * x.shape[-1] * torch.log(one_minus)
    return x @ (w * one_minus.sqrt()).transpose(-1, -2) + (offset - half_square)


def _feature_distance(geometry: ManifoldGeometry, distance: str | None) -> str:
    """The distance to use (default: the geometry's); it must have inner-product features."""
    distance = geometry.check_distance(distance)
    if distance not in geometry.sdpa_distances:
        raise ValueError(
            f"distance {distance!r} on {geometry.name} has no inner-product features; FAVOR+ needs "
            f"one of {sorted(geometry.sdpa_distances)}"
        )
    return distance


def _validate(geometry, distance, query, key, value, num_features, features, key_padding_mask):
    """Argument checks (no tensor values read): geodesic attention's token and mask checks plus the
    random-feature ones; returns the distance."""
    distance = _feature_distance(geometry, distance)
    if features is None:
        check_positive_int(num_features, "num_features")
    if features is not None and (not isinstance(features, torch.Tensor) or features.dim() < 2):
        raise ValueError("features must be a tensor (..., m, F) (see orthogonal_random_features)")
    _check_inputs(geometry, query, key, value, key_padding_mask)
    return distance


def favor_kernel_sums(
    x: torch.Tensor,
    y: torch.Tensor,
    value_features: torch.Tensor,
    features: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    chunk_size: int = 64,
    feature_parameter: torch.Tensor | float = 0.0,
    state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    return_state: bool = False,
) -> tuple[torch.Tensor, ...]:
    r"""FAVOR+ (FAVOR++) estimates of the kernel sums :math:`\sum_j K_{ij} v_j` and :math:`\sum_j K_{ij}`
    for :math:`K_{ij} = \exp(x_i^\top y_j)`, in shifted form.

    Returns ``(numerator, denominator, log_scale)`` with the estimates equal to
    ``exp(log_scale)[..., None] * numerator`` and ``exp(log_scale) * denominator``; the shift is
    what keeps the exponentials finite, and cancels in ``numerator / denominator``.

    Stabilisation. Each query's log-features are shifted by their maximum over the m features (a
    per-query constant). Non-causal: the keys' log-features are shifted by their maximum over all
    (unpadded) keys and features of the sequence, a constant over keys. Causal: key ``j`` is seen
    by queries ``i >= j`` only, so the key shift of query ``i`` is the running maximum
    :math:`M_i = \max_{j \le i, r} \log \phi^+_r(y_j)`, a per-query constant that reads no later
    key; the prefix sums are carried over chunks of ``chunk_size`` keys relative to the running
    maximum (every factor :math:`\exp(M_j - M_i)`, :math:`j \le i`, is at most 1), so query
    ``i`` depends on keys ``j <= i`` only, and memory is ``O(chunk^2 + chunk m + m F_v)`` per
    sequence. Queries attend to keys ``j <= i`` (top-left aligned, as SDPA's ``is_causal``).

    Args:
        x: scaled query features ``(..., L_q, F)``.
        y: scaled key features ``(..., L_k, F)``.
        value_features: ``(..., L_k, F_v)``.
        features: random projection ``(..., m, F)`` (e.g. :func:`orthogonal_random_features`).
        causal: query ``i`` sees keys ``j <= i`` (needs ``L_q <= L_k``). Default: False.
        key_padding_mask: bool ``(..., L_k)``, True where a key is padding. Default: None.
        chunk_size: keys per chunk of the causal prefix sums. Default: 64.
        feature_parameter: FAVOR++'s ``A`` (see :func:`positive_random_features`), a float or a
            tensor broadcasting to the leading dimensions. Default: ``0.0`` (FAVOR+).
        state: causal only: the prefix sums after the tokens before this sequence, as returned
            with ``return_state`` (the recurrent, constant-memory form: one token a call equals
            the whole sequence at once). Default: ``None`` (no earlier token).
        return_state: causal only: also return the state after the last token, a tuple
            ``(sums (..., m, F_v), normaliser (..., m), running maximum (..., 1))``. Default:
            ``False``.

    Shape:
        numerator ``(..., L_q, F_v)``, denominator and log_scale ``(..., L_q)``.
    """
    m = features.shape[-2]
    a = feature_parameter
    log_q = _log_features(x, features, a)
    q_shift = log_q.detach().amax(-1, keepdim=True)
    phi_q = torch.exp(log_q - q_shift)
    log_k = _log_features(y, features, a)
    if key_padding_mask is not None:
        log_k = log_k.masked_fill(key_padding_mask.unsqueeze(-1), -math.inf)
    lowest = torch.finfo(log_k.dtype).min
    if not causal and (state is not None or return_state):
        raise ValueError("state and return_state need causal=True")
    if not causal:
        k_shift = log_k.detach().amax((-2, -1), keepdim=True)
        k_shift = torch.where(torch.isfinite(k_shift), k_shift, torch.zeros_like(k_shift))
        phi_k = torch.exp(log_k - k_shift)
        numerator = phi_q @ (phi_k.transpose(-1, -2) @ value_features)
        denominator = phi_q @ phi_k.sum(-2).unsqueeze(-1)
        log_scale = (q_shift + k_shift).squeeze(-1) - math.log(m)
        return numerator, denominator.squeeze(-1), log_scale

    lq = x.shape[-2]
    log_k, value_features = log_k[..., :lq, :], value_features[..., :lq, :]
    per_key = log_k.detach().amax(-1)
    per_key = torch.where(torch.isfinite(per_key), per_key, torch.full_like(per_key, lowest))
    running = torch.cummax(per_key, dim=-1).values  # M_i, reads keys j <= i only
    batch = torch.broadcast_shapes(log_q.shape[:-2], log_k.shape[:-2], value_features.shape[:-2])
    if state is None:
        state = (
            log_q.new_zeros(batch + (m, value_features.shape[-1])),
            log_q.new_zeros(batch + (m,)),
            log_q.new_full(batch + (1,), lowest),  # M at the end of the previous chunk
        )
    state, normaliser, previous = state
    running = torch.maximum(running, previous)  # the earlier tokens' maximum too
    phi_k = torch.exp(log_k - running.unsqueeze(-1))  # at most 1; 0 for padding
    numerators, denominators = [], []
    # torch.split rather than slicing: its backward concatenates the chunks' gradients once, where
    # each slice's backward would write into a zero tensor of the full length (quadratic in L)
    chunks = zip(
        phi_q.split(chunk_size, dim=-2),
        phi_k.split(chunk_size, dim=-2),
        value_features.split(chunk_size, dim=-2),
        running.split(chunk_size, dim=-1),
    )
    for q_c, k_c, v_c, m_c in chunks:
        size = q_c.shape[-2]
        lower = torch.ones(size, size, dtype=torch.bool, device=x.device).tril()
        gap = m_c.unsqueeze(-2) - m_c.unsqueeze(-1)  # M_j - M_i
        decay = torch.exp(torch.where(lower, gap, -math.inf))
        scores = (q_c @ k_c.transpose(-1, -2)) * decay
        carry = torch.exp(previous - m_c).unsqueeze(-1)  # exp(M_prev - M_i) <= 1
        numerators.append(scores @ v_c + (q_c @ state) * carry)
        denominators.append(
            scores.sum(-1) + (q_c @ normaliser.unsqueeze(-1)).squeeze(-1) * carry[..., 0]
        )
        end = m_c[..., -1:]
        weight = torch.exp(m_c - end).unsqueeze(-1)  # exp(M_j - M_end) <= 1
        shrink = torch.exp(previous - end)
        state = state * shrink.unsqueeze(-1) + (k_c * weight).transpose(-1, -2) @ v_c
        normaliser = normaliser * shrink + (k_c * weight).sum(-2)
        previous = end
    numerator, denominator = torch.cat(numerators, -2), torch.cat(denominators, -1)
    log_scale = q_shift.squeeze(-1) + running - math.log(m)
    if return_state:
        return numerator, denominator, log_scale, (state, normaliser, previous)
    return numerator, denominator, log_scale


@renamed_arguments(causal="is_causal")
def favor_attention(
    manifold: geoopt.Manifold | ManifoldGeometry,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    tau: torch.Tensor | float,
    distance: str | None = None,
    num_features: int = 256,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = False,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float = 1.0,
    features: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int = 64,
    validate: bool = True,
    estimator: str = "favor+",
    rho: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Geodesic attention in linear time with FAVOR+ (or FAVOR++) positive orthogonal random
    features.

    Estimates :func:`~manifoldnn.layers.geodesic_attention` with ``score="neg_sq"`` and
    ``aggregation="extrinsic"``:

    .. math::

        o_i = \mathrm{agg}\Big(\frac{\sum_j \hat K_{ij} f(v_j)}{\sum_j \hat K_{ij}}\Big), \quad
        \hat K_{ij} = \phi^+(x_i)^\top \phi^+(y_j) \approx \exp(-s\, d^2(q_i, k_j)/\tau + c_i),

    with :math:`x = \sqrt{s/\tau}\,\phi(q)`, :math:`y = \sqrt{s/\tau}\,\psi(k)` the geometry's
    ``sdpa_features`` mapped by one random ``W`` (Choromanski et al., ICLR 2021, Lemma 1 and
    Sec. 2.4). Numerator and denominator are unbiased; their ratio is consistent in ``m``. The
    estimator's relative variance per pair is :math:`(e^{\|x + y\|^2} - 1)/m` (with i.i.d.
    rows), so it needs :math:`\|x\|, \|y\|` of order one: small ``s/tau`` relative to the features'
    norms. Stabilisation, by shifts that cancel in the ratio (:func:`favor_kernel_sums`): each
    query's log-features by their maximum; the keys' by their maximum over the whole sequence when
    non-causal, and by the running maximum over keys ``j <= i`` for query ``i`` when causal, so
    that no output reads a later key (unlike a maximum over all positions, performer-pytorch
    issue 82).

    With ``need_weights`` or an ``attn_mask`` the estimated kernel :math:`\hat K` is formed
    (``O(L_q L_k)`` memory, as in :func:`~manifoldnn.layers.geodesic_attention`), multiplied by
    :math:`\exp(\text{mask})` and normalised by rows; the masks follow
    :class:`torch.nn.MultiheadAttention`.

    Args:
        manifold: a geoopt manifold or its :class:`~manifoldnn.manifolds.ManifoldGeometry`.
        query: ``(..., L_q, *point_shape)``.
        key: ``(..., L_k, *point_shape)``.
        value: ``(..., L_k, *point_shape)``.
        tau: positive temperature (float or tensor, may be learnable).
        distance: one of the geometry's ``sdpa_distances``. Default: ``None`` (the geometry's).
        num_features: m, random features drawn when ``features`` is None. Default: ``256``.
        key_padding_mask: bool ``(..., L_k)``, True where a key is padding. A causal query whose
            visible keys are all padding gets the aggregate of a zero mean. Default: ``None``.
        need_weights: also return the estimated weights ``(..., L_q, L_k)``. Default: ``False``.
        attn_mask: ``(..., L_q, L_k)`` broadcasting to the queries' batch shape: bool, True where
            attention is not allowed, or float, added to the logits. Default: ``None``.
        is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned). Default: ``False``.
        scale: extra multiplier of the logits (entropy-invariant scaling). Default: ``1.0``.
        features: a random projection ``(..., m, F)`` to reuse (from
            :func:`orthogonal_random_features`; ``F`` the size of the geometry's features);
            ``num_features`` is then not used. Default: ``None`` (a fresh draw).
        generator: random generator of the fresh draw. Default: ``None`` (global).
        chunk_size: keys per chunk of the causal prefix sums. Default: ``64``.
        validate: check values on the host (positive tau, finite tokens, a key left unmasked in
            every sequence) in eager mode. Default: ``True``.
        estimator: ``"favor+"`` (``A = 0``) or ``"favor++"`` (the optimal ``A`` of
            :func:`optimal_feature_parameter`, lower variance at small temperatures).
            Default: ``"favor+"``.
        rho: FAVOR++ only: the statistic :math:`\rho` that sets ``A``, a float or a tensor
            broadcasting to the batch shape. ``None`` computes it from the scaled features of
            this call's queries and keys (:func:`mean_squared_pair_norm`, padding included),
            which ``is_causal`` rules out: every output would depend, through ``A``, on later
            tokens. Default: ``None``.

    Returns:
        ``(output, weights)``: the output ``(..., L_q, *point_shape)`` and the estimated weights
        ``(..., L_q, L_k)`` with ``need_weights``, ``None`` otherwise.

    Examples::

        >>> from manifoldnn.manifolds import Sphere
        >>> x = torch.nn.functional.normalize(torch.randn(2, 100, 16), dim=-1)
        >>> out, _ = favor_attention(Sphere(), x, x, x, tau=4.0, distance="chordal")
        >>> out.shape
        torch.Size([2, 100, 16])
    """
    geometry = geometry_for(manifold)
    distance = _validate(
        geometry, distance, query, key, value, num_features, features, key_padding_mask
    )
    check_positive_int(chunk_size, "chunk_size")
    if not isinstance(tau, torch.Tensor):
        check_positive_float(tau, "tau")
    check_positive_float(scale, "scale")
    check_choice(estimator, "estimator", ESTIMATORS)
    if estimator == "favor++" and is_causal and rho is None:
        raise ValueError(
            "rho must be given for a causal 'favor++' (a statistic of the whole sequence would "
            "let every output depend on later tokens)"
        )
    if rho is not None and not isinstance(rho, torch.Tensor):
        check_nonnegative_float(rho, "rho")
    nd = geometry.point_ndim
    lq, lk = query.shape[-nd - 1], key.shape[-nd - 1]
    if is_causal and lq > lk:
        raise ValueError(f"causal attention needs L_q <= L_k, got {lq} > {lk}")
    tau = torch.as_tensor(tau, dtype=query.dtype, device=query.device)
    if validate and not torch.compiler.is_compiling():
        _check_values(query, key, value, tau, key_padding_mask)
    batch = torch.broadcast_shapes(query.shape[: -nd - 1], key.shape[: -nd - 1])
    additive = additive_attention_mask(
        attn_mask, batch, lq, lk, is_causal, query.dtype, query.device
    )
    x, y = _scaled_features(geometry, query, key, distance, tau, scale)
    if features is None:
        features = orthogonal_random_features(
            num_features, x.shape[-1], generator=generator, device=x.device, dtype=x.dtype
        )
    elif features.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"features must have shape (..., m, {x.shape[-1]}) for {distance!r} on "
            f"{geometry.name}, got {tuple(features.shape)}"
        )
    features = features.to(x)
    a = 0.0
    if estimator == "favor++":
        rho = mean_squared_pair_norm(x, y).detach() if rho is None else rho
        a = optimal_feature_parameter(
            torch.as_tensor(rho, dtype=x.dtype, device=x.device), x.shape[-1]
        )
    point_shape = value.shape[value.dim() - nd :]
    if need_weights or additive is not None:
        weights = _estimated_weights(x, y, features, key_padding_mask, additive, is_causal, a)
        mean = weights @ geometry.value_features(value)
        return geometry.aggregate(mean, point_shape), (weights if need_weights else None)
    numerator, denominator, _ = favor_kernel_sums(
        x, y, geometry.value_features(value), features,
        causal=is_causal, key_padding_mask=key_padding_mask, chunk_size=chunk_size,
        feature_parameter=a,
    )  # fmt: skip
    tiny = torch.finfo(denominator.dtype).tiny
    mean = numerator / denominator.clamp_min(tiny).unsqueeze(-1)
    return geometry.aggregate(mean, point_shape), None


def _scaled_features(geometry, query, key, distance, tau, scale):
    """``x = sqrt(s / tau) phi(q)``, ``y = sqrt(s / tau) psi(k)``: the kernel is ``exp(x . y)``."""
    phi, psi = geometry.sdpa_features(query, key, distance)
    root = (scale / tau).sqrt()
    return phi * root, psi * root


def _estimated_weights(x, y, features, key_padding_mask, additive, causal, a=0.0):
    """Rows of the estimated kernel ``phi+(x_i) . phi+(y_j)`` times ``exp(mask)``, normalised:
    ``(..., L_q, L_k)``. The query and key shifts are constants per row and cancel."""
    log_q = _log_features(x, features, a)
    phi_q = torch.exp(log_q - log_q.detach().amax(-1, keepdim=True))
    log_k = _log_features(y, features, a)
    if key_padding_mask is not None:
        log_k = log_k.masked_fill(key_padding_mask.unsqueeze(-1), -math.inf)
    k_shift = log_k.detach().amax((-2, -1), keepdim=True)
    k_shift = torch.where(torch.isfinite(k_shift), k_shift, torch.zeros_like(k_shift))
    kernel = phi_q @ torch.exp(log_k - k_shift).transpose(-1, -2)
    if additive is not None:  # the causal mask is folded into it
        kernel = kernel * torch.exp(additive)
    elif causal:
        kernel = kernel.tril()
    tiny = torch.finfo(kernel.dtype).tiny
    return kernel / kernel.sum(-1, keepdim=True).clamp_min(tiny)


def _feature_size(geometry: ManifoldGeometry, distance: str, size: int) -> int:
    """Size F of the geometry's ``sdpa_features`` for head points of first dimension ``size``."""
    eye = torch.eye(size, dtype=torch.float64)
    dummy = (eye[0] if geometry.point_ndim == 1 else eye).unsqueeze(0)  # one token, values unused
    return geometry.sdpa_features(dummy, dummy, distance)[0].shape[-1]


class FavorAttention(ManifoldAttentionHeads):
    r"""Multi-head geodesic attention in linear time (FAVOR+ or FAVOR++), the counterpart of
    :class:`~manifoldnn.layers.GeodesicAttention` with ``score="neg_sq"`` and extrinsic means.

    Each head maps queries, keys and values with a :class:`~manifoldnn.layers.ManifoldLinear` and
    runs :func:`favor_attention` with its own random projection (a buffer ``features``
    ``(H, m, F)``). Logits :math:`-s\, d^2/\tau` with a learnable :math:`\tau` and, with
    ``train_length``, the entropy-invariant factor :math:`s = \log L_k / \log L_{train}` (Chiang
    & Cholak 2022, Sec. 5).

    Args:
        manifold: a geoopt manifold or its geometry (one with ``sdpa_distances``).
        in_size: input size: d (vectors), n (Grassmann ``(n, p)`` bases, SPD ``(n, n)``).
        head_size: per-head output size (``<= in_size`` on Grassmann and SPD).
            Default: ``None`` (``in_size``).
        num_heads: H. Default: ``1``.
        distance: one of the geometry's ``sdpa_distances``. Default: the geometry's default.
        num_features: m random features per head. Default: ``256``.
        redraw_interval: in training mode, redraw the features before every ``redraw_interval``-th
            forward (the first excepted); ``None`` never redraws. Default: ``None``.
        chunk_size: keys per chunk of the causal prefix sums. Default: ``64``.
        validate: host-side value checks in eager forwards. Default: ``True``.
        estimator: ``"favor+"`` or ``"favor++"`` (:func:`favor_attention`). FAVOR++'s ``A`` comes
            from the call's queries and keys without ``is_causal``; with it, from a running
            average ``rho (H,)`` of :func:`mean_squared_pair_norm`, updated after each forward
            in training mode (it starts at ``0``, FAVOR+), so that no output reads a later
            token. Default: ``"favor+"``.
        momentum: weight of a new batch in the running ``rho``, in ``(0, 1]``. Default: ``0.1``.
        device: of the parameters and buffers. Default: PyTorch's default.
        dtype: of the parameters and buffers. Default: PyTorch's default.
        **options: the other options of :class:`~manifoldnn.layers.ManifoldAttentionHeads`:
            ``tau`` (initial temperature), ``learn_tau``, ``project`` (``False``: no maps),
            ``train_length`` (entropy-invariant scaling), ``out_size`` (the output map; ``None``
            returns the heads apart).

    Shape:
        As :class:`~manifoldnn.layers.GeodesicAttention`: ``query (..., L_q, *point)``,
        ``key``/``value (..., L_k, *point)`` (default: self attention) -> output
        ``(..., L_q, H, *head_point)`` (``(..., L_q, *out_point)`` with ``out_size``) and, with
        ``need_weights``, the estimated weights. ``attn_mask`` and ``need_weights`` form the
        ``(L_q, L_k)`` kernel; without them the cost is linear in the length.

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> layer = FavorAttention(Grassmann(), in_size=8, head_size=6, num_heads=2)
        >>> out, _ = layer(Grassmann().random(3, 50, 8, 2), is_causal=True)
        >>> out.shape
        torch.Size([3, 50, 2, 6, 2])
    """

    def __init__(
        self,
        manifold: geoopt.Manifold | ManifoldGeometry,
        in_size: int,
        head_size: int | None = None,
        num_heads: int = 1,
        *,
        distance: str | None = None,
        num_features: int = 256,
        redraw_interval: int | None = None,
        chunk_size: int = 64,
        validate: bool = True,
        estimator: str = "favor+",
        momentum: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            manifold, in_size, head_size, num_heads, device=device, dtype=dtype, **options
        )
        factory_kwargs = {"device": device, "dtype": dtype}
        check_positive_int(num_features, "num_features")
        if redraw_interval is not None:
            check_positive_int(redraw_interval, "redraw_interval")
        check_positive_int(chunk_size, "chunk_size")
        check_choice(estimator, "estimator", ESTIMATORS)
        check_in_range(momentum, "momentum", 0.0, 1.0, low_open=True)
        self.estimator, self.momentum = estimator, momentum
        distance = _feature_distance(self.geometry, distance)
        self.distance, self.num_features = distance, num_features
        self.redraw_interval = redraw_interval
        self.chunk_size, self.validate = chunk_size, validate
        self.feature_size = _feature_size(self.geometry, distance, self.head_size)
        self.register_buffer(
            "features",
            orthogonal_random_features(
                num_features, self.feature_size, batch_shape=(num_heads,), **factory_kwargs
            ),
        )
        self.register_buffer("rho", torch.zeros(num_heads, **factory_kwargs))
        self.forwards_since_redraw = 0

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw a new random projection for every head (in place, same device and dtype)."""
        _redraw_orthogonal_features(self.features, generator)
        self.forwards_since_redraw = 0

    def attend(self, q, k, v, *, scale, key_padding_mask, need_weights, attn_mask, is_causal):
        """:func:`favor_attention` on the heads, each with its own random projection (redrawn
        first in training mode when ``redraw_interval`` forwards have passed)."""
        if self.training and self.redraw_interval is not None:
            if self.forwards_since_redraw >= self.redraw_interval:
                self.redraw_features()
            self.forwards_since_redraw += 1
        rho = None
        if self.estimator == "favor++" and is_causal:
            rho = self.rho.clone()
            if self.training:
                x, y = _scaled_features(self.geometry, q, k, self.distance, self.tau, scale)
                batch = mean_squared_pair_norm(x, y).detach().reshape(-1, self.num_heads)
                self.rho.lerp_(batch.mean(0).to(self.rho.dtype), self.momentum)
        return favor_attention(
            self.geometry, q, k, v, tau=self.tau, distance=self.distance,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            is_causal=is_causal, scale=scale, features=self.features, chunk_size=self.chunk_size,
            validate=self.validate, estimator=self.estimator, rho=rho,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, distance={self.distance}, "
            f"num_features={self.num_features}, redraw_interval={self.redraw_interval}, "
            f"estimator={self.estimator!r}"
        )
