r"""Layers of SPD matrix networks (SPDNet, Huang & Van Gool, AAAI 2017, "A Riemannian network for
SPD matrix learning", Sec. 3; Riemannian batch normalisation, Brooks et al., NeurIPS 2019,
"Riemannian batch normalization for SPD neural networks"; its variance normalisation, Kobler et
al., NeurIPS 2022, "SPD domain-specific batch normalization to crack interpretable unsupervised
domain adaptation in EEG").

A batch of symmetric positive-definite (SPD) matrices has shape ``(..., n, n)``; every layer acts
on the last two dimensions and keeps the leading ones.

* :class:`CovPool`: signals ``(..., C, T)`` to shrunk covariances ``(..., C, C)``;
* :class:`BiMap`: :math:`X \mapsto W^\top X W` with W on the Stiefel manifold;
* :class:`ReEig`, :class:`LogEig`, :class:`ExpEig`: spectral functions :math:`U f(\Lambda) U^\top`;
* :class:`SPDBatchNorm`: Riemannian batch normalisation (affine-invariant or log-Euclidean).

The spectral layers use :func:`manifoldnn.linalg.symmetric_functions`, whose backward is the
Daleckii-Krein formula (Higham 2008, Thm. 3.11): finite and correct at repeated eigenvalues, where
back-propagating through ``torch.linalg.eigh`` divides by zero. Input checks (shape, symmetry,
finiteness, definiteness) run in eager mode only; under ``torch.compile`` they are skipped, so that
the layers trace without graph breaks.
"""

from __future__ import annotations

import math
from functools import partial

import geoopt
import torch
from torch import nn

from ..linalg import eye_like, newton_schulz_step, sym, symmetric_functions
from ..linalg.spectral import EXP, INV_SQRT, LOG, SQRT
from ..manifolds import karcher_mean, spd_manifold
from ..parametrizations import ConstrainedModule, reset_stiefel_, stiefel_parameter
from ..validation import (
    check_bool,
    check_choice,
    check_in_range,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_positive_ints,
)

__all__ = ["BiMap", "ReEig", "LogEig", "ExpEig", "CovPool", "SPDBatchNorm"]


def _check_spd_input(
    x: torch.Tensor,
    name: str,
    layer: str,
    *,
    size: int | None = None,
    definite: bool = True,
    values: bool = True,
) -> None:
    """Eager-mode checks of a batch of symmetric (positive-definite) matrices ``(..., n, n)``.

    Raises ``ValueError`` naming ``name`` for a non-tensor or non-floating input, a shape that is
    not square or whose size is not ``size``, NaN or infinite entries, asymmetry beyond
    ``sqrt(eps)`` relative to the largest entry, or (with ``definite``) a failed Cholesky
    factorisation; ``values=False`` keeps the shape checks only (no host synchronisation). Nothing
    is checked while ``torch.compile`` traces (the checks read tensor values on the host).
    """
    if torch.compiler.is_compiling():
        return
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{layer}: {name} must be a tensor (..., n, n), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{layer}: {name} must be floating point, got {x.dtype}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{layer}: {name} must be square (..., n, n), got {tuple(x.shape)}")
    if size is not None and x.shape[-1] != size:
        raise ValueError(
            f"{layer}: {name} must be (..., {size}, {size}) to match in_size={size}, got "
            f"{tuple(x.shape)}"
        )
    if x.numel() == 0 or not values:
        return
    values = x.detach()
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{layer}: {name} holds NaN or infinite values")
    # symmetric to a relative sqrt(eps): far above the rounding of any computed symmetric matrix
    scale = values.abs().amax((-2, -1)).clamp_min(torch.finfo(values.dtype).tiny)
    asymmetry = (values - values.transpose(-1, -2)).abs().amax((-2, -1)) / scale
    if bool((asymmetry > math.sqrt(torch.finfo(values.dtype).eps)).any()):
        raise ValueError(
            f"{layer}: {name} is not symmetric (largest relative |X - X^T| "
            f"{float(asymmetry.max()):.2e})"
        )
    if definite and values.dtype not in (torch.float16, torch.bfloat16):
        info = torch.linalg.cholesky_ex(values).info
        if bool((info > 0).any()):
            raise ValueError(
                f"{layer}: {name} is not positive definite ({int((info > 0).sum())} of "
                f"{info.numel()} matrices fail a Cholesky factorisation)"
            )


class BiMap(ConstrainedModule):
    r"""Bilinear map :math:`X \mapsto W^\top X W` with :math:`W^\top W = I` (SPDNet, Huang & Van
    Gool 2017, BiMap layer, eq. 1).

    .. math::

        f_b(X) = W^\top X W, \qquad W \in \mathrm{St}(n_{in}, n_{out}) = \{W \in
        \mathbb{R}^{n_{in} \times n_{out}} : W^\top W = I\}

    W has full column rank, so SPD inputs give SPD outputs. ``weight`` is a
    :class:`geoopt.ManifoldParameter` on :class:`geoopt.EuclideanStiefel`;
    :class:`geoopt.optim.RiemannianAdam` / ``RiemannianSGD`` keep it on the manifold (the paper's
    Riemannian SGD, ibid. Sec. 3.4). Converting the module's dtype (``.double()``, ``.to``)
    re-orthonormalises W to the new precision (two Newton-Schulz steps).

    Args:
        in_size: size ``n_in`` of the input matrices.
        out_size: size ``n_out <= in_size`` of the output matrices.
        validate: check the input's values (finite, symmetric, positive definite) in eager
            forwards; ``False`` keeps the shape checks only and removes the host
            synchronisation, e.g. inside a network whose input is checked once.
            Default: ``True``.
        device: device of the weight. Default: ``None``.
        dtype: dtype of the weight. Default: ``None``.

    Shape:
        - Input: ``(..., in_size, in_size)`` symmetric (positive definite).
        - Output: ``(..., out_size, out_size)``.

    Raises:
        ValueError: for ``out_size > in_size`` (no orthonormal columns), and in eager mode for an
            input of the wrong size, non-symmetric, indefinite or holding NaN.

    Examples::

        >>> import torch
        >>> from manifoldnn.layers import BiMap
        >>> x = torch.eye(8).expand(5, 8, 8)
        >>> BiMap(8, 4)(x).shape
        torch.Size([5, 4, 4])
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        validate: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_ints(in_size=in_size, out_size=out_size)
        self.in_size, self.out_size = in_size, out_size
        self.validate = check_bool(validate, "validate")
        if out_size > in_size:
            raise ValueError(
                f"BiMap needs out_size <= in_size for W (in_size, out_size) to have orthonormal "
                f"columns, got out_size={out_size} > in_size={in_size}"
            )
        self.weight = stiefel_parameter(in_size, out_size, device=device, dtype=dtype)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random W with orthonormal columns (sign-fixed QR of a Gaussian matrix: Haar)."""
        reset_stiefel_(self.weight)

    def _apply(self, fn, recurse=True):
        dtype = self.weight.dtype
        module = super()._apply(fn, recurse)
        if self.weight.dtype != dtype and self.weight.dtype in (torch.float32, torch.float64):
            with torch.no_grad():
                # a W orthonormal to the old precision, to the new one: each step squares the error
                self.weight.copy_(newton_schulz_step(newton_schulz_step(self.weight)))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spd_input(x, "input", "BiMap", size=self.in_size, values=self.validate)
        w = self.weight
        # (X W)^T W = W^T X W for symmetric X; both products fold the batch into one matrix
        # product with W on the right, where W^T (X W) broadcasts W^T over the batch
        return sym((x @ w).transpose(-1, -2) @ w)

    def extra_repr(self) -> str:
        return f"in_size={self.in_size}, out_size={self.out_size}"


def _floor(lam: torch.Tensor, eps: float) -> torch.Tensor:
    return lam.clamp_min(eps)


def _floor_derivative(lam: torch.Tensor, eps: float) -> torch.Tensor:
    return (lam > eps).to(lam.dtype)


class ReEig(nn.Module):
    r"""Eigenvalue rectification :math:`X \mapsto U \max(\epsilon I, \Lambda) U^\top` (SPDNet,
    Huang & Van Gool 2017, ReEig layer, eq. 6), the non-linearity of SPD networks.

    .. math::

        f_r(X) = U \max(\epsilon I, \Lambda) U^\top, \qquad X = U \Lambda U^\top

    The backward is the Daleckii-Krein formula with divided differences of
    :math:`\max(\epsilon, \cdot)` (ibid. eq. 13 is its special case for distinct eigenvalues),
    finite where eigenvalues repeat, e.g. those clamped to :math:`\epsilon`.

    Args:
        eps: the eigenvalue floor :math:`\epsilon > 0`. Default: ``1e-4``.
        validate: check the input's values (finite, symmetric) in eager
            forwards; ``False`` keeps the shape checks only and removes the host
            synchronisation, e.g. inside a network whose input is checked once.
            Default: ``True``.

    Shape:
        - Input: ``(..., n, n)`` symmetric.
        - Output: ``(..., n, n)`` SPD, eigenvalues at least ``eps``.

    Examples::

        >>> import torch
        >>> from manifoldnn.layers import ReEig
        >>> ReEig(0.5)(torch.diag(torch.tensor([0.1, 2.0])))
        tensor([[0.5000, 0.0000],
                [0.0000, 2.0000]])
    """

    def __init__(self, eps: float = 1e-4, *, validate: bool = True) -> None:
        super().__init__()
        self.eps = check_positive_float(eps, "eps")
        self.validate = check_bool(validate, "validate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spd_input(x, "input", "ReEig", definite=False, values=self.validate)
        rectify = (partial(_floor, eps=self.eps), partial(_floor_derivative, eps=self.eps))
        return symmetric_functions(x, rectify)[0]

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class _EigenvalueMap(nn.Module):
    """A function applied to the eigenvalues of a symmetric matrix (the subclass names it)."""

    _function: tuple
    _definite: bool

    def __init__(self, *, validate: bool = True) -> None:
        super().__init__()
        self.validate = check_bool(validate, "validate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = type(self).__name__
        _check_spd_input(x, "input", layer, definite=self._definite, values=self.validate)
        return symmetric_functions(x, self._function)[0]


def _floored_log(lam: torch.Tensor, eps: float) -> torch.Tensor:
    return lam.clamp_min(eps).log()


def _floored_log_derivative(lam: torch.Tensor, eps: float) -> torch.Tensor:
    return (lam > eps).to(lam.dtype) / lam.clamp_min(eps)


class LogEig(_EigenvalueMap):
    r"""Matrix logarithm :math:`X \mapsto U \log(\Lambda) U^\top` (SPDNet, Huang & Van Gool 2017,
    LogEig layer, eq. 8): maps SPD matrices to the flat space of symmetric matrices (the
    log-Euclidean chart, Arsigny et al. 2007), where Euclidean layers follow.

    With ``eps`` the eigenvalues are first floored at :math:`\epsilon`, so that
    ``LogEig(eps)`` is ``LogEig()`` after ``ReEig(eps)`` from one eigendecomposition instead of two
    (the rectified matrix has the input's eigenvectors); its backward is the Daleckii-Krein formula
    of :math:`\log \max(\epsilon, \cdot)`, equal to the chain rule through both layers.

    .. math::

        f(X) = U \log \max(\epsilon I, \Lambda) U^\top, \qquad X = U \Lambda U^\top

    Args:
        eps: the eigenvalue floor :math:`\epsilon > 0` of a preceding ReEig, or ``None`` for the
            plain logarithm of an SPD input. Default: ``None``.
        validate: check the input's values (finite, symmetric, and positive definite without
            ``eps``) in eager forwards; ``False`` keeps the shape checks only and removes the host
            synchronisation, e.g. inside a network whose input is checked once.
            Default: ``True``.

    Shape:
        - Input: ``(..., n, n)`` SPD (symmetric with ``eps``).
        - Output: ``(..., n, n)`` symmetric.

    Examples::

        >>> import torch
        >>> from manifoldnn.layers import LogEig
        >>> LogEig()(torch.eye(3) * torch.e).diagonal()
        tensor([1.0000, 1.0000, 1.0000])
        >>> LogEig(1.0)(torch.diag(torch.tensor([0.5, torch.e]))).diagonal()
        tensor([0.0000, 1.0000])
    """

    _function, _definite = LOG, True

    def __init__(self, eps: float | None = None, *, validate: bool = True) -> None:
        super().__init__(validate=validate)
        self.eps = None if eps is None else check_positive_float(eps, "eps")
        if self.eps is not None:
            self._function = (
                partial(_floored_log, eps=self.eps),
                partial(_floored_log_derivative, eps=self.eps),
            )
            self._definite = False

    def extra_repr(self) -> str:
        return "" if self.eps is None else f"eps={self.eps}"


class ExpEig(_EigenvalueMap):
    r"""Matrix exponential :math:`S \mapsto U \exp(\Lambda) U^\top`, the inverse of
    :class:`LogEig`: maps symmetric matrices back to SPD matrices (Brooks et al. 2019, Sec. 3).

    Args:
        validate: check the input's values (finite, symmetric) in eager forwards, as
            :class:`LogEig` does. Default: ``True``.

    Shape:
        - Input: ``(..., n, n)`` symmetric.
        - Output: ``(..., n, n)`` SPD.

    Examples::

        >>> import torch
        >>> from manifoldnn.layers import ExpEig
        >>> ExpEig()(torch.zeros(2, 2))
        tensor([[1., 0.],
                [0., 1.]])
    """

    _function, _definite = EXP, False


class CovPool(nn.Module):
    r"""Covariance pooling of multichannel signals with shrinkage towards a scaled identity.

    .. math::

        S = \frac{1}{T - 1} (X - \bar X)(X - \bar X)^\top, \qquad
        \Sigma = (1 - \alpha) S + \alpha \frac{\operatorname{tr} S}{C} I

    (the shrinkage target of Ledoit & Wolf 2004, "A well-conditioned estimator for
    large-dimensional covariance matrices", with a fixed intensity :math:`\alpha`). For
    :math:`\alpha > 0` the output is positive definite even when :math:`T \le C`. Differentiable
    (no decomposition).

    Args:
        shrinkage: the intensity :math:`\alpha \in [0, 1]`. Default: ``0.0``.

    Shape:
        - Input: ``(..., C, T)``, C channels of T samples (``T >= 2``).
        - Output: ``(..., C, C)``.

    Examples::

        >>> import torch
        >>> from manifoldnn.layers import CovPool
        >>> CovPool(shrinkage=0.1)(torch.randn(4, 6, 50)).shape
        torch.Size([4, 6, 6])
    """

    def __init__(self, shrinkage: float = 0.0) -> None:
        super().__init__()
        self.shrinkage = check_in_range(shrinkage, "shrinkage", 0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
                raise ValueError(
                    f"CovPool: input must be a floating tensor (..., C, T), got "
                    f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
                )
            if x.shape[-1] < 2:
                raise ValueError(f"CovPool: input needs T >= 2 samples, got {tuple(x.shape)}")
            if not bool(torch.isfinite(x.detach()).all()):
                raise ValueError("CovPool: input holds NaN or infinite values")
        centred = x - x.mean(-1, keepdim=True)
        cov = sym(centred @ centred.transpose(-1, -2)) / (x.shape[-1] - 1)
        if self.shrinkage == 0.0:
            return cov
        trace = cov.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
        return (1.0 - self.shrinkage) * cov + self.shrinkage * trace * eye_like(cov)

    def extra_repr(self) -> str:
        return f"shrinkage={self.shrinkage}"


BATCH_NORM_METRICS = ("affine_invariant", "log_euclidean")


class SPDBatchNorm(ConstrainedModule):
    r"""Riemannian batch normalisation of SPD matrices (Brooks et al. 2019, Algorithm 1), optionally
    with the variance normalisation of Kobler et al. 2022 (SPDBN, their eq. 10).

    Training: the batch's Karcher mean :math:`G` (:func:`manifoldnn.manifolds.karcher_mean`), each
    matrix transported from :math:`G` to the identity and from there to a learned SPD bias
    :math:`B`; the running mean follows the batch means by geodesic interpolation. Evaluation uses
    the running mean for :math:`G`.

    .. math::

        \text{affine-invariant:}\quad Y_i = B^{1/2} G^{-1/2} X_i G^{-1/2} B^{1/2}, \qquad
        \text{log-Euclidean:}\quad Y_i = \exp(\log X_i - \log G + \log B)

        G_{\text{run}} \leftarrow \mathrm{Exp}_{G_{\text{run}}}\big(\eta\,
        \mathrm{Log}_{G_{\text{run}}} G\big)

    The output's Karcher mean (in the same metric) is :math:`B`: the congruence by
    :math:`B^{1/2} G^{-1/2}` is an isometry of the affine-invariant metric, the shift of the
    logarithms one of the log-Euclidean metric. The log-Euclidean mean is closed form
    (:math:`\exp` of the mean logarithm, Arsigny et al. 2007), so that variant needs no iteration
    and, unlike the affine-invariant one in training, compiles without a graph break (the iterative
    Karcher mean runs outside the graph). With ``metric="affine_invariant"`` the bias is a
    :class:`geoopt.ManifoldParameter` on :class:`geoopt.SymmetricPositiveDefinite` (train with a
    Riemannian optimiser, as in the paper); with ``"log_euclidean"`` it is stored as its
    logarithm, a plain parameter, since the log-Euclidean metric is Euclidean in that chart.

    With ``variance=True`` the batch's Fréchet variance about :math:`G` is normalised too: each
    centred matrix is scaled along its geodesic from the identity (a matrix power) so that the
    output's variance about :math:`B` is a learned dispersion :math:`\nu^2`,

    .. math::

        \sigma^2 = \frac{1}{N} \sum_i d^2(G, X_i) = \frac{1}{N} \sum_i \|L_i\|_F^2, \qquad
        Y_i = \mathrm{Exp}_B\Big(\Gamma_{I \to B} \frac{\nu}{\sqrt{\sigma^2 + \epsilon}}
        L_i\Big),

    with :math:`L_i = \log(G^{-1/2} X_i G^{-1/2})` (affine-invariant, so that
    :math:`Y_i = B^{1/2} \exp(s L_i) B^{1/2}`) or :math:`L_i = \log X_i - \log G`
    (log-Euclidean, :math:`Y_i = \exp(\log B + s L_i)`), :math:`s = \nu / \sqrt{\sigma^2 +
    \epsilon}`. Then :math:`\frac{1}{N}\sum_i d^2(B, Y_i) = \nu^2 \sigma^2 / (\sigma^2 +
    \epsilon)`, and :math:`B` stays the output's mean (the logarithms at the mean sum to zero,
    scaled or not). :math:`\nu = \exp(\text{log\_dispersion})` is learned in log space (positive);
    ``running_var`` follows the batch variances by :math:`\sigma^2_{\text{run}} \leftarrow
    (1 - \eta) \sigma^2_{\text{run}} + \eta \sigma^2` and replaces :math:`\sigma^2` in
    evaluation.

    Args:
        size: size n of the matrices.
        metric: ``"affine_invariant"`` or ``"log_euclidean"``. Default: ``"affine_invariant"``.
        momentum: the step :math:`\eta \in (0, 1]` of the running mean (and variance).
            Default: ``0.1``.
        variance: also normalise the batch's Fréchet variance to a learned dispersion
            :math:`\nu^2` (Kobler et al. 2022). Default: ``False``.
        eps: :math:`\epsilon \ge 0` added to the variance before its square root (only with
            ``variance=True``). Default: ``1e-5``.
        karcher_kwargs: keyword arguments of :func:`~manifoldnn.manifolds.karcher_mean`
            (``max_iter``, ``tol``). Default: ``None``.
        validate: check the input's values (finite, symmetric, positive definite) in eager
            forwards; ``False`` keeps the shape checks only and removes the host
            synchronisation, e.g. inside a network whose input is checked once.
            Default: ``True``.
        device: device of the bias and running mean. Default: ``None``.
        dtype: dtype of the bias and running mean. Default: ``None``.

    Shape:
        - Input: ``(B, size, size)`` SPD (the batch dimension is the one normalised over; more
          leading dimensions are flattened into it).
        - Output: same shape.

    Examples::

        >>> import torch
        >>> from manifoldnn.layers import SPDBatchNorm
        >>> signals = torch.randn(16, 4, 10)
        >>> x = signals @ signals.mT / 10 + 0.1 * torch.eye(4)
        >>> SPDBatchNorm(4, metric="log_euclidean")(x).shape
        torch.Size([16, 4, 4])
        >>> SPDBatchNorm(4, variance=True)(x).shape
        torch.Size([16, 4, 4])
    """

    def __init__(
        self,
        size: int,
        *,
        metric: str = "affine_invariant",
        momentum: float = 0.1,
        variance: bool = False,
        eps: float = 1e-5,
        karcher_kwargs: dict | None = None,
        validate: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.size = check_positive_int(size, "size")
        self.metric = check_choice(metric, "metric", BATCH_NORM_METRICS)
        self.momentum = check_in_range(momentum, "momentum", 0.0, 1.0, low_open=True)
        self.variance = check_bool(variance, "variance")
        self.eps = check_nonnegative_float(eps, "eps")
        self.karcher_kwargs = dict(karcher_kwargs or {})
        self.validate = check_bool(validate, "validate")
        self.manifold = spd_manifold(metric)
        factory = {"device": device, "dtype": dtype}
        if metric == "affine_invariant":
            self.bias = geoopt.ManifoldParameter(
                torch.eye(size, **factory), manifold=geoopt.SymmetricPositiveDefinite()
            )
        else:
            self.log_bias = nn.Parameter(torch.zeros(size, size, **factory))
        self.register_buffer("running_mean", torch.eye(size, **factory))
        if self.variance:
            self.log_dispersion = nn.Parameter(torch.zeros((), **factory))
            self.register_buffer("running_var", torch.ones((), **factory))

    def reset_parameters(self) -> None:
        """Bias and running mean back to the identity (dispersion and running variance to 1)."""
        with torch.no_grad():
            if self.metric == "affine_invariant":
                self.bias.copy_(eye_like(self.bias))
            else:
                self.log_bias.zero_()
            self.running_mean.copy_(eye_like(self.running_mean))
            if self.variance:
                self.log_dispersion.zero_()
                self.running_var.fill_(1.0)

    def _batch_mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.metric == "log_euclidean":
            return symmetric_functions(symmetric_functions(x, LOG)[0].mean(0), EXP)[0]
        return karcher_mean(self.manifold, x, check=False, **self.karcher_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spd_input(x, "input", "SPDBatchNorm", size=self.size, values=self.validate)
        shape = x.shape
        x = x.reshape((-1,) + shape[-2:])
        if self.training:
            mean = self._batch_mean(x)
            with torch.no_grad():
                running = self.running_mean
                step = self.momentum * self.manifold.logmap(running, mean.detach())
                self.running_mean.copy_(sym(self.manifold.expmap(running, step)))
        else:
            mean = self.running_mean
        if self.metric == "log_euclidean":
            logs = symmetric_functions(x, LOG)[0] - symmetric_functions(mean, LOG)[0]
            if self.variance:
                logs = self._scale_to_dispersion(logs)
            out = symmetric_functions(logs + sym(self.log_bias), EXP)[0]
        else:
            inv_root = symmetric_functions(mean, INV_SQRT)[0]
            bias_root = symmetric_functions(self.bias, SQRT)[0]
            if self.variance:
                centred = sym(inv_root @ x @ inv_root)
                logs = self._scale_to_dispersion(symmetric_functions(centred, LOG)[0])
                out = sym(bias_root @ symmetric_functions(logs, EXP)[0] @ bias_root)
            else:
                transport = bias_root @ inv_root
                out = sym(transport @ x @ transport.transpose(-1, -2))
        return out.reshape(shape)

    def _scale_to_dispersion(self, logs: torch.Tensor) -> torch.Tensor:
        r"""Logarithms at the mean ``(N, n, n)`` scaled by :math:`\nu / \sqrt{\sigma^2 +
        \epsilon}`; in training the batch's variance also updates ``running_var``."""
        if self.training:
            # Frechet variance about the mean: d(G, X_i) = ||L_i||_F on both metrics
            variance = logs.square().sum((-2, -1)).mean()
            with torch.no_grad():
                self.running_var.lerp_(variance.detach(), self.momentum)
        else:
            variance = self.running_var
        return logs * (self.log_dispersion.exp() * torch.rsqrt(variance + self.eps))

    def extra_repr(self) -> str:
        extra = f", variance=True, eps={self.eps}" if self.variance else ""
        return f"size={self.size}, metric={self.metric!r}, momentum={self.momentum}{extra}"
