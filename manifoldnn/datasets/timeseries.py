r"""Multichannel time series -> points of a Grassmann manifold (delay-embedded window subspaces).

A series of C channels and T frames, :math:`x_1, \dots, x_T \in \mathbb{R}^C`, becomes the dominant
``rank``-dimensional subspace of its delay-embedded, lifted frames

.. math::

    z_t = \begin{bmatrix} x_t \\ x_{t+1} \\ \vdots \\ x_{t+d} \\ 1 \end{bmatrix}
    \in \mathbb{R}^{C (d + 1) + 1}, \qquad t = 1, \dots, T - d,

the span of the top-``rank`` left singular vectors of :math:`Z = [z_1 \cdots z_{T-d}]` (a Hankel
subspace: Turaga, Veeraraghavan, Srivastava & Chellappa, *Statistical computations on Grassmann and
Stiefel manifolds for image and video-based recognition*, TPAMI 2011). The constant row makes the
subspace see the mean of the frames as well as their dynamics. One subspace per time window (a
fraction of the length) gives a multi-channel input for :class:`~manifoldnn.models.GrNet`.

* :func:`window_subspaces` -- the subspaces of a list of series of any lengths;
* :func:`augmented_window_subspaces` -- randomly perturbed copies of them for training (frame
  dropping, noise, window jitter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..linalg import eigh_top
from ..validation import (
    check_in_range,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_int,
)

__all__ = ["window_subspaces", "augmented_window_subspaces"]

Window = tuple[float, float]


def _check_windows(windows: Sequence[Window | str] | None) -> list[Window] | None:
    """``[(start, stop), ...]`` from pairs or ``"start:stop"`` strings, ``0 <= start < stop <= 1``."""
    if windows is None:
        return None
    if isinstance(windows, str) or len(windows) == 0:
        raise ValueError(f"windows must be a non-empty sequence of (start, stop), got {windows!r}")
    checked = []
    for window in windows:
        pair = window.split(":") if isinstance(window, str) else window
        if len(pair) != 2:
            raise ValueError(f"a window is (start, stop) or 'start:stop', got {window!r}")
        start = check_in_range(float(pair[0]), "window start", 0.0, 1.0, high_open=True)
        stop = check_in_range(float(pair[1]), "window stop", start, 1.0, low_open=True)
        checked.append((start, stop))
    return checked


def _as_series(
    series: Sequence[torch.Tensor], minimum: int, dtype: torch.dtype | None, device
) -> list[torch.Tensor]:
    """The series as floating (C, T) tensors on ``device``, one C, at least ``minimum`` frames."""
    if len(series) == 0:
        raise ValueError("series must hold at least one (C, T) series")
    tensors = []
    for index, x in enumerate(series):
        x = torch.as_tensor(x, device=device)
        target = dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype())
        x = x.to(target)
        if x.dim() != 2:
            raise ValueError(f"series[{index}] must be (C, T), got shape {tuple(x.shape)}")
        if tensors and x.shape[0] != tensors[0].shape[0]:
            raise ValueError(
                f"series[{index}] has {x.shape[0]} channels, series[0] {tensors[0].shape[0]}"
            )
        if x.shape[1] < minimum:
            raise ValueError(
                f"series[{index}] has {x.shape[1]} frames; delays + rank = {minimum} are needed"
            )
        tensors.append(x)
    return tensors


def _frames(length: int, start: float, stop: float, minimum: int) -> slice:
    """Frames ``floor(start T) .. ceil(stop T) - 1`` of T, widened (to the right, then to the left)
    to at least ``minimum`` frames."""
    first = math.floor(start * length)
    last = min(max(math.ceil(stop * length), first + minimum), length)
    return slice(max(0, min(first, last - minimum)), last)


def _subspaces(x: torch.Tensor, rank: int, delays: int, spans: list[Window]) -> torch.Tensor:
    """The (K, n, rank) bases of one (C, T) series, one per span."""
    grams = []
    for start, stop in spans:
        segment = x[:, _frames(x.shape[1], start, stop, delays + rank)]
        length = segment.shape[1] - delays
        shifted = [segment[:, shift : shift + length] for shift in range(delays + 1)]
        lifted = torch.cat(shifted + [segment.new_ones(1, length)])
        grams.append(lifted @ lifted.transpose(-1, -2))
    return eigh_top(torch.stack(grams), rank)[1]


def window_subspaces(
    series: Sequence[torch.Tensor],
    rank: int,
    *,
    delays: int = 0,
    windows: Sequence[Window | str] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Orthonormal bases of the dominant subspaces of delay-embedded time-series windows.

    For each series and each window, the top-``rank`` left singular vectors of the lifted frames
    :math:`z_t = [x_t; x_{t+1}; \dots; x_{t+d}; 1]` of the window (see the module docstring), i.e.
    a point of :math:`\mathrm{Gr}(C (d + 1) + 1, \mathrm{rank})`. A window ``(start, stop)`` holds
    frames :math:`\lfloor \mathrm{start}\, T \rfloor` to :math:`\lceil \mathrm{stop}\, T \rceil - 1`,
    widened to ``delays + rank`` frames when shorter. Each basis column is signed so that its
    entry of largest magnitude is positive (:func:`~manifoldnn.linalg.eigh_top`).

    Args:
        series: N series of shape ``(C, T_i)`` (tensors or array-likes; the lengths may differ,
            ``T_i >= delays + rank``).
        rank: p, the dimension of each subspace.
        delays: d, the number of delayed copies of the frames stacked under them.
            Default: ``0``.
        windows: K windows ``(start, stop)`` or ``"start:stop"``, fractions of the length with
            ``0 <= start < stop <= 1``; ``None``: the whole series, without a window axis.
            Default: ``None``.
        dtype: the dtype of the bases. Default: ``None`` (the series' floating dtype, else the
            default dtype).
        device: the device of the bases. Default: ``None`` (that of the series).

    Returns:
        The bases, orthonormal columns.

    Shape:
        ``windows=None``: ``(N, n, rank)``; K windows: ``(N, K, n, rank)``, with
        ``n = C (delays + 1) + 1``.

    Examples::

        >>> series = [torch.randn(12, 20, dtype=torch.float64), torch.randn(12, 9, dtype=torch.float64)]
        >>> window_subspaces(series, 2, delays=1).shape
        torch.Size([2, 25, 2])
        >>> window_subspaces(series, 2, delays=1, windows=["0:1", "0:0.5"]).shape
        torch.Size([2, 2, 25, 2])
    """
    rank = check_positive_int(rank, "rank")
    delays = check_nonnegative_int(delays, "delays")
    spans = _check_windows(windows)
    tensors = _as_series(series, delays + rank, dtype, device)
    bases = torch.stack([_subspaces(x, rank, delays, spans or [(0.0, 1.0)]) for x in tensors])
    return bases[:, 0] if spans is None else bases


def augmented_window_subspaces(
    series: Sequence[torch.Tensor],
    rank: int,
    copies: int,
    *,
    delays: int = 0,
    windows: Sequence[Window | str] | None = None,
    jitter: float = 0.05,
    drop: float = 0.1,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""``copies`` randomly perturbed versions of :func:`window_subspaces` (training augmentation).

    Each copy of each series independently

    * drops every frame with probability ``drop``, keeping at least ``delays + rank + 1`` frames
      (so that the delay embedding also sees small tempo changes);
    * adds Gaussian noise of standard deviation ``noise`` to every coordinate (meant for
      standardised series);
    * moves both ends of every window by a uniform offset in ``[-jitter, jitter]`` (fractions of the
      length; the ends clipped to ``[0, 1]``, the start to at most ``0.95``, a window never shorter
      than ``0.05``).

    With ``jitter = drop = noise = 0`` every copy equals :func:`window_subspaces`. The random
    numbers are drawn on the CPU from ``generator``, so a seed gives the same copies on every device.

    Args:
        series: N series of shape ``(C, T_i)`` (tensors or array-likes, ``T_i >= delays + rank``).
        rank: p, the dimension of each subspace.
        copies: the number of perturbed copies, at least 1.
        delays: d, the number of delayed copies of the frames. Default: ``0``.
        windows: K windows ``(start, stop)`` or ``"start:stop"``; ``None``: the whole series,
            without a window axis. Default: ``None``.
        jitter: the largest shift of a window end, a fraction of the length. Default: ``0.05``.
        drop: the probability of dropping a frame, in ``[0, 1)``. Default: ``0.1``.
        noise: the standard deviation of the added noise. Default: ``0.05``.
        generator: a CPU :class:`torch.Generator` for the random draws. Default: ``None`` (the
            global one).
        dtype: the dtype of the bases. Default: ``None`` (the series' floating dtype, else the
            default dtype).
        device: the device of the bases. Default: ``None`` (that of the series).

    Returns:
        The bases of the copies, orthonormal columns.

    Shape:
        ``windows=None``: ``(copies, N, n, rank)``; K windows: ``(copies, N, K, n, rank)``, with
        ``n = C (delays + 1) + 1``.

    Examples::

        >>> series = [torch.randn(12, 20, dtype=torch.float64) for _ in range(3)]
        >>> generator = torch.Generator().manual_seed(0)
        >>> augmented_window_subspaces(series, 2, 4, delays=1, generator=generator).shape
        torch.Size([4, 3, 25, 2])
    """
    rank = check_positive_int(rank, "rank")
    copies = check_positive_int(copies, "copies")
    delays = check_nonnegative_int(delays, "delays")
    jitter = check_nonnegative_float(jitter, "jitter")
    drop = check_in_range(drop, "drop", 0.0, 1.0, high_open=True)
    noise = check_nonnegative_float(noise, "noise")
    spans = _check_windows(windows)
    tensors = _as_series(series, delays + rank, dtype, device)
    minimum = delays + rank + 1
    views = []
    for _ in range(copies):
        bases = []
        for x in tensors:
            channels, length = x.shape
            keep = torch.rand(length, generator=generator, dtype=torch.float64) >= drop
            floor = min(minimum, length)
            if int(keep.sum()) < floor:
                keep[torch.randperm(length, generator=generator)[:floor]] = True
            kept = keep.nonzero().squeeze(1)
            shake = torch.randn(channels, len(kept), generator=generator, dtype=torch.float64)
            y = x[:, kept.to(x.device)] + noise * shake.to(x.device, x.dtype)
            moved = []
            for start, stop in spans or [(0.0, 1.0)]:
                offsets = torch.empty(2, dtype=torch.float64).uniform_(
                    -jitter, jitter, generator=generator
                )
                a, b = (min(max(end + float(offset), 0.0), 1.0)
                        for end, offset in zip((start, stop), offsets))  # fmt: skip
                a = min(a, 0.95)
                moved.append((a, max(b, a + 0.05)))
            bases.append(_subspaces(y, rank, delays, moved))
        views.append(torch.stack(bases))
    augmented = torch.stack(views)
    return augmented[:, :, 0] if spans is None else augmented
