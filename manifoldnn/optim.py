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

__all__ = ["RiemannianAdam", "RiemannianSGD"]

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
