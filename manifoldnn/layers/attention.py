r"""Geodesic-distance attention on manifolds.

Scores are a decreasing function of the geodesic distance between query and key tokens,
:math:`s_{ij} = -d^2(q_i, k_j) / \tau` or GDLNet's similarity
:math:`1 / (1 + \log(1 + d^2(q_i, k_j)))` (Wang et al., IJCAI 2024, "A Grassmannian manifold
self-attention network for signal classification", eq. 6), and values are aggregated on the
manifold: by the weighted Karcher mean :math:`\arg\min_m \sum_j a_{ij} d^2(m, v_j)`, by one
Riemannian gradient step from the query :math:`\mathrm{Exp}_{q_i}(\sum_j a_{ij} \mathrm{Log}_{q_i} v_j)`,
or extrinsically (weighted mean in an embedding, mapped back to the manifold).

Memory. Distances that are inner products of features (each geometry's ``sdpa_distances``: the
Euclidean distance, the sphere's chord, the Grassmann projection metric
:math:`d^2 = p - \langle \mathrm{vec}\, QQ^\top, \mathrm{vec}\, KK^\top \rangle`, the SPD
log-Euclidean distance) with extrinsic aggregation run through
:func:`torch.nn.functional.scaled_dot_product_attention` on those features. Every other combination
(except Karcher aggregation, which needs all weights at once) runs over key chunks with an online
softmax (Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"), so the forward
pass holds ``L_q x chunk_size`` pairwise quantities at a time, never the ``L_q x L_k`` matrix.
With autograd recording, each chunk runs under activation checkpointing: the backward pass
recomputes its pairwise quantities, and only per-chunk summaries ``(L_q, features)`` are kept; the
SDPA path's backward is PyTorch's fused one. Karcher aggregation
holds the ``(L_q, L_k)`` weights and the ``(L_q, L_k, *point_shape)`` logarithms of its solver
(``benchmarks/attention.py`` measures time and memory).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import geoopt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..manifolds import GeometryModule, ManifoldGeometry, geometry_for, karcher_mean
from ..validation import (
    check_choice,
    check_positive_float,
    check_positive_int,
    check_positive_ints,
    renamed_arguments,
)
from .manifold_linear import ManifoldLinear, _check_map_sizes

__all__ = [
    "GeodesicAttention",
    "ManifoldAttentionHeads",
    "geodesic_attention",
    "additive_attention_mask",
    "SCORES",
    "AGGREGATIONS",
    "entropy_invariant_scale",
]

SCORES = ("neg_sq", "gdlnet")
AGGREGATIONS = ("extrinsic", "tangent", "karcher")


def entropy_invariant_scale(length, train_length: int):
    r"""The entropy-invariant multiplier of attention logits over ``length`` keys.

    .. math::

        \lambda(n) = \frac{\log n}{\log L_{train}},

    which keeps the entropy of the attention weights at ``n`` keys near its value at the training
    length (Chiang & Cholak 2022, "Overcoming a theoretical limitation of self-attention",
    Sec. 5); lengths below 2 count as 2.

    Args:
        length: :math:`n`, an ``int`` or a tensor of key counts (e.g. one per causal query row).
        train_length: :math:`L_{train} \geq 2`.

    Returns:
        A ``float`` for an ``int`` length, else a tensor of the length's shape and dtype.
    """
    if isinstance(length, torch.Tensor):
        return torch.log(length.clamp_min(2)) / math.log(train_length)
    return math.log(max(length, 2)) / math.log(train_length)


def _score(d2: torch.Tensor, score: str, tau: torch.Tensor, scale: float) -> torch.Tensor:
    if score == "neg_sq":
        return d2 * (-scale / tau)
    return (1.0 / (1.0 + torch.log1p(d2))) * (scale / tau)


def _check_inputs(geometry: ManifoldGeometry, q, k, v, key_padding_mask) -> torch.Size:
    """Shape checks (no tensor values read); returns the broadcast batch shape."""
    nd = geometry.point_ndim
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor")
        geometry.check_points(t, name)
    if q.shape[-nd:] != k.shape[-nd:]:
        raise ValueError(
            f"query and key points differ in shape: {tuple(q.shape)} vs {tuple(k.shape)}"
        )
    if k.shape[-nd - 1] != v.shape[-nd - 1]:
        raise ValueError(
            f"key and value must have the same length, got {k.shape[-nd - 1]} and {v.shape[-nd - 1]}"
        )
    shapes = [t.shape[: -nd - 1] for t in (q, k, v)]
    try:
        batch = torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ValueError(
            f"the batch dimensions of query, key and value do not broadcast: "
            f"{[tuple(s) for s in shapes]}"
        ) from None
    if key_padding_mask is not None:
        lk = k.shape[-nd - 1]
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape[-1] != lk:
            raise ValueError(
                f"key_padding_mask must be a bool tensor (..., L_k={lk}) with True = padded (pass "
                f"an additive float mask as attn_mask), got {key_padding_mask.dtype} "
                f"{tuple(key_padding_mask.shape)}"
            )
        try:
            torch.broadcast_shapes(key_padding_mask.shape[:-1], batch)
        except RuntimeError:
            raise ValueError(
                f"key_padding_mask has batch shape {tuple(key_padding_mask.shape[:-1])}, which does "
                f"not broadcast to the tokens' batch shape {tuple(batch)}"
            ) from None
    return batch


def _check_values(query, key, value, tau, key_padding_mask) -> None:
    """Value checks (read tensors on the host): run in eager mode when ``validate`` is set."""
    if not bool((tau > 0).all()):
        raise ValueError(f"tau must be positive, got {tau}")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or infinite values")
    if key_padding_mask is not None and bool(key_padding_mask.all(-1).any()):
        raise ValueError("key_padding_mask masks every key of some sequence; nothing to attend")


def additive_attention_mask(
    attn_mask: torch.Tensor | None,
    batch: torch.Size,
    lq: int,
    lk: int,
    is_causal: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """``attn_mask`` as an additive float mask broadcast to ``(*batch, L_q, L_k)``, with the causal
    mask (key index > query index: ``-inf``) folded in when ``is_causal``; ``None`` without
    ``attn_mask``.

    A boolean ``attn_mask`` is True where attention is not allowed (as in
    :class:`torch.nn.MultiheadAttention`); a float one is added to the logits.
    """
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, torch.Tensor) or attn_mask.dim() < 2:
        raise ValueError(f"attn_mask must be a tensor (..., L_q={lq}, L_k={lk})")
    if attn_mask.dtype == torch.bool:
        mask = torch.zeros(attn_mask.shape, dtype=dtype, device=device)
        mask = mask.masked_fill(attn_mask, -math.inf)
    elif attn_mask.is_floating_point():
        mask = attn_mask.to(dtype)
    else:
        raise ValueError(f"attn_mask must be bool or floating point, got {attn_mask.dtype}")
    target = tuple(batch) + (lq, lk)
    try:
        if torch.broadcast_shapes(mask.shape, target) != torch.Size(target):
            raise RuntimeError
    except RuntimeError:
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (..., L_q, L_k) = "
            f"{target}"
        ) from None
    if is_causal:
        mask = mask + _causal_mask(lq, 0, lk, dtype, device)
    return mask.expand(target)


def _causal_mask(lq: int, start: int, stop: int, dtype, device) -> torch.Tensor:
    """Additive ``(L_q, stop - start)`` mask, ``-inf`` where key index > query index."""
    rows = torch.arange(lq, device=device).unsqueeze(-1)
    cols = torch.arange(start, stop, device=device)
    return torch.zeros((), dtype=dtype, device=device).masked_fill(cols > rows, -math.inf)


def _mask_logits(logits, start, stop, key_padding_mask, causal, additive):
    """Apply the key-padding, causal (key index <= query index) and additive masks to a chunk."""
    if key_padding_mask is not None:
        pad = key_padding_mask[..., start:stop].unsqueeze(-2)
        logits = logits.masked_fill(pad, -math.inf)
    if additive is not None:
        logits = logits + additive[..., start:stop]
    elif causal:
        lq = logits.shape[-2]
        rows = torch.arange(lq, device=logits.device).unsqueeze(-1)
        cols = torch.arange(start, stop, device=logits.device)
        logits = logits.masked_fill(cols > rows, -math.inf)
    return logits


@renamed_arguments(causal="is_causal", return_weights="need_weights")
def geodesic_attention(
    manifold: geoopt.Manifold | ManifoldGeometry,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    tau: torch.Tensor | float = 1.0,
    distance: str | None = None,
    score: str = "neg_sq",
    aggregation: str = "extrinsic",
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = False,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float = 1.0,
    metric: Callable | None = None,
    chunk_size: int = 1024,
    karcher_kwargs: dict | None = None,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Attention with geodesic-distance scores and manifold aggregation (no learnable maps).

    The logits are :math:`s_{ij} = -\mathrm{scale}\, d^2(q_i, k_j) / \tau` (``score="neg_sq"``)
    or GDLNet's :math:`\mathrm{scale}\,/(\tau (1 + \log(1 + d^2(q_i, k_j))))`
    (``score="gdlnet"``), plus the masks; the weights are their softmax over keys, and the values
    are aggregated on the manifold (see the module docstring). The masks follow
    :class:`torch.nn.MultiheadAttention`.

    Args:
        manifold: a geoopt manifold (``Euclidean(ndim=1)``, ``Sphere()``, ``Grassmann()``,
            ``SymmetricPositiveDefinite()``, ``PoincareBall()``, or any other with
            ``dist``/``logmap``) or its :class:`~manifoldnn.manifolds.ManifoldGeometry`.
        query: ``(..., L_q, *point_shape)``.
        key: ``(..., L_k, *point_shape)`` (batch dimensions broadcast).
        value: ``(..., L_k, *point_shape)``.
        tau: positive temperature (a float or a scalar tensor, may be learnable).
            Default: ``1.0``.
        distance: one of the geometry's ``distances``. Default: ``None`` (its first).
        score: ``"neg_sq"`` or ``"gdlnet"``. Default: ``"neg_sq"``.
        aggregation: ``"extrinsic"``, ``"tangent"`` (one step at the query) or ``"karcher"``.
            Default: ``"extrinsic"``.
        key_padding_mask: bool ``(..., L_k)``, True where a key is padding. Default: ``None``.
        need_weights: also return the attention weights ``(..., L_q, L_k)`` (materialises them).
            Default: ``False``.
        attn_mask: ``(L_q, L_k)`` or ``(..., L_q, L_k)`` broadcasting to the queries' batch
            shape: bool, True where attention is not allowed, or float, added to the logits.
            Default: ``None``.
        is_causal: query i sees keys ``j <= i`` only (top-left aligned, as
            :func:`~torch.nn.functional.scaled_dot_product_attention`); combined with
            ``attn_mask`` when both are given. Default: ``False``.
        scale: extra multiplier of the logits (entropy-invariant scaling passes
            ``log L / log L_train``). Default: ``1.0``.
        metric: a :class:`~manifoldnn.fairness.FairnessMetric` (or any object with its
            ``query_terms`` interface): adds :math:`\alpha \sum_m w_m(q) \langle g_m(q),
            \mathrm{Log}_q k\rangle^2` to :math:`d^2`. Default: ``None``.
        chunk_size: keys per chunk on the chunked path. Default: ``1024``.
        karcher_kwargs: keyword arguments of :func:`~manifoldnn.manifolds.karcher_mean`
            (``max_iter``, ``tol``, ...) for ``aggregation="karcher"``. Default: ``None``.
        validate: check values on the host (positive tau, finite tokens, a key left unmasked in
            every sequence) in eager mode; skipped under ``torch.compile``. Shapes are always
            checked. Default: ``True``.

    Returns:
        ``(output, weights)``: the output ``(..., L_q, *point_shape)`` and the weights
        ``(..., L_q, L_k)`` with ``need_weights``, ``None`` otherwise.

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> x = Grassmann().random(2, 10, 6, 2)
        >>> out, weights = geodesic_attention(Grassmann(), x, x, x, tau=0.5, need_weights=True)
        >>> out.shape, weights.shape
        (torch.Size([2, 10, 6, 2]), torch.Size([2, 10, 10]))
    """
    geometry = geometry_for(manifold)
    manifold = geometry.manifold
    distance = geometry.check_distance(distance)
    check_choice(score, "score", SCORES)
    check_choice(aggregation, "aggregation", AGGREGATIONS)
    check_positive_int(chunk_size, "chunk_size")
    if not isinstance(tau, torch.Tensor):
        check_positive_float(tau, "tau")
    batch = _check_inputs(geometry, query, key, value, key_padding_mask)
    tau = torch.as_tensor(tau, dtype=query.dtype, device=query.device)
    if validate and not torch.compiler.is_compiling():
        _check_values(query, key, value, tau, key_padding_mask)
    nd = geometry.point_ndim
    point_shape = value.shape[value.dim() - nd :]
    lq, lk = query.shape[-nd - 1], key.shape[-nd - 1]
    if is_causal and lq > lk:
        raise ValueError(f"causal attention needs L_q <= L_k, got {lq} > {lk}")
    additive = additive_attention_mask(
        attn_mask, batch, lq, lk, is_causal, query.dtype, query.device
    )
    query = query.expand(batch + query.shape[-nd - 1 :])
    key = key.expand(batch + key.shape[-nd - 1 :])
    value = value.expand(batch + value.shape[-nd - 1 :])
    if key_padding_mask is not None:
        key_padding_mask = key_padding_mask.expand(batch + (lk,))
    causal = is_causal

    terms = metric.query_terms(manifold, query) if metric is not None else None
    # in flat space every aggregation is the weighted mean of the values
    linear_agg = aggregation == "extrinsic" or geometry.is_flat
    sdpa_ok = (
        score == "neg_sq"
        and distance in geometry.sdpa_distances
        and linear_agg
        and not need_weights
        and (terms is None or (geometry.is_flat and metric.linear_directions is not None))
    )
    if sdpa_ok:
        out = _sdpa_path(
            geometry, distance, query, key, value, tau, scale, key_padding_mask, causal,
            metric, terms, point_shape, additive,
        )  # fmt: skip
        return out, None

    def logits_for(start: int, stop: int) -> torch.Tensor:
        k = key.narrow(-nd - 1, start, stop - start)
        d2 = geometry.pairwise_sq_dist(query, k, distance)
        if terms is not None:
            egrad, coeff = terms
            diff = geometry.pairwise_differential(query, egrad, k)  # (..., Lq, c, M)
            d2 = d2 + (coeff.unsqueeze(-2) * diff.pow(2)).sum(-1)
        logits = _score(d2, score, tau, scale)
        return _mask_logits(logits, start, stop, key_padding_mask, causal, additive)

    if aggregation == "karcher" or need_weights:
        logits = torch.cat(
            [logits_for(s, min(s + chunk_size, lk)) for s in range(0, lk, chunk_size)], -1
        )
        weights = torch.softmax(logits, -1)
        if aggregation == "karcher":
            points = value.unsqueeze(-nd - 2).expand(batch + (lq, lk) + tuple(point_shape))
            out = karcher_mean(manifold, points, weights, **(karcher_kwargs or {}))
        else:
            out = _aggregate_with_weights(geometry, aggregation, query, value, weights)
        return out, (weights if need_weights else None)

    # chunked online softmax: each chunk gives its detached maximum m_c, sum_j exp(s_j - m_c) and
    # sum_j exp(s_j - m_c) f_j; chunks are merged by rescaling to the running maximum. With autograd
    # on, each chunk runs under activation checkpointing, so the backward pass recomputes the
    # pairwise quantities instead of storing them.
    shared = linear_agg
    features = geometry.value_features(value) if shared else None

    def chunk_statistics(start: int, stop: int):
        logits = logits_for(start, stop)
        chunk_max = logits.detach().amax(-1)
        safe_max = torch.where(torch.isfinite(chunk_max), chunk_max, torch.zeros_like(chunk_max))
        p = torch.exp(logits - safe_max.unsqueeze(-1))
        if shared:
            contribution = p @ features[..., start:stop, :]
        else:
            chunk = value.narrow(-nd - 1, start, stop - start)
            logs = geometry.pairwise_log(query, chunk)
            contribution = (p.reshape(p.shape + (1,) * nd) * logs).sum(-nd - 1)
        return chunk_max, p.sum(-1), contribution

    recording = torch.is_grad_enabled() and any(
        t.requires_grad for t in (query, key, value, tau) + tuple(terms or ())
    )
    running_max = total = acc = None
    for start in range(0, lk, chunk_size):
        stop = min(start + chunk_size, lk)
        if recording and lk > chunk_size:
            chunk_max, chunk_total, contribution = checkpoint(
                chunk_statistics, start, stop, use_reentrant=False
            )
        else:
            chunk_max, chunk_total, contribution = chunk_statistics(start, stop)
        if running_max is None:
            running_max, total, acc = chunk_max, chunk_total, contribution
            continue
        new_max = torch.maximum(running_max, chunk_max)
        old_scale, new_scale = _rescale(running_max, new_max), _rescale(chunk_max, new_max)
        extra = (1,) * (acc.dim() - new_max.dim())
        total = total * old_scale + chunk_total * new_scale
        acc = acc * old_scale.reshape(old_scale.shape + extra)
        acc = acc + contribution * new_scale.reshape(new_scale.shape + extra)
        running_max = new_max
    mean = acc / total.reshape(total.shape + (1,) * (acc.dim() - total.dim()))
    if shared:
        return geometry.aggregate(mean, point_shape), None
    return geometry.expmap(query, mean), None


def _rescale(chunk_max: torch.Tensor, new_max: torch.Tensor) -> torch.Tensor:
    """``exp(m_c - m)`` for statistics taken relative to ``m_c`` (0 where ``m_c`` was -inf: such a
    chunk was fully masked and its statistics are relative to 0 and zero)."""
    finite = torch.isfinite(chunk_max)
    safe_new = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
    return torch.where(finite, torch.exp(torch.where(finite, chunk_max, 0.0) - safe_new), 0.0)


def _aggregate_with_weights(geometry, aggregation, query, value, weights):
    nd = geometry.point_ndim
    if aggregation == "extrinsic" or geometry.is_flat:
        features = geometry.value_features(value)
        return geometry.aggregate(weights @ features, value.shape[value.dim() - nd :])
    logs = geometry.pairwise_log(query, value)
    step = (weights.reshape(weights.shape + (1,) * nd) * logs).sum(-nd - 1)
    return geometry.expmap(query, step)


def _sdpa_path(
    geometry, distance, query, key, value, tau, scale, key_padding_mask, causal, metric,
    terms, point_shape, additive,
):  # fmt: skip
    phi, psi = geometry.sdpa_features(query, key, distance)
    if terms is not None:
        _, coeff = terms  # (..., Lq, M)
        directions = metric.linear_directions.to(query)  # (M, d)
        aq, ak = query @ directions.T, key @ directions.T
        phi = torch.cat([phi, -coeff, 2.0 * coeff * aq], -1)
        psi = torch.cat([psi, ak.pow(2), ak], -1)
    phi = phi * (scale / tau)  # folding 1/tau into the queries keeps tau learnable
    if key_padding_mask is not None:
        # a quarter of the most negative number: exp(.) is 0 in every precision (-sqrt(max) is
        # only -256 in float16), with room left for the other terms of the dot product
        big = torch.finfo(query.dtype).min / 4
        phi = torch.cat([phi, torch.ones_like(phi[..., :1])], -1)
        pad = torch.zeros_like(psi[..., 0]).masked_fill(key_padding_mask, big).unsqueeze(-1)
        psi = torch.cat([psi, pad], -1)
    features = geometry.value_features(value)
    # PyTorch's fused CPU kernel (flash attention, O(L) memory) needs 4-d inputs with one head size
    # for queries, keys and values: zero-pad the narrower side (dot products are unchanged).
    width = max(phi.shape[-1], features.shape[-1])
    phi, psi = F.pad(phi, (0, width - phi.shape[-1])), F.pad(psi, (0, width - psi.shape[-1]))
    padded = F.pad(features, (0, width - features.shape[-1]))
    batch = phi.shape[:-2]
    if additive is not None:  # the causal mask is folded into it
        additive = additive.reshape((-1, 1) + additive.shape[-2:])
    mean = F.scaled_dot_product_attention(
        phi.reshape((-1, 1) + phi.shape[-2:]),
        psi.reshape((-1, 1) + psi.shape[-2:]),
        padded.reshape((-1, 1) + padded.shape[-2:]),
        attn_mask=additive,
        is_causal=causal and additive is None,
        scale=1.0,
    )[..., : features.shape[-1]]
    mean = mean.reshape(batch + mean.shape[-2:])
    return geometry.aggregate(mean, point_shape)


class ManifoldAttentionHeads(GeometryModule):
    r"""What multi-head attention on a manifold shares, whatever computes the attention.

    The geometry, per-head query/key/value maps (:class:`~manifoldnn.layers.ManifoldLinear`), a
    (learnable) temperature, the entropy-invariant length scaling of the logits,
    :math:`\log L_k / \log L_{train}` (Chiang & Cholak 2022, "Overcoming a theoretical limitation
    of self-attention", Sec. 5), the masks of :class:`torch.nn.MultiheadAttention` and the
    optional output map. :class:`GeodesicAttention` and :class:`~manifoldnn.layers.FavorAttention`
    subclass it.

    The output map (``out_size``) merges the heads into one point and maps it: the heads'
    weighted extrinsic mean (the geometry's ``value_features`` averaged with learnt softmax
    weights over heads, mapped back by its ``aggregate``), then a
    :class:`~manifoldnn.layers.ManifoldLinear` from ``head_size`` to ``out_size``.

    Args:
        manifold: a geoopt manifold or its :class:`~manifoldnn.manifolds.ManifoldGeometry`.
        in_size: input size: d (vectors), n (Grassmann ``(n, p)`` bases, SPD ``(n, n)``).
        head_size: per-head output size (``<= in_size`` on Grassmann and SPD).
            Default: ``None`` (``in_size``).
        num_heads: H. Default: ``1``.
        tau: initial temperature. Default: ``1.0``.
        learn_tau: make ``log tau`` a parameter. Default: ``True``.
        project: if False, no maps (needs ``num_heads == 1`` and ``head_size == in_size``).
            Default: ``True``.
        train_length: enables entropy-invariant scaling with this training length.
            Default: ``None``.
        out_size: the size of the output map; ``None`` keeps the heads apart.
            Default: ``None``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.
    """

    def __init__(
        self,
        manifold: geoopt.Manifold | ManifoldGeometry,
        in_size: int,
        head_size: int | None = None,
        num_heads: int = 1,
        *,
        tau: float = 1.0,
        learn_tau: bool = True,
        project: bool = True,
        train_length: int | None = None,
        out_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(manifold)
        factory_kwargs = {"device": device, "dtype": dtype}
        check_positive_ints(in_size=in_size, num_heads=num_heads)
        head_size = in_size if head_size is None else check_positive_int(head_size, "head_size")
        check_positive_float(tau, "tau")
        if not project and (num_heads != 1 or head_size != in_size):
            raise ValueError("project=False needs num_heads == 1 and head_size == in_size")
        if train_length is not None and (check_positive_int(train_length, "train_length") < 2):
            raise ValueError(f"train_length must be >= 2, got {train_length}")
        if project:
            _check_map_sizes(self.geometry, in_size, head_size, "head_size")
        self.in_size, self.head_size, self.num_heads = in_size, head_size, num_heads
        self.project, self.train_length = project, train_length
        log_tau = torch.tensor(math.log(tau), **factory_kwargs)
        self.log_tau = nn.Parameter(log_tau) if learn_tau else None
        if not learn_tau:
            self.register_buffer("fixed_log_tau", log_tau)
        if project:
            maps = [
                ManifoldLinear(self.geometry, in_size, head_size, num_heads, **factory_kwargs)
                for _ in range(3)
            ]
            self.query_map, self.key_map, self.value_map = maps
        self.out_size = out_size
        if out_size is not None:
            check_positive_int(out_size, "out_size")
            self.head_weight_logits = nn.Parameter(torch.zeros(num_heads, **factory_kwargs))
            self.out_map = ManifoldLinear(self.geometry, head_size, out_size, **factory_kwargs)
        else:
            self.register_parameter("head_weight_logits", None)
            self.out_map = None

    @property
    def tau(self) -> torch.Tensor:
        """Current temperature ``exp(log_tau)``."""
        return (self.log_tau if self.log_tau is not None else self.fixed_log_tau).exp()

    def _heads(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """``(..., L, *point)`` -> ``(..., H, L, *head_point)``."""
        nd = self.geometry.point_ndim
        if not self.project:
            return x.unsqueeze(-nd - 2)
        y = getattr(self, f"{which}_map")(x)  # (..., L, H, *head_point)
        return y.movedim(-nd - 1, -nd - 2)

    def split_heads(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None,
        value: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, float, torch.Tensor | None, torch.Tensor | None
    ]:
        """Checked per-head ``(q, k, v)`` ``(..., H, L, *head_point)`` (key defaults to the query,
        value to the key), the logit scale, the key padding mask ``(..., 1, L_k)`` and the
        attention mask broadcast over heads: ``(L_q, L_k)`` stays shared, ``(..., L_q, L_k)``
        with the query's batch dimensions gets a head axis, ``(..., H, L_q, L_k)`` is per head, and
        :class:`torch.nn.MultiheadAttention`'s ``(N * H, L_q, L_k)`` is read as ``(N, H, L_q, L_k)``."""
        key = query if key is None else key
        value = key if value is None else value
        nd = self.geometry.point_ndim
        for name, t in (("query", query), ("key", key), ("value", value)):
            self.geometry.check_points(t, name)
        if key_padding_mask is not None:
            try:
                torch.broadcast_shapes(key_padding_mask.shape[:-1], key.shape[: -nd - 1])
            except RuntimeError:
                raise ValueError(
                    f"key_padding_mask (..., L_k) has batch shape "
                    f"{tuple(key_padding_mask.shape[:-1])}, which does not broadcast to the keys' "
                    f"batch shape {tuple(key.shape[: -nd - 1])}"
                ) from None
        if attn_mask is not None and attn_mask.dim() > 2:
            batch = query.shape[: -nd - 1]
            lead = attn_mask.shape[:-2]
            if len(batch) == 1 and lead == (batch[0] * self.num_heads,) and self.num_heads > 1:
                attn_mask = attn_mask.unflatten(0, (batch[0], self.num_heads))
            elif len(lead) == len(batch):
                attn_mask = attn_mask.unsqueeze(-3)
        q, k, v = self._heads(query, "query"), self._heads(key, "key"), self._heads(value, "value")
        scale = 1.0
        if self.train_length is not None:
            scale = entropy_invariant_scale(k.shape[-nd - 1], self.train_length)
        mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(-2)
        return q, k, v, scale, mask, attn_mask

    @renamed_arguments(causal="is_causal", return_weights="need_weights")
    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        *,
        average_attn_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(output, weights or None)``, in the order of
        :meth:`torch.nn.MultiheadAttention.forward`; see :class:`GeodesicAttention` for the
        arguments' shapes. Subclasses compute the attention of the heads in :meth:`attend`."""
        q, k, v, scale, mask, attn_mask = self.split_heads(
            query, key, value, key_padding_mask, attn_mask
        )
        out, weights = self.attend(
            q, k, v, scale=scale, key_padding_mask=mask, need_weights=need_weights,
            attn_mask=attn_mask, is_causal=is_causal,
        )  # fmt: skip
        return self.merge_heads(out), self.merge_weights(weights, average_attn_weights)

    def attend(self, q, k, v, *, scale, key_padding_mask, need_weights, attn_mask, is_causal):
        """The attention of the heads ``(..., H, L, *head_point)``: ``(output, weights or None)``
        with per-head weights ``(..., H, L_q, L_k)``."""
        raise NotImplementedError

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """``(..., H, L_q, *head_point)`` -> ``(..., L_q, H, *head_point)``, or, with the output
        map, ``(..., L_q, *out_point)``."""
        nd = self.geometry.point_ndim
        out = out.movedim(-nd - 2, -nd - 1)
        if self.out_map is None:
            return out
        head_point = out.shape[out.dim() - nd :]
        features = self.geometry.value_features(out)  # (..., L_q, H, F)
        weights = torch.softmax(self.head_weight_logits, 0).to(features.dtype)
        merged = self.geometry.aggregate((weights.unsqueeze(-1) * features).sum(-2), head_point)
        return self.out_map(merged).squeeze(-nd - 1)

    def extra_repr(self) -> str:
        return (
            f"{self.geometry.name}, in_size={self.in_size}, head_size={self.head_size}, "
            f"num_heads={self.num_heads}, project={self.project}, out_size={self.out_size}"
        )

    @staticmethod
    def merge_weights(weights: torch.Tensor | None, average: bool) -> torch.Tensor | None:
        """Per-head weights ``(..., H, L_q, L_k)``, averaged over heads when ``average``."""
        if weights is None or not average:
            return weights
        return weights.mean(-3)


class GeodesicAttention(ManifoldAttentionHeads):
    r"""Multi-head attention between manifold-valued tokens with geodesic-distance scores.

    Each head maps queries, keys and values with a :class:`~manifoldnn.layers.ManifoldLinear`
    (FRMap + ReOrth on the Grassmannian, congruence on SPD, Möbius matrix-vector product on the
    Poincaré ball, normalised linear map on the sphere, affine map in Euclidean space), scores pairs
    with :math:`-d^2/\tau` (learnable :math:`\tau`) or GDLNet's similarity, and aggregates values
    with :func:`geodesic_attention`. In Euclidean space with ``score="neg_sq"`` it is ordinary
    attention with logits :math:`-\|q - k\|^2 / \tau` (run through
    ``scaled_dot_product_attention``). The call follows :class:`torch.nn.MultiheadAttention`.

    Entropy-invariant scaling (``train_length``): logits are multiplied by
    :math:`\log L_k / \log L_{train}` so that attention entropy does not grow with the sequence
    length (Chiang & Cholak 2022, "Overcoming a theoretical limitation of self-attention", Sec. 5).

    Args:
        manifold: a geoopt manifold or its geometry, see :func:`geodesic_attention`.
        in_size: input size: d (vectors), n (Grassmann ``(n, p)`` bases, SPD ``(n, n)``).
        head_size: per-head output size (``<= in_size`` on Grassmann and SPD).
            Default: ``None`` (``in_size``).
        num_heads: H. Default: ``1``.
        distance: as in :func:`geodesic_attention`. Default: ``None``.
        score: as in :func:`geodesic_attention`. Default: ``"neg_sq"``.
        aggregation: as in :func:`geodesic_attention`. Default: ``"extrinsic"``.
        metric: as in :func:`geodesic_attention`. Default: ``None``.
        chunk_size: as in :func:`geodesic_attention`. Default: ``1024``.
        validate: check token values on the host in eager forwards (see
            :func:`geodesic_attention`); ``False`` removes every host synchronisation from the
            forward. Default: ``True``.
        **options: the options every head layer takes (:class:`ManifoldAttentionHeads`): ``tau``
            (initial temperature), ``learn_tau``, ``project`` (``False``: no maps),
            ``train_length`` (entropy-invariant scaling), ``out_size`` (the output map; ``None``
            returns the heads apart), ``device``, ``dtype``.

    Shape:
        - ``query``: ``(..., L_q, *point)``; ``key``, ``value``: ``(..., L_k, *point)`` (default:
          self attention); unbatched input is a batch shape ``()``.
        - ``key_padding_mask``: bool ``(..., L_k)``, True where a key is padding.
        - ``attn_mask``: ``(L_q, L_k)``, ``(..., L_q, L_k)``, ``(..., H, L_q, L_k)`` or
          ``(N * H, L_q, L_k)``: bool (True = not allowed) or float (added to the logits).
        - output: ``(..., L_q, H, *head_point)``, or ``(..., L_q, *out_point)`` with ``out_size``;
          weights (with ``need_weights``): ``(..., L_q, L_k)`` averaged over heads, or
          ``(..., H, L_q, L_k)`` with ``average_attn_weights=False``.

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> layer = GeodesicAttention(Grassmann(), 8, head_size=6, num_heads=2)
        >>> x = Grassmann().random(3, 10, 8, 2)
        >>> out, weights = layer(x, need_weights=True, is_causal=True)
        >>> out.shape, weights.shape
        (torch.Size([3, 10, 2, 6, 2]), torch.Size([3, 10, 10]))
    """

    def __init__(
        self,
        manifold: geoopt.Manifold | ManifoldGeometry,
        in_size: int,
        head_size: int | None = None,
        num_heads: int = 1,
        *,
        distance: str | None = None,
        score: str = "neg_sq",
        aggregation: str = "extrinsic",
        metric: nn.Module | None = None,
        chunk_size: int = 1024,
        validate: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(manifold, in_size, head_size, num_heads, **options)
        self.distance = self.geometry.check_distance(distance)
        self.score = check_choice(score, "score", SCORES)
        self.aggregation = check_choice(aggregation, "aggregation", AGGREGATIONS)
        self.metric = metric
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.validate = validate

    def attend(self, q, k, v, *, scale, key_padding_mask, need_weights, attn_mask, is_causal):
        """:func:`geodesic_attention` on the heads ``(..., H, L, *head_point)``."""
        return geodesic_attention(
            self.geometry, q, k, v, tau=self.tau,
            distance=self.distance, score=self.score, aggregation=self.aggregation,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            is_causal=is_causal, scale=scale, metric=self.metric, chunk_size=self.chunk_size,
            validate=self.validate,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, distance={self.distance}, score={self.score}, "
            f"aggregation={self.aggregation}"
        )
