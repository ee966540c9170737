"""The scikit-learn contract shared by the library's estimators and transformers.

The estimators (:mod:`manifoldnn.clustering`, :mod:`manifoldnn.fairness`) subclass
``sklearn.base.BaseEstimator``: the constructor stores its arguments unchanged
(:func:`store_parameters`), ``fit`` validates them once, by a table of checks such as
those of :mod:`manifoldnn.validation` (:func:`validate_parameters`, the counterpart of
scikit-learn's ``_parameter_constraints``; ``functools.partial(check_in_range, low=0, high=1)``
for a check with options), and every message names the parameter. ``random_state`` follows
scikit-learn (``None``, an int or a ``numpy.random.RandomState``) and becomes one int seed for torch
generators (:func:`torch_seed`); transformers return NumPy arrays in the input's float dtype
(:func:`float_dtype_of`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..validation import Check

__all__ = [
    "store_parameters",
    "validate_parameters",
    "torch_seed",
    "float_dtype_of",
]


def store_parameters(estimator: object, arguments: Mapping[str, Any]) -> None:
    """Store a constructor's arguments unchanged as attributes of the same names.

    Call it as ``store_parameters(self, locals())`` first thing in ``__init__``: scikit-learn's
    ``get_params`` reads the attributes named by the constructor's signature, and ``clone``
    requires each to be the very object passed.
    """
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def validate_parameters(estimator: object, checks: Mapping[str, Check]) -> None:
    """Run ``checks[name](estimator.name, name)`` for every entry; the first failure raises.

    Args:
        estimator: the estimator whose parameters (attributes) are checked.
        checks: parameter name -> check, e.g. ``{"n_clusters": check_positive_int}``.
    """
    for name, check in checks.items():
        check(getattr(estimator, name), name)


def torch_seed(random_state: Any, name: str = "random_state") -> int:
    """One int seed for torch generators from a scikit-learn ``random_state``.

    An int is the seed itself (``0 <= seed < 2**63``); ``None`` draws one from NumPy's global
    generator and a ``numpy.random.RandomState`` draws one from itself, as
    ``sklearn.utils.check_random_state`` does.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= int(random_state) < 2**63:
            raise ValueError(f"{name} must be in [0, 2**63), got {random_state!r}")
        return int(random_state)
    from sklearn.utils import check_random_state

    try:
        generator = check_random_state(random_state)
    except ValueError as error:
        raise ValueError(
            f"{name} must be None, an int or a numpy.random.RandomState, got {random_state!r}"
        ) from error
    return int(generator.randint(2**31 - 1))


def float_dtype_of(X: Any) -> np.dtype:
    """The NumPy float dtype a transformer returns for input ``X``: its own float dtype (a torch
    ``bfloat16`` becomes ``float32``), ``float64`` for integer or non-array input."""
    if isinstance(X, torch.Tensor):
        if not X.is_floating_point():
            return np.dtype(np.float64)
        dtype = torch.float32 if X.dtype == torch.bfloat16 else X.dtype
        return torch.empty((), dtype=dtype).numpy().dtype
    dtype = getattr(X, "dtype", None)
    if dtype is not None and np.issubdtype(dtype, np.floating):
        return np.dtype(dtype)
    return np.dtype(np.float64)
