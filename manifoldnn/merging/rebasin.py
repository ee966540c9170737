"""Permutation (re-basin) alignment of the hidden units of an MLP by weight matching."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment

from ._state import ModelLike, prepare, state_of

__all__ = ["permutation_align"]


def permutation_align(
    reference: ModelLike,
    other: ModelLike,
    layers: Sequence[str],
    *,
    max_iter: int = 100,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    r"""Permute the hidden units of ``other`` to match ``reference`` (weight matching, Ainsworth,
    Hayase & Srinivasa, "Git re-basin", ICLR 2023, Algorithm 1).

    For a chain of Linear layers :math:`W^1, \dots, W^L` (hidden unit i of layer l feeds column i
    of layer l + 1), coordinate descent on the permutations :math:`P_l` of the L - 1 hidden layers
    maximises :math:`\sum_l \langle W_A^l, P_l W_B^l P_{l-1}^\top\rangle + \langle b_A^l, P_l b_B^l
    \rangle`; each step is a linear assignment problem (SciPy's ``linear_sum_assignment``). The
    function of the network is unchanged by the permutation.

    Args:
        reference: model A (module or state dict).
        other: model B, same architecture.
        layers: the prefixes of the chain's Linear layers in order (``"0"`` for ``"0.weight"`` and
            ``"0.bias"``); the last one's outputs are not permuted (include a head here so that it
            follows its trunk; a head with other outputs than ``reference``'s, e.g. another
            task's, follows without entering the matching).
        max_iter: sweeps over the layers. Default: 100.

    Returns:
        ``other``'s state dict with its hidden units permuted, and the L - 1 permutations (index
        tensors, ``aligned[i] = original[perm[i]]``).
    """
    if len(layers) < 2:
        raise ValueError(f"layers must name at least two Linear layers, got {list(layers)}")
    inner = [f"{p}.{kind}" for p in layers[:-1] for kind in ("weight", "bias")]
    states = [state_of(reference, "reference"), state_of(other, "other")]
    inner = [name for name in inner if name in states[0]]
    _, (state_a, state_b), _ = prepare(states, include=inner)
    for prefix in layers:
        for state, which in ((state_a, "reference"), (state_b, "other")):
            weight = state.get(f"{prefix}.weight")
            if weight is None or weight.dim() != 2:
                raise ValueError(f"layers: {prefix!r} is not a Linear layer of {which}")
    last = f"{layers[-1]}.weight"
    if state_a[last].shape[1] != state_b[last].shape[1]:
        raise ValueError(f"parameter {last!r} takes different input sizes in the two models")
    # a last layer with different outputs (task heads) follows the permutation without voting
    head_votes = state_a[last].shape == state_b[last].shape
    weights_a = [state_a[f"{p}.weight"].double() for p in layers]
    weights_b = [state_b[f"{p}.weight"].double() for p in layers]
    biases_a = [state_a.get(f"{p}.bias") for p in layers]
    biases_b = [state_b.get(f"{p}.bias") for p in layers]
    perms = [torch.arange(w.shape[0]) for w in weights_a[:-1]]

    def permuted_b(index: int) -> torch.Tensor:
        w = weights_b[index]
        if index > 0:
            w = w[:, perms[index - 1]]
        return w

    for _ in range(max_iter):
        changed = False
        for index in range(len(perms)):
            cost = weights_a[index] @ permuted_b(index).mT
            if biases_a[index] is not None:
                cost = cost + torch.outer(biases_a[index].double(), biases_b[index].double())
            if index + 1 < len(perms) or head_votes:
                following = weights_b[index + 1]
                if index + 1 < len(perms):
                    following = following[perms[index + 1]]
                cost = cost + weights_a[index + 1].mT @ following
            _, columns = linear_sum_assignment(cost.cpu().numpy(), maximize=True)
            new = torch.as_tensor(columns, dtype=torch.long)
            if not torch.equal(new, perms[index]):
                perms[index], changed = new, True
        if not changed:
            break
    aligned = dict(state_b)
    for index, prefix in enumerate(layers):
        w = state_b[f"{prefix}.weight"]
        if index < len(perms):
            w = w[perms[index]]
            if biases_b[index] is not None:
                aligned[f"{prefix}.bias"] = biases_b[index][perms[index]]
        if index > 0:
            w = w[:, perms[index - 1]]
        aligned[f"{prefix}.weight"] = w
    return aligned, perms
