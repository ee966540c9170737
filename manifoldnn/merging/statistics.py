"""Data statistics that data-aware merges use: layer-input Gram matrices and diagonal Fisher."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

__all__ = ["input_grams", "diagonal_fisher"]


def _check_inputs(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError("inputs must be a tensor with at least one sample along dimension 0")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs has NaN or infinite entries")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


@torch.no_grad()
def input_grams(
    model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 512
) -> dict[str, torch.Tensor]:
    r"""Mean Gram matrix of the inputs of every ``nn.Linear`` and ``nn.Conv2d`` of ``model``.

    .. math::

        G_\ell = \frac{1}{R} \sum_{t=1}^{R} x_t x_t^\top

    over the R rows that reach layer :math:`\ell` (samples for Linear; samples times output
    positions of the unfolded patches for Conv2d, in the order of ``weight.reshape(out, -1)``),
    the statistic of RegMean (Jin et al., "Dataless knowledge fusion by merging weights of language
    models", ICLR 2023, Sec. 3.2). The mean rather than the sum gives each model the same weight
    whatever the size of its data.

    Args:
        model: the fine-tuned model; it runs in ``eval`` mode on ``inputs`` (its mode is restored).
        inputs: unlabelled inputs of this model's task, samples first.
        batch_size: samples per forward pass. Default: 512.

    Returns:
        ``{"<layer>.weight": G}`` with ``G`` of shape ``(in, in)`` (Linear) or
        ``(in * kh * kw, in * kh * kw)`` (Conv2d), in the dtype of the weight.
    """
    _check_inputs(model, inputs, batch_size)
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}
    handles = []

    def hook(name: str, module: nn.Module):
        def record(_module, args, _output):
            x = args[0]
            if isinstance(module, nn.Conv2d):
                patches = F.unfold(
                    x,
                    module.kernel_size,
                    dilation=module.dilation,
                    padding=module.padding,
                    stride=module.stride,
                )
                x = patches.transpose(1, 2)
            x = x.reshape(-1, x.shape[-1]).to(module.weight.dtype)
            gram = x.mT @ x
            sums[name] = sums[name] + gram if name in sums else gram
            rows[name] = rows.get(name, 0) + x.shape[0]

        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            prefix = f"{name}.weight" if name else "weight"
            handles.append(module.register_forward_hook(hook(prefix, module)))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, inputs.shape[0], batch_size):
            model(inputs[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: total / rows[name] for name, total in sums.items()}


def diagonal_fisher(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    samples: int = 1,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    r"""Diagonal Fisher information of a classifier's parameters, for Fisher merging.

    .. math::

        F_\theta = \frac{1}{T} \sum_{t=1}^{T} \mathbb{E}_{y \sim p_\theta(\cdot \mid x_t)}
        \big(\nabla_\theta \log p_\theta(y \mid x_t)\big)^{\odot 2}

    with per-sample gradients (``torch.func.vmap``), the estimator of Matena & Raffel, "Merging
    models with Fisher-weighted averaging", NeurIPS 2022, Eq. (5); ``labels`` given gives the
    empirical Fisher instead.

    Args:
        model: a classifier returning logits ``(T, classes)``; evaluated in ``eval`` mode.
        inputs: its unlabelled inputs, samples first.
        labels: optional ``(T,)`` class indices (empirical Fisher). Default: ``None`` (labels are
            sampled from the model).
        samples: labels drawn per input when ``labels`` is ``None``. Default: 1.
        batch_size: inputs per vectorised gradient call. Default: 256.
        generator: random generator for the sampled labels. Default: ``None``.

    Returns:
        ``{name: F}`` for every parameter that requires grad, each shaped like the parameter.
    """
    _check_inputs(model, inputs, batch_size)
    if labels is not None and (labels.dim() != 1 or labels.shape[0] != inputs.shape[0]):
        raise ValueError(f"labels must have shape ({inputs.shape[0]},), got {tuple(labels.shape)}")
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def log_likelihood(theta, x, y):
        logits = functional_call(model, (theta, buffers), (x.unsqueeze(0),))
        return torch.log_softmax(logits, dim=-1)[0].gather(0, y.unsqueeze(0)).squeeze(0)

    per_sample = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    totals = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start : start + batch_size]
            if labels is not None:
                draws = [labels[start : start + batch_size]]
            else:
                with torch.no_grad():
                    probs = torch.softmax(model(x), dim=-1)
                draws = [
                    torch.multinomial(probs, 1, generator=generator).squeeze(1)
                    for _ in range(samples)
                ]
            for y in draws:
                grads = per_sample(params, x, y)
                for name, g in grads.items():
                    totals[name] += g.square().sum(0) / len(draws)
    finally:
        model.train(was_training)
    return {name: total / inputs.shape[0] for name, total in totals.items()}


def grams_for(
    models: Sequence[nn.Module | Mapping[str, torch.Tensor]],
    data: Sequence[torch.Tensor | Mapping[str, torch.Tensor]],
) -> list[dict[str, torch.Tensor]]:
    """Per-model Gram dicts from ``data``: input tensors (then the model must be a module) or dicts."""
    if not isinstance(data, Sequence) or len(data) != len(models):
        raise ValueError(f"data must hold one entry per model ({len(models)}), got {len(data)}")
    grams = []
    for index, (model, entry) in enumerate(zip(models, data)):
        if isinstance(entry, Mapping):
            grams.append({name: g.detach() for name, g in entry.items()})
        elif isinstance(entry, torch.Tensor):
            if not isinstance(model, nn.Module):
                raise ValueError(
                    f"data[{index}] is an input tensor, so models[{index}] must be an nn.Module "
                    "(pass Gram matrices from input_grams with state dicts)"
                )
            grams.append(input_grams(model, entry))
        else:
            raise ValueError(f"data[{index}] must be a tensor of inputs or a dict of Gram matrices")
    return grams
