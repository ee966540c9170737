r"""SPD matrix network (SPDNet, Huang & Van Gool, AAAI 2017, "A Riemannian network for SPD matrix
learning", Fig. 1), with optional Riemannian batch normalisation (SPDNetBN, Brooks et al.,
NeurIPS 2019, "Riemannian batch normalization for SPD neural networks", Sec. 4).

Architecture::

    X (B, n_0, n_0) SPD
      --BiMap(n_0, n_1)--> [SPDBatchNorm(n_1)] --> ReEig(eps) --> (B, n_1, n_1)   # a block a size
      ...
      --BiMap(n_{L-1}, n_L)--> [SPDBatchNorm(n_L)] --> ReEig(eps) --> (B, n_L, n_L)
      --LogEig--> symmetric (B, n_L, n_L) --vectorise--> (B, n_L (n_L + 1) / 2) --Linear--> logits

The last ReEig and the LogEig run as one layer, ``LogEig(eps)`` (one eigendecomposition).

Every BiMap weight is a :class:`geoopt.ManifoldParameter` (and so is an affine-invariant batch
norm's bias); train with :class:`geoopt.optim.RiemannianAdam` or ``RiemannianSGD``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers.spd import BiMap, LogEig, ReEig, SPDBatchNorm
from ..linalg import symmetric_vectorize
from ..validation import check_bool, check_positive_float, check_positive_int

__all__ = ["SPDNet"]


class SPDNet(nn.Module):
    r"""SPDNet classifier of SPD matrices (Huang & Van Gool 2017), optionally with Riemannian
    batch normalisation after each BiMap (Brooks et al. 2019).

    Each consecutive pair of ``layer_sizes`` is a block BiMap -> [SPDBatchNorm] -> ReEig; LogEig
    then maps to symmetric matrices (the last ReEig and LogEig fused as ``LogEig(eps)``, the
    same function from one eigendecomposition), whose isometric upper-triangle vectorisation
    (:func:`manifoldnn.linalg.symmetric_vectorize`) feeds a linear layer.

    .. math::

        \text{logits} = A\, \mathrm{vec}\big(\log f^{(L)} \circ \dots \circ f^{(1)}(X)\big) + b,
        \qquad f^{(l)}(X) = \max\big(\epsilon I, W_l^\top X W_l\big)

    Args:
        layer_sizes: matrix sizes ``(n_0, n_1, ..., n_L)``, non-increasing, ``L >= 1``; ``n_0`` is
            the input size.
        num_classes: number of classes.
        batch_norm: insert :class:`~manifoldnn.layers.SPDBatchNorm` after every BiMap.
            Default: ``False``.
        batch_norm_metric: the batch norm's metric, ``"affine_invariant"`` or ``"log_euclidean"``.
            Default: ``"affine_invariant"``.
        batch_norm_variance: the batch norm also normalises the batch's Fréchet variance to a
            learned dispersion (``SPDBatchNorm(variance=True)``, Kobler et al. 2022).
            Default: ``False``.
        eps: ReEig's eigenvalue floor. Default: ``1e-4``.
        validate: check the input's values (finite, symmetric, positive definite) in eager
            forwards, once, at the first BiMap; the layers after it check shapes only.
            Default: ``True``.
        device: device of the parameters. Default: ``None``.
        dtype: dtype of the parameters. Default: ``None``.

    Shape:
        - Input: ``(B, n_0, n_0)`` SPD, or one matrix ``(n_0, n_0)`` (without batch norm in
          training mode, which needs a batch).
        - Output: ``(B, num_classes)``, or ``(num_classes,)``.

    Examples::

        >>> import torch
        >>> from manifoldnn.models import SPDNet
        >>> signals = torch.randn(8, 10, 50)
        >>> x = signals @ signals.mT / 50
        >>> SPDNet([10, 6, 4], num_classes=3, batch_norm=True)(x).shape
        torch.Size([8, 3])
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        num_classes: int,
        *,
        batch_norm: bool = False,
        batch_norm_metric: str = "affine_invariant",
        batch_norm_variance: bool = False,
        eps: float = 1e-4,
        validate: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sizes = [check_positive_int(size, "layer_sizes") for size in layer_sizes]
        if len(sizes) < 2:
            raise ValueError(
                f"layer_sizes needs at least an input and one output size, got {list(layer_sizes)}"
            )
        if any(b > a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"layer_sizes must be non-increasing (BiMap reduces), got {sizes}")
        self.layer_sizes = tuple(sizes)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.batch_norm = check_bool(batch_norm, "batch_norm")
        batch_norm_variance = check_bool(batch_norm_variance, "batch_norm_variance")
        eps = check_positive_float(eps, "eps")
        validate = check_bool(validate, "validate")
        factory = {"device": device, "dtype": dtype}
        blocks: list[nn.Module] = []
        for index, (in_size, out_size) in enumerate(zip(sizes, sizes[1:])):
            # validate once, at the boundary: every later input is a layer's SPD output
            blocks.append(BiMap(in_size, out_size, validate=validate and index == 0, **factory))
            if batch_norm:
                blocks.append(
                    SPDBatchNorm(
                        out_size,
                        metric=batch_norm_metric,
                        variance=batch_norm_variance,
                        validate=False,
                        **factory,
                    )
                )
            if index < len(sizes) - 2:
                blocks.append(ReEig(eps, validate=False))
        # the last ReEig and LogEig from one eigendecomposition: the same function
        blocks.append(LogEig(eps, validate=False))
        self.features = nn.Sequential(*blocks)
        last = sizes[-1]
        self.classifier = nn.Linear(last * (last + 1) // 2, num_classes, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = isinstance(x, torch.Tensor) and x.dim() == 2
        if single:
            x = x.unsqueeze(0)
        logits = self.classifier(symmetric_vectorize(self.features(x)))
        return logits.squeeze(0) if single else logits

    def extra_repr(self) -> str:
        return f"layer_sizes={self.layer_sizes}, num_classes={self.num_classes}"
