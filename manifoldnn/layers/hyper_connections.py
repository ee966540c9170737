r"""Hyper-connections: ``n`` residual streams mixed by a matrix kept on a manifold, and DeepNorm.

Hyper-connections (Zhu et al., ICLR 2025, "Hyper-Connections", arXiv 2409.19606) widen the residual
stream of a width-``dim`` network into ``n`` streams :math:`x \in \mathbb{R}^{n \times d}`; each layer
reads one input from them, and writes back a mixture of the streams plus its output:

.. math::

    x_{l+1} = H^{\mathrm{res}}_l\, x_l + {H^{\mathrm{post}}_l}^\top
    \mathcal{F}\bigl(H^{\mathrm{pre}}_l\, x_l\bigr),\qquad
    H^{\mathrm{pre}}_l, H^{\mathrm{post}}_l \in \mathbb{R}^{1 \times n},\;
    H^{\mathrm{res}}_l \in \mathbb{R}^{n \times n}.

Manifold-constrained hyper-connections (mHC; DeepSeek, arXiv 2512.24880) keep
:math:`H^{\mathrm{res}}` doubly stochastic, :math:`H^{\mathrm{res}} = \mathrm{SK}(\exp \tilde
H^{\mathrm{res}})` by Sinkhorn-Knopp, with :math:`H^{\mathrm{pre}} = \sigma(\cdot)` and
:math:`H^{\mathrm{post}} = 2\sigma(\cdot)`: products of doubly stochastic matrices are doubly
stochastic, so the composite residual map :math:`\prod_l H^{\mathrm{res}}_l` has every absolute row
and column sum equal to 1 and cannot amplify the streams however deep the stack.

The residual mixing is one of :data:`RESIDUAL_CONSTRAINTS` (one class each):

* ``None``: :class:`UnconstrainedMixing`, the hyper-connections of Zhu et al.;
* ``"sinkhorn"``: :class:`SinkhornMixing`, mHC as published, log-domain Sinkhorn-Knopp with a bound
  on the logits' range against the collapse to permutation matrices;
* ``"birkhoff"``: :class:`BirkhoffMixing`, a static, exactly doubly stochastic matrix, a
  :class:`geoopt.ManifoldParameter` on the Birkhoff polytope trained by a Riemannian optimiser;
* ``"orthogonal"``: :class:`OrthogonalMixing`, a matrix of the orthogonal group (norm-preserving
  instead of contracting).

DeepNorm (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers", arXiv 2203.00555) is the
other answer to depth: :func:`deepnorm_scales`.
"""

from __future__ import annotations

import math

import geoopt
import torch
import torch.nn.functional as F
from torch import nn

from ..parametrizations import PARAMETRIZATIONS, ConstrainedModule, OrthonormalFrame
from ..validation import (
    check_bool,
    check_choice,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    optional,
)

__all__ = [
    "BirkhoffMixing",
    "HyperConnections",
    "OrthogonalMixing",
    "RESIDUAL_CONSTRAINTS",
    "SinkhornMixing",
    "UnconstrainedMixing",
    "composite_gain",
    "deepnorm_scales",
    "sinkhorn_knopp",
]


def sinkhorn_knopp(
    logits: torch.Tensor, num_iters: int = 20, *, log_domain: bool = True
) -> torch.Tensor:
    r"""The doubly stochastic scaling :math:`\mathrm{SK}(\exp L)` of ``exp(logits)``.

    Alternately normalises the columns and the rows of :math:`\exp L` (Sinkhorn and Knopp 1967,
    "Concerning nonnegative matrices and doubly stochastic matrices"). In the log domain each step
    is a ``logsumexp`` subtraction, so nothing under- or overflows whatever the logits; otherwise
    :math:`\exp(L - \max L)` is divided by its sums, about three times fewer operations, exact
    enough when the logits span a bounded range (entries of :math:`\exp(L - \max L)` no smaller
    than :math:`e^{-\mathrm{range}}`). The result is positive, its rows sum to 1 up to rounding
    (the last step), and its columns approach 1 linearly: by Birkhoff's contraction (Franklin and
    Lorenz 1989, "On the scaling of multidimensional matrices") the error shrinks by
    :math:`\tanh(\Delta / 4)^2` per iteration, :math:`\Delta` the largest
    :math:`L_{ij} + L_{kl} - L_{il} - L_{kj}`.

    Args:
        logits: :math:`L`, ``(..., n, n)``.
        num_iters: column-and-row normalisation pairs; 0 returns :math:`\exp L`. Default: ``20``
            (mHC's choice).
        log_domain: normalise in the log domain. Default: ``True``.

    Returns:
        ``(..., n, n)``, in ``logits``' dtype.
    """
    if not log_domain:
        p = torch.exp(logits - logits.amax(dim=(-2, -1), keepdim=True))
        for _ in range(num_iters):
            p = p / p.sum(dim=-2, keepdim=True)
            p = p / p.sum(dim=-1, keepdim=True)
        return p
    log_p = logits
    for _ in range(num_iters):
        log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
    return log_p.exp()


def composite_gain(matrices: torch.Tensor) -> torch.Tensor:
    r"""The mHC paper's gain of the composite residual map: the largest absolute row or column sum
    of :math:`H_L \cdots H_2 H_1`.

    .. math::

        \mathrm{gain} = \max\bigl(\|P\|_\infty, \|P\|_1\bigr),\qquad P = \prod_{l=L}^{1} H_l,

    the larger of the two operator norms that bound how much the streams can grow or shrink.

    Args:
        matrices: the per-layer :math:`H^{\mathrm{res}}_l`, ``(L, ..., n, n)`` in layer order.

    Returns:
        ``(...)``: the gain of each composite (one per token when the matrices are dynamic).
    """
    product = matrices[0]
    for matrix in matrices[1:]:
        product = matrix @ product
    absolute = product.abs()
    return torch.maximum(absolute.sum(-1).amax(-1), absolute.sum(-2).amax(-1))


def deepnorm_scales(num_layers: int) -> tuple[float, float]:
    r"""DeepNorm's residual scale :math:`\alpha` and initial weight scale :math:`\beta` for a
    decoder-only stack of ``num_layers`` blocks (Wang et al. 2022, "DeepNet", Table 1).

    .. math::

        x_{l+1} = \mathrm{LN}\bigl(\alpha\, x_l + G_l(x_l)\bigr),\qquad
        \alpha = (2N)^{1/4},\quad \beta = (8N)^{-1/4},

    :math:`\beta` multiplying the initial weights of the feed-forward network and of the value and
    output projections of attention (the query and key projections keep theirs).

    Args:
        num_layers: :math:`N`, the number of blocks.

    Returns:
        ``(alpha, beta)``.

    Examples::

        >>> deepnorm_scales(8)
        (2.0, 0.3535533905932738)
    """
    n = check_positive_int(num_layers, "num_layers")
    return (2.0 * n) ** 0.25, (8.0 * n) ** -0.25


class _Mixing(ConstrainedModule):
    """A residual-mixing rule: how the coefficient logits become ``H^pre``, ``H^post``, ``H^res``
    (a :class:`~manifoldnn.parametrizations.ConstrainedModule`: a constrained matrix is projected
    again after a dtype change)."""

    #: whether the input-dependent (dynamic) coefficients reach ``H^res``
    dynamic_residual = True

    def pre(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def post(self, logits: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(logits)

    def static_pre_logits(self, num_streams: int, layer_index: int) -> torch.Tensor:
        # one-hot on stream (layer_index mod n), as hyper-connections and the reference mHC start:
        # the n copies of the input are symmetric, and only unequal reads break the symmetry
        return F.one_hot(torch.tensor(layer_index % num_streams), num_streams).to(
            torch.get_default_dtype()
        )

    def static_post_logits(self, num_streams: int) -> torch.Tensor:
        return torch.zeros(num_streams)

    def forward(self, dynamic: torch.Tensor | None = None) -> torch.Tensor:
        """``H^res``: ``(n, n)``, or ``(..., n, n)`` with dynamic logits ``(..., n, n)``."""
        raise NotImplementedError


class UnconstrainedMixing(_Mixing):
    r"""Hyper-connections' mixing (Zhu et al. 2025): :math:`H^{\mathrm{res}}` any real matrix.

    :math:`H^{\mathrm{res}} = A_r + s_r \tanh(\bar x W_r)`, :math:`H^{\mathrm{pre}}` and
    :math:`H^{\mathrm{post}}` the logits themselves; initialised as the paper does:
    :math:`A_r = I`, :math:`H^{\mathrm{pre}} = e_{l \bmod n}^\top` (layer ``l`` reads stream
    ``l mod n``), :math:`H^{\mathrm{post}} = \mathbf 1^\top`. With ``n = 1`` and fixed weights it is
    the pre-norm residual :math:`x + \mathcal F(x)`.

    Args:
        num_streams: ``n``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.
    """

    def __init__(self, num_streams: int, *, device=None, dtype=None) -> None:
        super().__init__()
        n = check_positive_int(num_streams, "num_streams")
        self.logits = nn.Parameter(torch.eye(n, device=device, dtype=dtype))

    def pre(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def post(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def static_post_logits(self, num_streams: int) -> torch.Tensor:
        return torch.ones(num_streams)

    def forward(self, dynamic: torch.Tensor | None = None) -> torch.Tensor:
        """``H^res``: ``(n, n)``, or ``(..., n, n)`` with dynamic logits ``(..., n, n)``."""
        return self.logits if dynamic is None else self.logits + dynamic


class SinkhornMixing(_Mixing):
    r"""mHC's mixing (DeepSeek 2025): :math:`H^{\mathrm{res}} = \mathrm{SK}(\exp(\tilde
    H^{\mathrm{res}} / \tau))`, log-domain Sinkhorn-Knopp (:func:`sinkhorn_knopp`).

    :math:`\tilde H^{\mathrm{res}} = A_r + s_r \tanh(\bar x W_r)` starts at :math:`A_r = I`
    (the reference implementation's start). Guard against the collapse to permutation matrices
    (reported against public implementations: Sinkhorn inputs spanning a range of about 160
    underflow to exact permutation matrices, whose gradient is zero; the same remedy, a capped
    range, is "range-capped Sinkhorn"): when the logits of a matrix span a range :math:`r = \max \tilde H - \min \tilde H` above
    ``max_logit_range`` :math:`c`, they are divided by the temperature :math:`\tau = r / c`
    (treated as a constant in the backward, so the gradient keeps its direction, scaled by
    :math:`1/\tau`). The entries of :math:`\exp(\tilde H / \tau)` then lie within a factor
    :math:`e^{c}` of each other, and those of the doubly stochastic limit are at least
    :math:`e^{-2c} / n`: no permutation matrix, whose Sinkhorn Jacobian vanishes, can be reached.
    The bounded range also lets the iterations run on :math:`\exp` directly instead of in the log
    domain (:func:`sinkhorn_knopp`), at no risk of underflow; without the guard they run in the
    log domain.

    Args:
        num_streams: ``n``.
        num_iters: Sinkhorn-Knopp iterations. Default: ``20``.
        max_logit_range: :math:`c`; ``None`` turns the guard off (as published). Default: ``4.0``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.
    """

    def __init__(
        self,
        num_streams: int,
        *,
        num_iters: int = 20,
        max_logit_range: float | None = 4.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        n = check_positive_int(num_streams, "num_streams")
        self.num_iters = check_nonnegative_int(num_iters, "num_iters")
        self.max_logit_range = optional(check_positive_float)(max_logit_range, "max_logit_range")
        self.logits = nn.Parameter(torch.eye(n, device=device, dtype=dtype))

    def forward(self, dynamic: torch.Tensor | None = None) -> torch.Tensor:
        """``H^res``: ``(n, n)``, or ``(..., n, n)`` with dynamic logits ``(..., n, n)``."""
        logits = self.logits if dynamic is None else self.logits + dynamic
        if self.max_logit_range is not None:
            spread = logits.amax(dim=(-2, -1), keepdim=True) - logits.amin(
                dim=(-2, -1), keepdim=True
            )
            temperature = torch.clamp(spread.detach() / self.max_logit_range, min=1.0)
            logits = logits / temperature
        return sinkhorn_knopp(logits, self.num_iters, log_domain=self.max_logit_range is None)


class _ExactBirkhoffPolytope(geoopt.manifolds.BirkhoffPolytope):
    """geoopt's Birkhoff polytope with a projection exact to rounding.

    geoopt stops Sinkhorn at a relative error of 1e-5; here the scaling runs in float64 to 1e-10 and
    ends with the orthogonal projection onto the affine set of unit row and column sums,
    :math:`P - (r - 1)\\mathbf 1^\\top / n - \\mathbf 1 (c - 1)^\\top / n + (s - n) J / n^2`
    (:math:`r`, :math:`c` the row and column sums, :math:`s` the total), rounded once: the sums are
    then 1 to the rounding of the storage dtype.
    """

    def __init__(self) -> None:
        super().__init__(max_iter=1000, tol=1e-10, eps=0.0)

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        work = x if x.device.type == "mps" else x.to(torch.float64)
        p = super().projx(work)
        n = p.shape[-1]
        rows = p.sum(-1, keepdim=True) - 1.0
        cols = p.sum(-2, keepdim=True) - 1.0
        total = rows.sum(-2, keepdim=True)
        p = p - rows / n - cols / n + total / n**2
        return p.to(x.dtype)


class BirkhoffMixing(_Mixing):
    r"""A static, exactly doubly stochastic :math:`H^{\mathrm{res}}`: a
    :class:`geoopt.ManifoldParameter` on the Birkhoff polytope (Douik and Hassibi 2018,
    "Manifold Optimization Over the Set of Doubly Stochastic Matrices").

    Trained by a geoopt Riemannian optimiser (``RiemannianAdam``), whose retraction keeps it on the
    polytope at every step, instead of unrolled Sinkhorn iterations in every forward. It starts at
    mHC's starting point :math:`\mathrm{SK}(\exp I) = (J + (e - 1) I) / (e + n - 1)`. The dynamic
    coefficients reach :math:`H^{\mathrm{pre}}` and :math:`H^{\mathrm{post}}` only.

    Args:
        num_streams: ``n``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.
    """

    dynamic_residual = False

    def __init__(self, num_streams: int, *, device=None, dtype=None) -> None:
        super().__init__()
        n = check_positive_int(num_streams, "num_streams")
        start = (torch.ones(n, n) + (math.e - 1.0) * torch.eye(n)) / (math.e + n - 1.0)
        self.matrix = geoopt.ManifoldParameter(
            start.to(device=device, dtype=dtype), manifold=_ExactBirkhoffPolytope()
        )

    def forward(self, dynamic: torch.Tensor | None = None) -> torch.Tensor:
        """``H^res`` ``(n, n)`` (static)."""
        return self.matrix


class OrthogonalMixing(_Mixing):
    r"""A static :math:`H^{\mathrm{res}} \in O(n)`: norm-preserving instead of contracting.

    The matrix is an ``(n, n)`` :class:`~manifoldnn.parametrizations.OrthonormalFrame`, so any
    product of such matrices has operator 2-norm 1. It starts at the identity. The dynamic
    coefficients reach :math:`H^{\mathrm{pre}}` and :math:`H^{\mathrm{post}}` only.

    Args:
        num_streams: ``n``.
        parametrization: of the frame, one of ``"stiefel"`` (needs a Riemannian optimiser),
            ``"cayley"``, ``"matrix_exp"`` (orthogonal under any optimiser). Default:
            ``"matrix_exp"``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.
    """

    dynamic_residual = False

    def __init__(
        self, num_streams: int, *, parametrization: str = "matrix_exp", device=None, dtype=None
    ) -> None:
        super().__init__()
        n = check_positive_int(num_streams, "num_streams")
        check_choice(parametrization, "parametrization", PARAMETRIZATIONS)
        self.frame = OrthonormalFrame(n, n, parametrization, device=device, dtype=dtype)

    def forward(self, dynamic: torch.Tensor | None = None) -> torch.Tensor:
        """``H^res`` ``(n, n)`` (static)."""
        return self.frame()


#: residual-mixing rule of :class:`HyperConnections`, by ``constraint`` name
RESIDUAL_CONSTRAINTS: dict[str | None, type[_Mixing]] = {
    None: UnconstrainedMixing,
    "sinkhorn": SinkhornMixing,
    "birkhoff": BirkhoffMixing,
    "orthogonal": OrthogonalMixing,
}


class HyperConnections(nn.Module):
    r"""A branch module (attention, MLP, ...) wired into ``n`` residual streams by hyper-connections.

    .. math::

        x_{l+1} = H^{\mathrm{res}} x_l + {H^{\mathrm{post}}}^\top
        \mathcal{F}\bigl(H^{\mathrm{pre}} x_l\bigr),

    on streams :math:`x_l \in \mathbb{R}^{n \times d}` (Zhu et al. 2025, "Hyper-Connections"; mHC,
    DeepSeek 2025). Each coefficient is a static part plus, with ``dynamic=True``, an
    input-dependent one, :math:`s \tanh(\bar x W)` with :math:`\bar x` the RMS-normalised streams,
    :math:`W` starting at zero and the scales :math:`s` at 0.01 (the paper's start). How the
    coefficients are constrained is ``constraint`` (:data:`RESIDUAL_CONSTRAINTS`): ``None`` leaves
    them free (hyper-connections); the others take :math:`H^{\mathrm{pre}} = \sigma(\cdot)`,
    :math:`H^{\mathrm{post}} = 2\sigma(\cdot)` and keep :math:`H^{\mathrm{res}}` doubly stochastic
    (``"sinkhorn"``, ``"birkhoff"``) or orthogonal (``"orthogonal"``).

    :meth:`expand_streams` makes the ``n`` streams from a hidden state (``n`` copies) and
    :meth:`reduce_streams` sums them back.

    .. note::
        ``"sinkhorn"`` is mHC as published (input-dependent :math:`H^{\mathrm{res}}`, 20 unrolled
        iterations per forward, doubly stochastic to the iterations' convergence). ``"birkhoff"``
        is exact to rounding and costs nothing in the forward, but is static and needs a geoopt
        Riemannian optimiser. ``"orthogonal"`` keeps the streams' norm instead of averaging them.

    Args:
        dim: ``d``, the width of each stream.
        num_streams: ``n``.
        branch: the module :math:`\mathcal F`, mapping ``(..., dim)`` to ``(..., dim)``; it may
            return a tuple whose first element is the output (the rest is handed back).
        constraint: ``None``, ``"sinkhorn"``, ``"birkhoff"`` or ``"orthogonal"``. Default: ``None``.
        dynamic: add the input-dependent coefficients. Default: ``True``.
        layer_index: the layer's position: the static :math:`H^{\mathrm{pre}}` logits start
            one-hot on stream ``layer_index mod n`` (Zhu et al.'s start, and the reference mHC's),
            which breaks the symmetry of the ``n`` equal copies. Default: ``0``.
        sinkhorn_iters: Sinkhorn-Knopp iterations of ``"sinkhorn"``. Default: ``20``.
        max_logit_range: the guard of ``"sinkhorn"`` against permutation matrices
            (:class:`SinkhornMixing`); ``None`` for none. Default: ``4.0``.
        device: of the parameters. Default: PyTorch's default.
        dtype: of the parameters. Default: PyTorch's default.

    Shape:
        - Input: streams ``(..., n, dim)``, e.g. ``(B, T, n, dim)``; unbatched ``(n, dim)``.
        - Output: the same shape, or a tuple whose first element is, when ``branch`` returns one.

    Examples::

        >>> mlp = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16))
        >>> layer = HyperConnections(16, 4, mlp, constraint="sinkhorn")
        >>> x = HyperConnections.expand_streams(torch.randn(2, 5, 16), 4)
        >>> layer(x).shape
        torch.Size([2, 5, 4, 16])
        >>> torch.allclose(layer.residual_matrix().sum(-1), torch.ones(4))
        True
    """

    def __init__(
        self,
        dim: int,
        num_streams: int,
        branch: nn.Module,
        *,
        constraint: str | None = None,
        dynamic: bool = True,
        layer_index: int = 0,
        sinkhorn_iters: int = 20,
        max_logit_range: float | None = 4.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.num_streams = n = check_positive_int(num_streams, "num_streams")
        if not callable(branch):
            raise ValueError(f"branch must be a module or callable, got {branch!r}")
        check_choice(constraint, "constraint", tuple(RESIDUAL_CONSTRAINTS))
        self.dynamic = check_bool(dynamic, "dynamic")
        layer_index = check_nonnegative_int(layer_index, "layer_index")
        self.constraint = constraint
        self.branch = branch
        factory = {"device": device, "dtype": dtype}
        options = (
            {"num_iters": sinkhorn_iters, "max_logit_range": max_logit_range}
            if constraint == "sinkhorn"
            else {}
        )
        self.mixing = RESIDUAL_CONSTRAINTS[constraint](n, **options, **factory)
        self.pre_logits = nn.Parameter(self.mixing.static_pre_logits(n, layer_index).to(**factory))
        self.post_logits = nn.Parameter(self.mixing.static_post_logits(n).to(**factory))
        if self.dynamic:
            outputs = 2 + (n if self.mixing.dynamic_residual else 0)
            self.dynamic_weight = nn.Parameter(torch.zeros(dim, outputs, **factory))
            self.dynamic_scale = nn.Parameter(torch.full((3,), 0.01, **factory))

    @staticmethod
    def expand_streams(x: torch.Tensor, num_streams: int) -> torch.Tensor:
        """``n`` copies of the hidden state: ``(..., dim)`` to ``(..., num_streams, dim)``."""
        return x.unsqueeze(-2).expand(*x.shape[:-1], num_streams, x.shape[-1]).contiguous()

    @staticmethod
    def reduce_streams(streams: torch.Tensor) -> torch.Tensor:
        """The sum of the streams (Zhu et al.'s read-out): ``(..., n, dim)`` to ``(..., dim)``."""
        return streams.sum(dim=-2)

    def _check_streams(self, streams: torch.Tensor) -> None:
        if streams.dim() < 2 or streams.shape[-2:] != (self.num_streams, self.dim):
            raise ValueError(
                f"streams must have shape (..., num_streams={self.num_streams}, dim={self.dim}), "
                f"got {tuple(streams.shape)}"
            )

    def coefficients(
        self, streams: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(H^pre, H^post, H^res)`` for these streams: ``(..., n)``, ``(..., n)``,
        ``(..., n, n)`` (static ones without the leading dimensions)."""
        n = self.num_streams
        pre, post, residual = self.pre_logits, self.post_logits, None
        if self.dynamic:
            normed = F.rms_norm(streams, (self.dim,))
            projected = torch.tanh(normed @ self.dynamic_weight)  # (..., n, outputs)
            scale = self.dynamic_scale
            pre = pre + scale[0] * projected[..., 0]
            post = post + scale[1] * projected[..., 1]
            if self.mixing.dynamic_residual:
                residual = scale[2] * projected[..., 2 : 2 + n]
        return self.mixing.pre(pre), self.mixing.post(post), self.mixing(residual)

    def residual_matrix(self, streams: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`H^{\\mathrm{res}}` in use: ``(n, n)`` for the static part (``streams=None``), or
        ``(..., n, n)`` for streams ``(..., n, dim)``."""
        if streams is None:
            return self.mixing()
        self._check_streams(streams)
        return self.coefficients(streams)[2]

    def forward(self, streams: torch.Tensor, *args, **kwargs):
        """The streams after this layer; ``args`` and ``kwargs`` go to ``branch``."""
        self._check_streams(streams)
        pre, post, residual = self.coefficients(streams)
        # tiny n x n products as broadcast sums: batched (n x n) matmuls are slow on the CPU
        branch_input = (pre.unsqueeze(-1) * streams).sum(-2)  # (..., dim)
        output = self.branch(branch_input, *args, **kwargs)
        rest = ()
        if isinstance(output, tuple):
            output, rest = output[0], output[1:]
        if output.shape != branch_input.shape:
            raise ValueError(
                f"branch must map (..., dim) to the same shape, got {tuple(branch_input.shape)} "
                f"-> {tuple(output.shape)}"
            )
        if residual.dim() == 2:  # static: one (n, n) @ (n, ... * dim) product
            mixed = torch.einsum("ij,...jd->...id", residual, streams)
        else:
            mixed = (residual.unsqueeze(-1) * streams.unsqueeze(-3)).sum(-2)
        mixed = mixed + post.unsqueeze(-1) * output.unsqueeze(-2)
        return (mixed, *rest) if rest else mixed

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_streams={self.num_streams}, constraint={self.constraint!r}, "
            f"dynamic={self.dynamic}"
        )
