"""Riemannian optimisers whose saved state resumes exactly.

geoopt's :class:`geoopt.optim.RiemannianAdam` keeps its step count ``state["step"]`` as a Python
``int`` while it trains, but inherits :meth:`torch.optim.Adam.__setstate__`, which turns every
integer step into a one-element ``float32`` tensor (``float64`` only when the default dtype is
``float64``). ``__setstate__`` runs on ``load_state_dict``, on ``copy.deepcopy`` and on unpickling,
so after a resume geoopt computes the bias corrections

.. math::

    1 - \\beta_1^{t}, \\qquad 1 - \\beta_2^{t}

as ``float32`` tensors instead of in Python's double precision. :math:`1 - \\beta_2^{t}` cancels
catastrophically for small :math:`t` (``float32(0.999)`` is off by :math:`1.3 \\cdot 10^{-8}`, a
relative error of about :math:`1.3 \\cdot 10^{-5}` in :math:`1 - \\beta_2^{t}`), so the resumed run
leaves the trajectory of the uninterrupted one, in ``float64`` parameters as in ``float32``.
:class:`RiemannianAdam` here restores the integer step after every ``__setstate__``, which makes a
resume bit-identical to never stopping.

:class:`geoopt.optim.RiemannianSGD` keeps its step count in the parameter groups, which
``load_state_dict`` restores untouched, and its momentum buffers are cast to the parameters' dtype:
it already resumes exactly and is re-exported unchanged, so that both optimisers can be imported
from here.

:class:`ProjectedAveragedModel` is :class:`torch.optim.swa_utils.AveragedModel` (stochastic weight
averaging) for modules with manifold parameters: the running mean is kept in the ambient space and
its projection onto each parameter's manifold is what the averaged module holds.

Examples::

    >>> import geoopt, torch
    >>> from manifoldnn.manifolds import Grassmann
    >>> from manifoldnn.optim import RiemannianAdam
    >>> manifold = Grassmann()
    >>> basis = geoopt.ManifoldParameter(manifold.random(10, 3), manifold=manifold)
    >>> optimizer = RiemannianAdam([basis], lr=1e-2)
    >>> (basis.sum() ** 2).backward()
    >>> optimizer.step()
    >>> restored = RiemannianAdam([basis], lr=1e-2)
    >>> restored.load_state_dict(optimizer.state_dict())
    >>> type(restored.state[basis]["step"])
    <class 'int'>
"""

from __future__ import annotations

from typing import Any

import geoopt
import torch
from torch.optim.swa_utils import AveragedModel

__all__ = ["RiemannianAdam", "RiemannianSGD", "ProjectedAveragedModel"]

# Already exact on resume (see the module docstring); re-exported unchanged.
RiemannianSGD = geoopt.optim.RiemannianSGD


def _integer_steps(optimizer: torch.optim.Optimizer) -> None:
    """Turn every per-parameter ``state["step"]`` that is a tensor back into a Python ``int``."""
    for state in optimizer.state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            # runs once per load, not per step: reading the value on the host is fine here
            state["step"] = round(step.item())


class RiemannianAdam(geoopt.optim.RiemannianAdam):
    r"""Riemannian Adam (geoopt's) whose state survives ``load_state_dict`` and ``deepcopy`` exactly.

    Identical to :class:`geoopt.optim.RiemannianAdam` (same constructor, same update, same
    ``state_dict`` format, so checkpoints move freely between the two classes) except that after
    ``load_state_dict``, ``copy.deepcopy`` or unpickling the step count is a Python ``int`` again, as
    it is during uninterrupted training. The update is Algorithm 1 of Bécigneul and Ganea, *Riemannian
    Adaptive Optimization Methods* (ICLR 2019), with the Adam bias corrections

    .. math::

        \hat m_t = \frac{m_t}{1 - \beta_1^{t}}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^{t}},

    which geoopt evaluates in ``float32`` once ``torch.optim.Adam.__setstate__`` has turned ``t``
    into a ``float32`` tensor; here they stay in double precision, so a resumed run is bit-identical
    to an uninterrupted one.

    Args:
        params: parameters or parameter groups to optimise; :class:`geoopt.ManifoldParameter` s
            follow their manifold, other tensors are Euclidean.
        lr: learning rate. Default: ``1e-3``.
        betas: coefficients of the running averages of the gradient and of its squared norm.
            Default: ``(0.9, 0.999)``.
        eps: term added to the denominator. Default: ``1e-8``.
        weight_decay: L2 penalty. Default: ``0``.
        amsgrad: use the AMSGrad maximum of the second moments. Default: ``False``.
        stabilize: project the parameters back onto their manifolds every ``stabilize`` steps
            (``None``: never). Default: ``None``.
        **kwargs: the other keyword arguments of :class:`torch.optim.Adam` (``foreach``,
            ``maximize``, ...).

    Examples::

        >>> import copy, geoopt
        >>> from manifoldnn.manifolds import Grassmann
        >>> manifold = Grassmann()
        >>> model = torch.nn.Module()
        >>> model.basis = geoopt.ManifoldParameter(manifold.random(10, 3), manifold=manifold)
        >>> optimizer = RiemannianAdam(model.parameters(), lr=1e-2)
        >>> checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        >>> model_copy, optimizer_copy = copy.deepcopy((model, optimizer))
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        stabilize: int | None = None,
        **kwargs: Any,
    ) -> None:
        # geoopt's constructor takes ``*args, **kwargs``: the signature is written out here so that
        # the documentation and the editor show the arguments
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            stabilize=stabilize, **kwargs,
        )  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        _integer_steps(self)


class ProjectedAveragedModel(AveragedModel):
    r"""Stochastic weight averaging that keeps every manifold parameter on its manifold.

    :class:`torch.optim.swa_utils.AveragedModel` (same constructor, ``update_parameters``,
    ``n_averaged`` and buffer handling) whose running mean of each
    :class:`geoopt.ManifoldParameter` is kept in the ambient space, and whose averaged module holds
    that mean projected onto the parameter's manifold (``manifold.projx``; on the Stiefel manifold
    the polar factor, the nearest matrix with orthonormal columns):

    .. math::

        \bar W = \pi_{\mathcal M}\Big(\frac{1}{E} \sum_{e=1}^{E} W_e\Big),

    over the E calls of :meth:`update_parameters` (with the default averaging function). Euclidean
    parameters are the plain running mean, as in ``AveragedModel``. The projection is applied to
    the mean of the iterates, not folded into the running mean, so the result does not depend on
    when it is read. Stochastic weight averaging: Izmailov et al., *Averaging weights leads to wider
    optima and better generalization*, UAI 2018.

    Args:
        model: the module whose parameters are averaged (deep-copied).
        device: where the averaged copy lives. Default: ``None`` (the model's device).
        avg_fn: the averaging function of ``AveragedModel``. Default: ``None`` (the running mean).
        multi_avg_fn: its in-place multi-tensor form. Default: ``None``.
        use_buffers: average the buffers too. Default: ``False`` (the buffers follow the model).

    Examples::

        >>> import geoopt
        >>> stiefel = geoopt.Stiefel()
        >>> model = torch.nn.Module()
        >>> model.weight = geoopt.ManifoldParameter(stiefel.random(10, 4), manifold=stiefel)
        >>> averaged = ProjectedAveragedModel(model)
        >>> optimizer = RiemannianAdam(model.parameters(), lr=1e-1)
        >>> for _ in range(3):
        ...     optimizer.zero_grad()
        ...     (model.weight**3).sum().backward()
        ...     optimizer.step()
        ...     averaged.update_parameters(model)
        >>> weight = averaged.module.weight
        >>> bool(torch.allclose(weight.T @ weight, torch.eye(4), atol=1e-5))
        True
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device | str | None = None,
        avg_fn=None,
        multi_avg_fn=None,
        use_buffers: bool = False,
    ) -> None:
        super().__init__(model, device, avg_fn, multi_avg_fn, use_buffers)
        self._on_manifold = [
            parameter
            for parameter in self.module.parameters()
            if isinstance(parameter, geoopt.ManifoldTensor)
        ]
        # the ambient running means, in the state dict and moved with the module
        for index, parameter in enumerate(self._on_manifold):
            self.register_buffer(f"ambient_mean_{index}", parameter.detach().clone())

    def _ambient_means(self) -> list[torch.Tensor]:
        return [getattr(self, f"ambient_mean_{i}") for i in range(len(self._on_manifold))]

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        """Fold ``model``'s parameters into the running mean and re-project the manifold ones."""
        means = self._ambient_means()
        for parameter, mean in zip(self._on_manifold, means):
            parameter.copy_(mean)
        super().update_parameters(model)
        for parameter, mean in zip(self._on_manifold, means):
            mean.copy_(parameter)
            parameter.copy_(parameter.manifold.projx(parameter))
