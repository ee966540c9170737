r"""Debiasing that changes the vectors: local natural-gradient steps under the fairness metric.

Each round fits a nonlinear bias function :math:`b` (kernel ridge regression of the bias labels on
random Fourier features, :class:`RandomFeatureBias`) on the current fitting vectors, then moves
every point :math:`x` on the sphere by the step that trades displacement against the bias left,

.. math::

    u^\ast = \arg\min_{u \in T_x S} \tfrac12 \|u\|^2
        + \tfrac{\alpha}{2} W(x_0) \big(b(x) + db(x)[u]\big)^2
      = -\frac{\alpha W(x_0)\, b(x)}{1 + \alpha W(x_0) \|g(x)\|^2}\, g(x),
    \qquad x \leftarrow \mathrm{Exp}_x(u^\ast),

with :math:`g` the Riemannian gradient of :math:`b` and :math:`W(x_0)` the fairness metric's
locality kernel at the input point, averaged over the sensitive centres. :math:`u^\ast` is the
natural-gradient (Gauss-Newton) step of :math:`\tfrac{\alpha}{2} W b^2` under the stretched metric
:math:`G_{fair} = I + \alpha W g g^\top` of :class:`~manifoldnn.fairness.FairnessMetric`: the
metric makes moving along the bias gradient expensive, the penalty makes leaving bias expensive,
and the step is a Newton step to the zero level set of :math:`b` when :math:`\alpha W \|g\|^2 \gg 1`
and vanishes with :math:`W`. Then :math:`b` is refitted on the moved fitting vectors (as INLP
refits its linear classifier, Ravfogel et al. 2020, Alg. 1), so that bias the new
representation still carries is found and removed in the next round.

Locality bound. Comparing :math:`u^\ast` with :math:`u = 0` in the objective gives
:math:`\|u^\ast\| \le |b(x)| \sqrt{\alpha W(x_0)}`, and :math:`|b| \le B = \sqrt{2/D}\,\|w\|_1 + |c|`
for the random-feature bias. With the step also clipped to ``max_step``, the geodesic
displacement after R rounds is at most

.. math::

    d(x_0, T(x_0)) \le \sum_{r=1}^{R} \min\big(s_{max},\, B_r \sqrt{\alpha W(x_0)}\big),
    \qquad W(x_0) \le \exp\!\big(-d_{min}^2(x_0) / (2\sigma^2)\big),

with :math:`d_{min}` the geodesic distance to the nearest sensitive centre
(:meth:`FairMetricDebias.displacement_bound`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..linalg import check_orthonormal
from ..manifolds import Sphere, SphereGeometry
from ..utils.estimators import float_dtype_of, store_parameters, torch_seed, validate_parameters
from ..validation import (
    check_callable,
    check_choice,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    optional,
)
from .metric import FairnessMetric

__all__ = ["RandomFeatureBias", "FairMetricDebias"]


class RandomFeatureBias(nn.Module):
    r"""Kernel bias function :math:`b(x) = \langle w, \phi(x) \rangle + c` on random Fourier features
    :math:`\phi(x) = \sqrt{2/D} \cos(\Omega^\top x + \beta)`, :math:`\Omega_{ij} \sim
    \mathcal{N}(0, 2\gamma)`, :math:`\beta_j \sim U[0, 2\pi)`, which approximate the RBF kernel
    :math:`\exp(-\gamma \|x - y\|^2)` (Rahimi & Recht 2007, "Random features for large-scale kernel
    machines", Alg. 1). Fitted by weighted ridge regression of the labels (:meth:`fit`).

    Args:
        frequencies: :math:`\Omega`, ``(d, D)``.
        phases: :math:`\beta`, ``(D,)``.
        weights: :math:`w`, ``(D,)``.
        intercept: :math:`c`.

    Shape: ``x (..., d)`` -> ``(...)``.
    """

    def __init__(
        self,
        frequencies: torch.Tensor,
        phases: torch.Tensor,
        weights: torch.Tensor,
        intercept: float | torch.Tensor,
    ) -> None:
        super().__init__()
        d, n_features = frequencies.shape
        if phases.shape != (n_features,) or weights.shape != (n_features,):
            raise ValueError(
                f"phases and weights must be ({n_features},), got {tuple(phases.shape)}, "
                f"{tuple(weights.shape)}"
            )
        self.register_buffer("frequencies", frequencies)
        self.register_buffer("phases", phases)
        self.register_buffer("weights", weights)
        self.register_buffer("intercept", torch.as_tensor(intercept).to(weights))

    @staticmethod
    def features(x: torch.Tensor, frequencies: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
        """:math:`\\phi(x)` ``(..., D)``."""
        scale = math.sqrt(2.0 / frequencies.shape[1])
        return scale * torch.cos(x @ frequencies + phases)

    @classmethod
    def fit(
        cls,
        x: torch.Tensor,
        target: torch.Tensor,
        sample_weight: torch.Tensor,
        *,
        n_features: int,
        gamma: float,
        ridge: float,
        generator: torch.Generator,
    ) -> RandomFeatureBias:
        r"""Weighted ridge regression :math:`\min_{w, c} \sum_i s_i (\langle w, \phi(x_i)\rangle + c
        - t_i)^2 + \lambda \|w\|^2` with :math:`\lambda = ` ``ridge`` times the mean diagonal of the
        weighted feature Gram matrix (so that ``ridge`` does not depend on D or on the weights'
        scale). ``x (n, d)``, ``target (n,)``, ``sample_weight (n,)``."""
        d = x.shape[-1]
        kw = {"device": x.device, "dtype": x.dtype}
        omega = torch.randn(d, n_features, generator=generator, dtype=x.dtype)
        omega = (omega * math.sqrt(2.0 * gamma)).to(x.device)
        beta = (torch.rand(n_features, generator=generator, dtype=x.dtype) * 2 * math.pi).to(
            x.device
        )
        phi = cls.features(x, omega, beta)
        s = sample_weight / sample_weight.sum()
        phi_mean = s @ phi
        t_mean = s @ target
        centred = phi - phi_mean
        gram = centred.T @ (s.unsqueeze(-1) * centred)
        lam = ridge * torch.diagonal(gram).mean()
        rhs = centred.T @ (s * (target - t_mean))
        w = torch.linalg.solve(gram + lam * torch.eye(n_features, **kw), rhs)
        return cls(omega, beta, w, t_mean - phi_mean @ w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, self.frequencies, self.phases) @ self.weights + self.intercept

    def sup_bound(self) -> torch.Tensor:
        r""":math:`\sup_x |b(x)| \le \sqrt{2/D}\, \|w\|_1 + |c|` (since :math:`|\cos| \le 1`)."""
        scale = math.sqrt(2.0 / self.weights.shape[0])
        return scale * self.weights.abs().sum() + self.intercept.abs()


class FairMetricDebias(TransformerMixin, BaseEstimator):
    r"""Iterated local debiasing on the sphere with refitted nonlinear bias functions.

    ``fit(X, z)`` runs ``rounds`` rounds on the fitting vectors; each stores its bias function;
    ``transform`` replays the rounds on any rows (unseen words included). The step and its
    locality bound are in the module docstring; the metric is
    :class:`~manifoldnn.fairness.FairnessMetric` on :class:`~manifoldnn.manifolds.Sphere`.

    Args:
        alpha: stretch :math:`\alpha \ge 0` of the metric; 0 returns the input. Default: ``30.0``.
        rounds: number of refit-and-move rounds :math:`R`. Default: ``20``.
        n_features: random Fourier features :math:`D` of each bias function. Default: ``1024``.
        gamma: RBF kernel parameter :math:`\gamma` of the bias functions. Default: ``0.2``.
        ridge: relative ridge penalty of the bias regression. Default: ``1e-3``.
        n_centres: K sensitive centres, drawn (seeded) from the biased fitting points.
            Default: ``8``.
        bandwidth: locality bandwidth :math:`\sigma` (radians); ``None`` sets it to the median
            geodesic distance from a centre to its nearest other centre. Default: ``None``.
        max_step: largest geodesic step per round (radians). Default: ``0.5``.
        bias_fitter: ``(x (n, d), target (n,), sample_weight (n,), generator) -> module`` (or a
            sequence of M modules) fitting any differentiable bias functions ``(..., d) -> (...)``
            (e.g. an MLP probe's logit); M > 1 functions are removed together by the step's
            M x M solve. :meth:`displacement_bound` needs each to have ``sup_bound()``. ``None``:
            the :class:`RandomFeatureBias` of ``n_features``, ``gamma``, ``ridge``.
            Default: ``None``.
        random_state: seed of the centres and the random features (``None``, an int or a
            ``numpy.random.RandomState``). Default: ``0``.
        batch_size: rows per chunk in :meth:`transform`. Default: ``4096``.
        device: where to compute; ``None``: the input's device. Default: ``None``.
        dtype: ``torch.float32`` or ``torch.float64``, the precision of the rounds; ``None``:
            float64 for float64 input, else float32. Default: ``None``.

    Attributes:
        centres_: ``(K, d)`` tensor, the sensitive centres.
        bandwidth_: the locality bandwidth used.
        metrics_: one :class:`FairnessMetric` per round, its bias loss the round's bias function.
        locality_: the :class:`FairnessMetric` whose kernel weights the steps.
        fit_vectors_: ``(n, d)`` tensor, the fitting vectors after the rounds.

    Shape:
        ``fit(X, z)``: ``X (n, d)`` unit rows, ``z (n,)`` with values +1 / -1 (the two sides of the
        bias) and 0 (neutral). ``transform(X)``: ``(..., d)`` -> ``(..., d)`` NumPy array in the
        float dtype of ``X``.

    Examples::

        >>> debias = FairMetricDebias(alpha=30.0, rounds=8).fit(X_fit, z)  # doctest: +SKIP
        >>> X_debiased = debias.transform(X_all)  # doctest: +SKIP
    """

    _parameter_checks = {
        "alpha": check_nonnegative_float,
        "rounds": check_nonnegative_int,
        **dict.fromkeys(("n_features", "n_centres", "batch_size"), check_positive_int),
        **dict.fromkeys(("gamma", "ridge", "max_step"), check_positive_float),
        "bias_fitter": optional(check_callable),
        "bandwidth": optional(check_positive_float),
        "dtype": optional(functools.partial(check_choice, choices=(torch.float32, torch.float64))),
    }

    def __init__(
        self,
        alpha: float = 30.0,
        rounds: int = 20,
        *,
        n_features: int = 1024,
        gamma: float = 0.2,
        ridge: float = 1e-3,
        n_centres: int = 8,
        bandwidth: float | None = None,
        max_step: float = 0.5,
        bias_fitter: Callable[..., nn.Module] | None = None,
        random_state: int | np.random.RandomState | None = 0,
        batch_size: int = 4096,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        store_parameters(self, locals())

    def _as_points(self, X, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        x = torch.as_tensor(X)
        if not (x.is_floating_point()):
            raise ValueError(f"{name} must be a float array, got dtype {x.dtype}")
        if x.dim() < 1 or x.shape[-1] < 2:
            raise ValueError(f"{name} must be (..., d) with d >= 2, got {tuple(x.shape)}")
        if dtype is None:
            dtype = self.dtype if self.dtype is not None else x.dtype
            dtype = torch.float64 if dtype == torch.float64 else torch.float32
        x = x.to(device=self.device if self.device is not None else x.device, dtype=dtype)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} has NaN or infinite entries")
        # unit rows (orthonormal 1-column bases), to the rounding of vectors normalised in float32
        check_orthonormal(x.unsqueeze(-1), f"{name} (unit-norm rows)", dtype=torch.float32)
        return x

    # ------------------------------------------------------------------ fitting
    def fit(self, X, z) -> FairMetricDebias:
        """Fit the rounds on the fitting vectors.

        Args:
            X: ``(n, d)`` unit rows (array or tensor).
            z: ``(n,)`` labels in {-1, 0, 1}.

        Returns:
            ``self``.
        """
        validate_parameters(self, self._parameter_checks)
        x = self._as_points(X, "X")
        if x.dim() != 2:
            raise ValueError(f"X must be (n, d), got {tuple(x.shape)}")
        labels = torch.as_tensor(np.asarray(z) if not isinstance(z, torch.Tensor) else z)
        if labels.shape != (x.shape[0],):
            raise ValueError(f"z must be ({x.shape[0]},) to match X, got {tuple(labels.shape)}")
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise ValueError("z must hold integers in {-1, 0, 1}")
        labels = labels.to(device=x.device, dtype=torch.int64)
        if not bool(((labels >= -1) & (labels <= 1)).all()):
            raise ValueError("z must hold values in {-1, 0, 1} only")
        biased = torch.nonzero(labels != 0).squeeze(-1)
        if not bool((labels == 1).any()) or not bool((labels == -1).any()):
            raise ValueError("z must contain both +1 and -1 labels")

        self.dim_ = x.shape[-1]
        self.dtype_ = x.dtype
        self.manifold_ = Sphere()
        generator = torch.Generator().manual_seed(torch_seed(self.random_state))
        pick = torch.randperm(biased.numel(), generator=generator)[: self.n_centres]
        self.centres_ = x[biased[pick.to(biased.device)]].clone()
        if self.bandwidth is None:
            d2 = SphereGeometry(self.manifold_).pairwise_sq_dist(self.centres_, self.centres_)
            d2.fill_diagonal_(float("inf"))
            self.bandwidth_ = float(d2.min(-1).values.sqrt().median()) if len(pick) > 1 else 1.0
        else:
            self.bandwidth_ = float(self.bandwidth)
        self.locality_ = FairnessMetric(
            self.manifold_,
            [_Zero()] * self.centres_.shape[0],
            float(self.alpha),
            centres=self.centres_,
            bandwidth=self.bandwidth_,
        )

        # each group (+1, -1, 0) gets the same total weight in the bias regression
        counts = torch.stack([(labels == v).sum() for v in (-1, 0, 1)]).to(x.dtype)
        present = (counts > 0).sum()
        group_weight = 1.0 / (counts[labels + 1] * present)
        target = labels.to(x.dtype)

        self.metrics_: list[FairnessMetric] = []
        kernel = self._kernel(x)
        current = x
        for _ in range(self.rounds if self.alpha > 0 else 0):
            if self.bias_fitter is None:
                biases = [
                    RandomFeatureBias.fit(
                        current,
                        target,
                        group_weight,
                        n_features=self.n_features,
                        gamma=float(self.gamma),
                        ridge=float(self.ridge),
                        generator=generator,
                    )
                ]
            else:
                fitted = self.bias_fitter(current, target, group_weight, generator)
                biases = [fitted] if isinstance(fitted, nn.Module) else list(fitted)
            metric = FairnessMetric(self.manifold_, biases, float(self.alpha))
            self.metrics_.append(metric)
            current = self._step(metric, current, kernel)
        self.fit_vectors_ = current
        return self

    def _kernel(self, x0: torch.Tensor) -> torch.Tensor:
        """:math:`W(x_0)`, the locality kernel averaged over the centres, ``(n, 1)``."""
        return self.locality_.locality(x0).mean(-1, keepdim=True)

    def _step(self, metric: FairnessMetric, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        r"""One round: :math:`u = -\sum_m \lambda_m g_m`, :math:`(I + C G G^\top) \lambda = C b`,
        :math:`C = \mathrm{diag}(\alpha w_m(x_0))` (the minimiser of the module docstring's
        objective for M bias functions, by the push-through identity), clipped, then Exp."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            values, egrad = metric.bias_values_and_gradients(xg)  # (n, M), (n, M, d)
        values, egrad = values.detach(), egrad.detach()
        rgrad = self.manifold_.egrad2rgrad(x.unsqueeze(-2).expand_as(egrad), egrad)
        coeff = self.alpha * kernel  # (n, M)
        gram = rgrad @ rgrad.transpose(-1, -2)  # (n, M, M)
        eye = torch.eye(gram.shape[-1], dtype=x.dtype, device=x.device)
        lam = torch.linalg.solve(eye + coeff.unsqueeze(-1) * gram, (coeff * values).unsqueeze(-1))
        u = -(lam * rgrad).sum(-2)
        norm = u.norm(dim=-1, keepdim=True)
        u = u * torch.clamp(self.max_step / norm.clamp_min(torch.finfo(u.dtype).tiny), max=1.0)
        return self.locality_.geometry.expmap(x, u)

    # ------------------------------------------------------------------ transform
    def transform(self, X) -> np.ndarray:
        """Replay the fitted rounds on any rows (unseen ones included).

        Args:
            X: ``(..., d)`` unit rows (array or tensor, any device).

        Returns:
            The debiased rows ``(..., d)``, a NumPy array in the float dtype of ``X`` (``float64``
            for integer input; the rounds run in ``dtype`` or the precision chosen by :meth:`fit`).

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
        """
        check_is_fitted(self, "metrics_")
        x = self._as_points(X, "X", dtype=self.dtype_)
        if x.shape[-1] != self.dim_:
            raise ValueError(f"X must have d = {self.dim_} columns, got {x.shape[-1]}")
        if not self.metrics_:
            out = x.clone()
        else:
            flat = x.reshape(-1, self.dim_)
            chunks = []
            for start in range(0, flat.shape[0], self.batch_size):
                chunk = flat[start : start + self.batch_size]
                kernel = self._kernel(chunk)
                for metric in self.metrics_:
                    chunk = self._step(metric.to(chunk.device), chunk, kernel)
                chunks.append(chunk)
            out = torch.cat(chunks).reshape(x.shape) if chunks else x.clone()
        return out.cpu().numpy().astype(float_dtype_of(X), copy=False)

    def fit_transform(self, X, z) -> np.ndarray:
        """``fit(X, z).transform(X)``: the debiased fitting rows, a NumPy array (:meth:`transform`)."""
        return self.fit(X, z).transform(X)

    def displacement_bound(self, X) -> np.ndarray:
        r"""Upper bound on the geodesic displacement of each row (module docstring):
        :math:`\sum_r \min(s_{max}, B_r \sqrt{\alpha W(x)})`.

        Args:
            X: ``(..., d)`` unit rows.

        Returns:
            ``(...)`` NumPy array in the float dtype of ``X`` (as :meth:`transform`).
        """
        check_is_fitted(self, "metrics_")
        x = self._as_points(X, "X", dtype=self.dtype_)
        kernel = self._kernel(x.reshape(-1, self.dim_))
        total = torch.zeros_like(kernel[..., 0])
        if not all(hasattr(b, "sup_bound") for m in self.metrics_ for b in m.bias_losses):
            raise ValueError("displacement_bound needs bias functions with a sup_bound() method")
        for metric in self.metrics_:
            sup = torch.stack([b.sup_bound() for b in metric.bias_losses]).to(kernel)
            per_round = torch.sqrt(self.alpha * (kernel * sup.pow(2)).sum(-1))
            total = total + per_round.clamp(max=self.max_step)
        total = total.reshape(x.shape[:-1])
        return total.cpu().numpy().astype(float_dtype_of(X), copy=False)


class _Zero(nn.Module):
    """Placeholder bias loss: the locality metric uses only the kernel of its centres."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(-1) * 0
