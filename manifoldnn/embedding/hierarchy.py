r"""Embeddings of hierarchies in hyperbolic space (Nickel & Kiela 2017, 2018), scikit-learn style.

Every node ``u`` gets a point :math:`\theta_u` of the Poincaré ball, the hyperboloid or (for
comparison) Euclidean space, trained so that a node is closer to its ancestors than to the nodes
it is not related to. For the ``(child, ancestor)`` pairs :math:`\mathcal D` of a hierarchy's
transitive closure, the loss of Nickel & Kiela (2017, "Poincaré embeddings for learning
hierarchical representations", eq. 6) is

.. math::

    \mathcal L(\Theta) = \sum_{(u, v) \in \mathcal D}
        -\log \frac{e^{-d(u, v)}}{\sum_{v' \in \mathcal N(u) \cup \{v\}} e^{-d(u, v')}},

with :math:`\mathcal N(u)` a sample of ``negatives`` nodes ``v'`` such that
:math:`(u, v') \notin \mathcal D` and ``v' != u``. Training is Riemannian SGD (ibid., eq. 5;
geoopt's ``RiemannianSGD``: the Euclidean gradient rescaled by the inverse metric, then the
retraction) or Riemannian Adam (Bécigneul & Ganea 2019) on a ``geoopt.ManifoldParameter``, on
shuffled batches of pairs (with SGD on a hierarchy much larger than a batch, each step updates
only the rows the batch touches: the dense step without momentum leaves the others in place).
The first ``burn_in`` epochs use a tenth of the learning rate and draw negatives in proportion to
the nodes' degree to the power 0.75 (ibid., Sec. 3, "Training details"); later ones draw them
uniformly. On the hyperboloid the points are kept within the
distance of the origin that geoopt's clamped ball boundary allows (about 6.2 in float32, 12.2
in float64), so that both models have the same room and float32 Minkowski products stay
resolved.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Hashable, Iterable, Sequence

import geoopt
import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..datasets.hierarchy import check_hierarchy
from ..manifolds import Lorentz
from ..utils.estimators import store_parameters, torch_seed, validate_parameters
from ..validation import (
    check_bool,
    check_choice,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
)
from .evaluation import MANIFOLDS, hierarchy_distance, reconstruction_scores

__all__ = ["HierarchyEmbedding", "hierarchy_loss"]

#: the degree exponent of the burn-in's negative sampling (Nickel & Kiela 2017, Sec. 3)
DAMPENING = 0.75
#: the burn-in's fraction of the learning rate (ibid.)
BURN_IN_LR_FACTOR = 0.1
#: resampling rounds for negatives that hit a related node (the rest are masked out)
RESAMPLING_ROUNDS = 10
#: geoopt's margin to the Poincaré ball's boundary (``stereographic.math.project``); the
#: hyperboloid's points are kept within the same distance of the origin, where float32 still
#: resolves the Minkowski products (``x_0^2 eps`` small against distances of order 1)
_BALL_MARGIN = {torch.float32: 4e-3, torch.float64: 1e-5}


def hierarchy_loss(
    manifold: str,
    points: torch.Tensor,
    pairs: torch.Tensor,
    negatives: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Nickel & Kiela's loss (2017, eq. 6) of a batch of pairs, summed over the batch.

    .. math::

        \ell(u, v) = d(u, v) + \log\Big(e^{-d(u, v)} + \sum_{v' \in \mathcal N(u)}
        e^{-d(u, v')}\Big)

    Args:
        manifold: ``"poincare"``, ``"lorentz"`` or ``"euclidean"``
            (:func:`~manifoldnn.embedding.hierarchy_distance`).
        points: the embedding ``(N, D)``.
        pairs: ``(B, 2)`` row indices ``(u, v)`` of positive pairs.
        negatives: ``(B, K)`` row indices of negatives of each ``u``.
        valid: ``(B, K)`` bool, the negatives to use (``False``: left out). Default: ``None``
            (all).

    Returns:
        The summed loss, a scalar.

    Shape:
        ``points (N, D)``, ``pairs (B, 2)``, ``negatives (B, K)`` -> ``()``.
    """
    u = points[pairs[:, 0]].unsqueeze(1)
    others = points[torch.cat([pairs[:, 1:], negatives], 1)]
    logits = -hierarchy_distance(manifold, u, others)
    if valid is not None:
        keep = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)
        logits = logits.masked_fill(~keep, -torch.inf)
    return (torch.logsumexp(logits, 1) - logits[:, 0]).sum()


class HierarchyEmbedding(BaseEstimator):
    r"""Embed a hierarchy's ``(child, ancestor)`` pairs in hyperbolic (or Euclidean) space.

    The loss and training of Nickel & Kiela (2017, "Poincaré embeddings for learning hierarchical
    representations") in the Poincaré ball or, for the Lorentz model, Nickel & Kiela (2018,
    "Learning continuous hierarchies in the Lorentz model of hyperbolic geometry"); see the module
    docstring. Curvature -1 in both hyperbolic models.

    Args:
        dim: dimension of the embedding (the hyperboloid's points have ``dim + 1`` coordinates).
            Default: ``10``.
        manifold: ``"poincare"`` (``geoopt.PoincareBall``), ``"lorentz"``
            (:class:`manifoldnn.manifolds.Lorentz`) or ``"euclidean"``. Default: ``"poincare"``.
        negatives: negatives sampled per pair. Default: ``10``.
        epochs: passes over the pairs, burn-in included. Default: ``200``.
        burn_in: burn-in epochs (a tenth of ``lr``, degree-weighted negatives). Default: ``10``.
        lr: learning rate. Default: ``0.3``.
        batch_size: pairs per step; the loss is summed over the batch. Default: ``64``.
        optimizer: ``"sgd"`` (geoopt's ``RiemannianSGD``) or ``"adam"`` (``RiemannianAdam``).
            Default: ``"sgd"``.
        init_range: the points start uniform in ``[-init_range, init_range]^dim`` (on the
            hyperboloid: lifted from there). Default: ``1e-3``.
        device: device of the embedding. Default: ``None`` (CPU).
        dtype: floating dtype of the embedding. Default: ``None`` (``torch.get_default_dtype()``).
        random_state: seed of the initialisation, the shuffling and the negatives: ``None``, an
            int or a ``numpy.random.RandomState``. Default: ``None``.
        verbose: show a tqdm progress bar over the epochs. Default: ``False``.

    Attributes:
        embedding_: ``geoopt.ManifoldParameter`` ``(N, dim)`` (``(N, dim + 1)`` on the hyperboloid).
        nodes_: the node names, row ``i`` of ``embedding_`` being ``nodes_[i]`` (order of first
            appearance in the pairs).
        manifold_: the geoopt manifold of ``embedding_``.
        loss_: mean loss per pair of the last epoch.
        loss_curve_: mean loss per pair of every epoch.
        n_iter_: epochs run.
        fit_time_: seconds spent in the training loop.

    Shape:
        ``fit(pairs)``: ``P`` pairs of ``N`` distinct nodes -> ``embedding_ (N, dim)``.

    Examples::

        >>> from manifoldnn.datasets import balanced_tree, transitive_closure
        >>> pairs = transitive_closure(balanced_tree(2, 2))
        >>> model = HierarchyEmbedding(2, epochs=20, random_state=0).fit(pairs)
        >>> tuple(model.embedding_.shape), len(model.nodes_)
        ((7, 2), 7)
    """

    _parameter_checks = {
        "dim": check_positive_int,
        "manifold": functools.partial(check_choice, choices=MANIFOLDS),
        "negatives": check_positive_int,
        "epochs": check_positive_int,
        "burn_in": check_nonnegative_int,
        "lr": check_positive_float,
        "batch_size": check_positive_int,
        "optimizer": functools.partial(check_choice, choices=("sgd", "adam")),
        "init_range": check_positive_float,
        "verbose": check_bool,
    }

    def __init__(
        self,
        dim: int = 10,
        manifold: str = "poincare",
        *,
        negatives: int = 10,
        epochs: int = 200,
        burn_in: int = 10,
        lr: float = 0.3,
        batch_size: int = 64,
        optimizer: str = "sgd",
        init_range: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
    ) -> None:
        store_parameters(self, locals())

    # ------------------------------------------------------------------ helpers
    def _manifold(self) -> geoopt.Manifold:
        if self.manifold == "poincare":
            return geoopt.PoincareBall()
        if self.manifold == "lorentz":
            return Lorentz()
        return geoopt.Euclidean(ndim=1)

    def _initial_points(self, n_nodes: int, generator: torch.Generator, dtype, device):
        low = torch.rand(n_nodes, self.dim, generator=generator, dtype=torch.float64)
        points = ((2 * low - 1) * self.init_range).to(dtype)
        if self.manifold == "lorentz":
            time_part = (1 + points.pow(2).sum(-1, keepdim=True)).sqrt()
            points = torch.cat([time_part, points], -1)
        return points.to(device)

    @staticmethod
    def _keep_within_radius(points: torch.Tensor) -> None:
        """Pull hyperboloid points back to the distance ``R = 2 artanh(1 - margin)`` of the
        origin (``|x_{1:}| <= sinh R``), the distance of the ball's clamped boundary."""
        margin = _BALL_MARGIN.get(points.dtype, _BALL_MARGIN[torch.float32])
        largest = math.sinh(2 * math.atanh(1 - margin))
        space = points[:, 1:]
        norm = space.norm(dim=-1, keepdim=True)
        space = space * (largest / norm.clamp_min(largest))
        points.copy_(torch.cat([(1 + space.pow(2).sum(-1, keepdim=True)).sqrt(), space], -1))

    def _sparse_step(self, embedding, pairs, negatives, valid, optimizer) -> torch.Tensor:
        """One Riemannian SGD step on the rows the batch touches, through geoopt's
        ``RiemannianSGD`` on a parameter of those rows: without momentum a row with a zero
        gradient is left where it is, so this is the dense step at ``O(batch)`` cost."""
        touched = torch.cat([pairs.flatten(), negatives.flatten()])
        rows, inverse = torch.unique(touched, return_inverse=True)
        local_pairs = inverse[: pairs.numel()].view_as(pairs)
        local_negatives = inverse[pairs.numel() :].view_as(negatives)
        part = geoopt.ManifoldParameter(embedding.data[rows], manifold=embedding.manifold)
        step = geoopt.optim.RiemannianSGD([part], lr=optimizer.param_groups[0]["lr"])
        loss = hierarchy_loss(self.manifold, part, local_pairs, local_negatives, valid)
        loss.backward()
        step.step()
        with torch.no_grad():
            if self.manifold == "lorentz":
                self._keep_within_radius(part)
            embedding.data[rows] = part.data
        return loss

    @staticmethod
    def _related(keys: torch.Tensor, n_nodes: int, u: torch.Tensor, v: torch.Tensor):
        """Whether ``(u, v)`` is a training pair or ``u == v`` (``keys`` sorted ``u N + v``)."""
        query = u * n_nodes + v
        found = torch.searchsorted(keys, query).clamp_max(keys.numel() - 1)
        return (keys[found] == query) | (u == v)

    def _sample_negatives(self, u, keys, n_nodes, weights, generator):
        shape = (u.shape[0], self.negatives)

        def draw(count):
            if weights is None:
                return torch.randint(n_nodes, (count,), generator=generator)
            return torch.multinomial(weights, count, replacement=True, generator=generator)

        candidates = draw(u.shape[0] * self.negatives).reshape(shape).to(u.device)
        rows = u.unsqueeze(1).expand(shape)
        invalid = self._related(keys, n_nodes, rows, candidates)
        for _ in range(RESAMPLING_ROUNDS):
            count = int(invalid.sum())
            if count == 0:
                break
            candidates[invalid] = draw(count).to(u.device)
            invalid = self._related(keys, n_nodes, rows, candidates)
        return candidates, ~invalid

    def _index(self, pairs) -> tuple[list[Hashable], torch.Tensor]:
        _, pairs = check_hierarchy(pairs)
        nodes = list(dict.fromkeys(node for pair in pairs for node in pair))
        index = {node: i for i, node in enumerate(nodes)}
        indices = torch.as_tensor([(index[u], index[v]) for u, v in pairs], dtype=torch.long)
        return nodes, indices

    # -------------------------------------------------------------- public API
    def fit(self, pairs: Iterable[Sequence[Hashable]], y=None) -> HierarchyEmbedding:
        """Train the embedding on ``(child, ancestor)`` pairs.

        Args:
            pairs: the pairs (a hierarchy's transitive closure, or its edges), node names any
                hashable values.
            y: ignored (scikit-learn's convention).

        Returns:
            ``self``.

        Raises:
            ValueError: on bad parameters (the message names the parameter), an empty hierarchy,
                self-loops or cycles, or fewer than ``negatives + 2`` nodes.
        """
        validate_parameters(self, self._parameter_checks)
        nodes, indices = self._index(pairs)
        n_nodes = len(nodes)
        if n_nodes < self.negatives + 2:
            raise ValueError(
                f"negatives={self.negatives} needs at least negatives + 2 = {self.negatives + 2} "
                f"nodes, the hierarchy has {n_nodes}"
            )
        device = torch.device("cpu") if self.device is None else torch.device(self.device)
        dtype = torch.get_default_dtype() if self.dtype is None else self.dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
        generator = torch.Generator().manual_seed(torch_seed(self.random_state))
        manifold = self._manifold()
        points = self._initial_points(n_nodes, generator, dtype, device)
        embedding = geoopt.ManifoldParameter(points, manifold=manifold)
        make = (
            geoopt.optim.RiemannianSGD if self.optimizer == "sgd" else geoopt.optim.RiemannianAdam
        )
        optimizer = make([embedding], lr=self.lr)

        indices = indices.to(device)
        keys = (indices[:, 0] * n_nodes + indices[:, 1]).unique()  # sorted
        degree = torch.bincount(indices.flatten().cpu(), minlength=n_nodes).double()
        burn_in_weights = degree.pow(DAMPENING)

        # SGD on the touched rows only where a batch touches few of them (a static choice)
        sparse = self.optimizer == "sgd" and n_nodes > 4 * self.batch_size * (self.negatives + 2)
        epochs = range(self.epochs)
        if self.verbose:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc=f"HierarchyEmbedding({self.manifold}, dim={self.dim})")
        curve = []
        start = time.perf_counter()
        for epoch in epochs:
            burning = epoch < self.burn_in
            for group in optimizer.param_groups:
                group["lr"] = self.lr * (BURN_IN_LR_FACTOR if burning else 1.0)
            weights = burn_in_weights if burning else None
            order = torch.randperm(len(indices), generator=generator).to(device)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for batch in order.split(self.batch_size):
                pairs_batch = indices[batch]
                negatives, valid = self._sample_negatives(
                    pairs_batch[:, 0], keys, n_nodes, weights, generator
                )
                if sparse:
                    loss = self._sparse_step(embedding, pairs_batch, negatives, valid, optimizer)
                else:
                    optimizer.zero_grad()
                    loss = hierarchy_loss(self.manifold, embedding, pairs_batch, negatives, valid)
                    loss.backward()
                    optimizer.step()
                    if self.manifold == "lorentz":
                        with torch.no_grad():
                            self._keep_within_radius(embedding)
                total += loss.detach()
            curve.append(float(total) / len(indices))
            if self.verbose:
                epochs.set_postfix(loss=f"{curve[-1]:.4f}")
        self.fit_time_ = time.perf_counter() - start
        self.embedding_ = embedding
        self.nodes_ = nodes
        self.manifold_ = manifold
        self.loss_curve_ = curve
        self.loss_ = curve[-1]
        self.n_iter_ = self.epochs
        return self

    def distances(self, u: Sequence[Hashable], v: Sequence[Hashable]) -> np.ndarray:
        """Distances between the embedded nodes ``u[i]`` and ``v[i]``.

        Args:
            u: node names.
            v: node names, as many as ``u``.

        Returns:
            ``(len(u),)`` float array.

        Raises:
            ValueError: for nodes that are not embedded.
        """
        check_is_fitted(self, "embedding_")
        index = {node: i for i, node in enumerate(self.nodes_)}
        unknown = [node for node in (*u, *v) if node not in index]
        if unknown:
            raise ValueError(f"nodes that are not embedded: {list(dict.fromkeys(unknown))[:5]!r}")
        points = self.embedding_.detach()
        rows = torch.as_tensor([index[n] for n in u], device=points.device, dtype=torch.long)
        cols = torch.as_tensor([index[n] for n in v], device=points.device, dtype=torch.long)
        return hierarchy_distance(self.manifold, points[rows], points[cols]).cpu().numpy()

    def score(self, pairs: Iterable[Sequence[Hashable]], y=None) -> float:
        """Reconstruction MAP of ``pairs`` (:func:`~manifoldnn.embedding.reconstruction_scores`).

        Args:
            pairs: ``(child, ancestor)`` pairs of embedded nodes.
            y: ignored.

        Returns:
            The mean average precision, in ``(0, 1]`` (higher is better).
        """
        check_is_fitted(self, "embedding_")
        scores = reconstruction_scores(
            self.embedding_.detach(), pairs, manifold=self.manifold, nodes=self.nodes_
        )
        return scores["map"]
