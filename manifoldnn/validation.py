"""Argument checks shared by the public constructors and functions (errors name the argument), and
the deprecation helpers for renamed names.

Every public constructor, function and estimator validates its arguments with these, once, at the
boundary; each raises ``ValueError`` (or ``TypeError`` for a wrong type) whose message starts with the
argument's name and quotes the value it got.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "Check",
    "optional",
    "int_at_least",
    "check_bool",
    "check_callable",
    "check_positive_int",
    "check_positive_ints",
    "check_nonnegative_int",
    "check_positive_float",
    "check_nonnegative_float",
    "check_in_range",
    "check_choice",
    "renamed_arguments",
    "renamed_attribute",
    "deprecated_alias",
    "warn_renamed",
]

F = TypeVar("F", bound=Callable[..., Any])

Check = Callable[[Any, str], Any]
"""A check ``(value, name) -> value`` that raises ``ValueError`` naming ``name``."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def optional(check: Check) -> Check:
    """``check`` that also lets ``None`` through."""

    @functools.wraps(check)
    def check_or_none(value: Any, name: str) -> Any:
        return None if value is None else check(value, name)

    return check_or_none


def int_at_least(low: int) -> Check:
    """A check that ``value`` is an int ``>= low`` (not a bool), e.g. ``n_clusters >= 2``."""
    return functools.partial(_check_int_at_least, low=low)


def _check_int_at_least(value: Any, name: str, low: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a ``bool`` (or NumPy bool); otherwise a ``ValueError`` naming ``name``."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_callable(value: Any, name: str) -> Any:
    """``value`` if it is callable; otherwise a ``ValueError`` naming ``name``."""
    if not callable(value):
        raise ValueError(f"{name} must be callable, got {value!r}")
    return value


def check_positive_int(value: object, name: str) -> int:
    """``value`` if it is an ``int >= 1`` (not a bool); otherwise a ``ValueError`` naming ``name``."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_ints(**values: object) -> None:
    """:func:`check_positive_int` on each keyword, named by it: ``check_positive_ints(rank=rank)``."""
    for name, value in values.items():
        check_positive_int(value, name)


def check_nonnegative_int(value: object, name: str) -> int:
    """``value`` if it is an ``int >= 0`` (not a bool); otherwise a ``ValueError`` naming ``name``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _as_finite_float(value: object, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_positive_float(value: object, name: str) -> float:
    """``float(value)`` if it is a finite real number ``> 0``; otherwise a ``ValueError``."""
    result = _as_finite_float(value, name, "a finite positive number")
    if result <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return result


def check_nonnegative_float(value: object, name: str) -> float:
    """``float(value)`` if it is a finite real number ``>= 0``; otherwise a ``ValueError``."""
    result = _as_finite_float(value, name, "a finite non-negative number")
    if result < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return result


def check_in_range(
    value: object,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``float(value)`` if it lies in the interval from ``low`` to ``high``.

    The ends are closed unless ``low_open`` / ``high_open``; otherwise a ``ValueError`` that names
    ``name`` and writes the interval, e.g. ``dropout must be in [0, 1), got 1.5``.
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    result = _as_finite_float(value, name, f"a number in {interval}")
    below = result <= low if low_open else result < low
    above = result >= high if high_open else result > high
    if below or above:
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return result


def check_choice(value: object, name: str, choices: Iterable[object]) -> Any:
    """``value`` if it is one of ``choices``; otherwise a ``ValueError`` listing them."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def renamed_arguments(*, since: str = "0.2.0", **renames: str) -> Callable[[F], F]:
    """Keep old keyword names working for one release: ``@renamed_arguments(in_dim="in_size")``.

    A call that passes an old name gets a ``FutureWarning`` naming the new one, and the value is
    passed on under the new name; passing both is a ``TypeError``. Record each rename in
    ``CHANGELOG.md``.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{function.__qualname__}() got both {old!r} (deprecated) and {new!r}"
                        )
                    warnings.warn(
                        f"{function.__qualname__}(): argument {old!r} is renamed {new!r} (since "
                        f"{since}); the old name will be removed in the next release",
                        FutureWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def deprecated_alias(module: str, old: str, new: object, *, since: str = "0.2.0") -> Callable:
    """A module ``__getattr__`` that serves ``old`` as ``new`` with a ``FutureWarning``.

    Use in the module that held the old name::

        __getattr__ = deprecated_alias(__name__, "OldName", NewName)

    Record each alias in ``CHANGELOG.md``. To serve several, chain them or write the mapping by
    hand with :func:`warn_renamed`.
    """

    def __getattr__(name: str) -> object:
        if name == old:
            warn_renamed(f"{module}.{old}", f"{getattr(new, '__qualname__', new)}", since)
            return new
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def warn_renamed(old: str, new: str, since: str = "0.2.0") -> None:
    """Emit the ``FutureWarning`` for a renamed public name ``old``, now ``new``."""
    warnings.warn(
        f"{old} is renamed {new} (since {since}); the old name will be removed in the next release",
        FutureWarning,
        stacklevel=3,
    )


def renamed_attribute(old: str, new: str, since: str = "0.2.0") -> property:
    """A read-only class property that serves the renamed attribute ``old`` as ``new``.

    Use in the class body (it works on ``nn.Module`` subclasses, whose properties live on the
    class)::

        in_dim = renamed_attribute("in_dim", "in_size")

    Reading ``obj.in_dim`` emits a ``FutureWarning`` and returns ``obj.in_size``. Record each
    alias in ``CHANGELOG.md``.
    """

    def getter(self: Any) -> Any:
        warn_renamed(f"{type(self).__name__}.{old}", f"{type(self).__name__}.{new}", since)
        return getattr(self, new)

    return property(getter, doc=f"Deprecated alias of ``{new}`` (renamed since {since}).")
