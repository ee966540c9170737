"""Validation of the models to merge: state dicts, parameter selection, matrix views of weights."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]
ModelLike = nn.Module | StateDict
Include = Callable[[str], bool] | Iterable[str] | None


def state_of(model: ModelLike, argument: str = "models") -> dict[str, torch.Tensor]:
    """Detached tensors of a module's ``state_dict()`` or of a mapping of tensors."""
    if isinstance(model, nn.Module):
        return {name: value.detach() for name, value in model.state_dict().items()}
    if isinstance(model, Mapping):
        for name, value in model.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(
                    f"{argument}: entry {name!r} is {type(value).__name__}, not a tensor"
                )
        return {name: value.detach() for name, value in model.items()}
    raise ValueError(
        f"{argument} must hold nn.Modules or state dicts (name -> tensor), got {type(model).__name__}"
    )


def _selected(names: list[str], include: Include) -> list[str]:
    if include is None:
        return names
    if callable(include):
        return [name for name in names if include(name)]
    wanted = list(include)
    missing = [name for name in wanted if name not in names]
    if missing:
        raise ValueError(f"include names parameters that the models do not have: {missing}")
    return [name for name in names if name in set(wanted)]


def _check_finite(name: str, value: torch.Tensor, argument: str) -> None:
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{argument}: parameter {name!r} has NaN or infinite entries")


def prepare(
    models: Sequence[ModelLike],
    include: Include = None,
    base: ModelLike | None = None,
    *,
    min_models: int = 1,
) -> tuple[list[str], list[dict[str, torch.Tensor]], dict[str, torch.Tensor] | None]:
    """Validate ``models`` (and ``base``) once and return the names to merge and the state dicts.

    The floating tensors named by ``include`` (default: every floating tensor) are merged; they
    must exist in every model with one shape and be finite. Without ``include`` the models must
    have the same parameter names and shapes throughout.
    """
    if isinstance(models, nn.Module | Mapping) or not isinstance(models, Sequence):
        raise ValueError("models must be a sequence (list or tuple) of nn.Modules or state dicts")
    if len(models) < min_models:
        raise ValueError(f"models must hold at least {min_models} model(s), got {len(models)}")
    states = [state_of(model) for model in models]
    reference = states[0]
    floating = [name for name, value in reference.items() if value.is_floating_point()]
    names = _selected(floating, include)
    if not names:
        raise ValueError("include selects no floating-point parameter to merge")
    # without a selection the whole architectures must agree; with one, the selected parameters
    checked = list(reference) if include is None else names
    for index, state in enumerate(states[1:], start=1):
        if include is None and state.keys() != reference.keys():
            extra = sorted(set(state) ^ set(reference))
            raise ValueError(
                f"models[{index}] and models[0] have different architectures: parameters {extra} "
                "are in one and not the other"
            )
        for name in checked:
            if name not in state:
                raise ValueError(
                    f"models[{index}] and models[0] have different architectures: models[{index}] "
                    f"has no parameter {name!r}"
                )
            if state[name].shape != reference[name].shape:
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(state[name].shape)} in models[{index}] "
                    f"and {tuple(reference[name].shape)} in models[0]"
                )
    base_state = None
    if base is not None:
        base_state = state_of(base, "base")
        for name in names:
            if name not in base_state:
                raise ValueError(f"base has no parameter {name!r}")
            if base_state[name].shape != reference[name].shape:
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(base_state[name].shape)} in base and "
                    f"{tuple(reference[name].shape)} in the models"
                )
            _check_finite(name, base_state[name], "base")
    for index, state in enumerate(states):
        for name in names:
            _check_finite(name, state[name], f"models[{index}]")
    return names, states, base_state


def as_matrix(value: torch.Tensor) -> torch.Tensor:
    """``(out, in, *kernel) -> (out, in * prod(kernel))``: a Linear or Conv weight as a matrix."""
    return value.reshape(value.shape[0], -1)


def is_matrix(value: torch.Tensor) -> bool:
    """Weights of Linear (2-D) and Conv (3-D to 5-D) layers; biases and norms are not matrices."""
    return value.dim() >= 2


def check_rank(rank: int, names: list[str], reference: dict[str, torch.Tensor]) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    for name in names:
        value = reference[name]
        if is_matrix(value):
            rows, cols = as_matrix(value).shape
            if rank > min(rows, cols):
                raise ValueError(
                    f"rank={rank} is larger than parameter {name!r} allows: its matrix view is "
                    f"{rows} x {cols}, so rank <= {min(rows, cols)}"
                )


def load_merged(model: nn.Module, merged: StateDict) -> nn.Module:
    """Copy ``merged`` into ``model`` in place (the other parameters, e.g. task heads, stay)."""
    missing = [name for name in merged if name not in model.state_dict()]
    if missing:
        raise ValueError(f"merged has parameters that model does not have: {missing}")
    model.load_state_dict(dict(merged), strict=False)
    return model
