r"""Evaluation metrics of paired representations: cross-modal retrieval, read-back, token recovery.

* :func:`recall_at_k`, :func:`cross_modal_recall`: retrieval of the paired item by cosine
  similarity, recall@k (Manning, Raghavan, Schütze 2008, sec. 8.3), ties counted against the query;
* :func:`relative_error`: :math:`\|X - \hat X\|_F^2 / \|X - \bar X\|_F^2`, the share of the
  variance that a reconstruction misses;
* :func:`token_recovery_rate`: share of token ids recovered exactly;
* :func:`linear_probe_accuracy`: accuracy of a ridge least-squares read-out of token ids from
  features (a linear probe, Alain, Bengio 2016), fitted on one set, scored on another.

Everything takes torch tensors with the samples on the first dimension (``N``) and features last.
"""

from __future__ import annotations

import torch

__all__ = [
    "cross_modal_recall",
    "linear_probe_accuracy",
    "recall_at_k",
    "relative_error",
    "token_recovery_rate",
]


def _check_pair(query: torch.Tensor, key: torch.Tensor, names: tuple[str, str]) -> None:
    for value, name in zip((query, key), names):
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[0] < 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a non-empty (N, d) tensor, got {shape}")
    if query.shape[0] != key.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must pair the same N rows, got {query.shape[0]} and "
            f"{key.shape[0]}"
        )


def recall_at_k(
    query: torch.Tensor, key: torch.Tensor, ks: tuple[int, ...] = (1, 10)
) -> dict[int, float]:
    r"""Recall@k of retrieving key row i for query row i among all N keys by cosine similarity.

    .. math::

        \mathrm{R@}k = \frac1N \sum_i \big[\,|\{j : s_{ij} \ge s_{ii},\ j \ne i\}| < k\,\big],
        \qquad s_{ij} = \cos(q_i, k_j),

    so a key tied with the true one counts as ranked above it (no credit for ties; a constant
    embedding scores 0 at k < N). Chance level is ``k / N``.

    Args:
        query: ``(N, d_q)``.
        key: ``(N, d_k)`` with ``d_k == d_q``.
        ks: the cut-offs (each >= 1). Default: ``(1, 10)``.

    Returns:
        ``{k: recall}``.
    """
    _check_pair(query, key, ("query", "key"))
    if query.shape[1] != key.shape[1]:
        raise ValueError(f"query and key widths differ: {query.shape[1]} and {key.shape[1]}")
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    q = torch.nn.functional.normalize(query, dim=-1)
    k_ = torch.nn.functional.normalize(key, dim=-1)
    sim = q @ k_.transpose(0, 1)
    true = sim.diagonal().unsqueeze(1)
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    rank = ((sim >= true) & ~eye).sum(1)
    return {k: float((rank < k).to(torch.float64).mean()) for k in ks}


def cross_modal_recall(
    z_a: torch.Tensor, z_b: torch.Tensor, ks: tuple[int, ...] = (1, 10), names=("a", "b")
) -> dict[str, float]:
    """Recall@k both ways: ``{"a2b_R@k": ..., "b2a_R@k": ...}`` (``names`` replace a and b).

    Args:
        z_a: ``(N, d)`` embeddings of modality a.
        z_b: ``(N, d)`` embeddings of modality b, paired with ``z_a`` row by row.
        ks: cut-offs. Default: ``(1, 10)``.
        names: the two modalities' short names. Default: ``("a", "b")``.
    """
    forward, backward = recall_at_k(z_a, z_b, ks), recall_at_k(z_b, z_a, ks)
    a, b = names
    result = {f"{a}2{b}_R@{k}": forward[k] for k in ks}
    return result | {f"{b}2{a}_R@{k}": backward[k] for k in ks}


def relative_error(target: torch.Tensor, estimate: torch.Tensor) -> float:
    r"""``||X - X_hat||_F^2 / ||X - mean(X)||_F^2`` over samples ``(N, ...)`` (0 = exact).

    Args:
        target: X ``(N, ...)`` with N >= 2 and not constant over the samples.
        estimate: X_hat, same shape.
    """
    if not isinstance(target, torch.Tensor) or not isinstance(estimate, torch.Tensor):
        raise ValueError("target and estimate must be tensors")
    if target.shape != estimate.shape or target.dim() < 1 or target.shape[0] < 2:
        raise ValueError(
            f"target and estimate must have the same shape (N >= 2, ...), got "
            f"{tuple(target.shape)} and {tuple(estimate.shape)}"
        )
    spread = (target - target.mean(0)).pow(2).sum()
    if float(spread) == 0.0:
        raise ValueError("target is constant over the samples: relative error is undefined")
    return float((target - estimate).pow(2).sum() / spread)


def token_recovery_rate(tokens: torch.Tensor, recovered: torch.Tensor) -> float:
    """Share of entries of the integer ``tokens`` that ``recovered`` (same shape) equals."""
    if not isinstance(tokens, torch.Tensor) or not isinstance(recovered, torch.Tensor):
        raise ValueError("tokens and recovered must be tensors")
    if tokens.shape != recovered.shape or tokens.numel() == 0:
        raise ValueError(
            f"tokens and recovered must have the same non-empty shape, got {tuple(tokens.shape)}"
            f" and {tuple(recovered.shape)}"
        )
    if tokens.is_floating_point() or recovered.is_floating_point():
        raise ValueError("tokens and recovered must be integer token ids")
    return float((tokens == recovered).to(torch.float64).mean())


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    ridge: float = 1e-3,
) -> float:
    r"""Held-out accuracy of an affine ridge least-squares read-out of labels from features.

    .. math::

        W = \arg\min_W \|[X\ 1] W - Y\|_F^2 + \lambda \bar\sigma^2 N \|W\|_F^2,\qquad
        \hat y = \arg\max_j ([x\ 1] W)_j,

    with Y the one-hot labels and :math:`\bar\sigma^2` the mean feature variance (the ridge is
    relative), solved in float64.

    Args:
        train_features: ``(N, d)`` training features.
        test_features: ``(M, d)`` test features.
        train_labels: integer ``(N,)`` in ``[0, num_classes)``.
        test_labels: integer ``(M,)`` in ``[0, num_classes)``.
        num_classes: number of classes.
        ridge: relative ridge :math:`\lambda`. Default: 1e-3.
    """
    _check_pair(train_features, train_labels.unsqueeze(1), ("train_features", "train_labels"))
    _check_pair(test_features, test_labels.unsqueeze(1), ("test_features", "test_labels"))
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError("train_features and test_features must have the same width")
    if ridge < 0:
        raise ValueError(f"ridge must be non-negative, got {ridge}")
    x = train_features.detach().to(torch.float64)
    mean = x.mean(0)
    x = torch.cat([x - mean, torch.ones_like(x[:, :1])], dim=1)
    y = torch.nn.functional.one_hot(train_labels.long(), num_classes).to(torch.float64)
    scale = max(float(x[:, :-1].pow(2).mean()), torch.finfo(torch.float64).tiny) * x.shape[0]
    penalty = torch.eye(x.shape[1], dtype=torch.float64, device=x.device) * ridge * scale
    penalty[-1, -1] = 0.0  # no ridge on the intercept
    weights = torch.linalg.solve(x.T @ x + penalty, x.T @ y)
    t = test_features.detach().to(torch.float64)
    t = torch.cat([t - mean, torch.ones_like(t[:, :1])], dim=1)
    predicted = (t @ weights).argmax(1)
    return token_recovery_rate(test_labels.long(), predicted)
