"""manifoldnn.datasets.timeseries: delay-embedded window subspaces of time series and their
augmentation, against a float64 NumPy oracle (the SVD of the lifted frames)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifoldnn.datasets import augmented_window_subspaces, window_subspaces

WINDOWS = [(0.0, 1.0), (0.0, 0.3), (0.2, 0.5), (0.6, 0.9)]


def toy_series(count: int = 6, channels: int = 4, seed: int = 0) -> list[np.ndarray]:
    """(channels, T) series of 7 to 20 frames."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((channels, int(rng.integers(7, 21)))) for _ in range(count)]


def oracle(x: np.ndarray, rank: int, delays: int, start: float, stop: float):
    """The projector onto the top-``rank`` left singular subspace of the lifted frames of a window
    (float64 NumPy), and the Davis-Kahan factor ``s_1^2 / (s_p^2 - s_{p+1}^2)`` of its Gram matrix."""
    length = x.shape[1]
    first = math.floor(start * length)
    last = min(max(math.ceil(stop * length), first + delays + rank), length)
    first = max(0, min(first, last - delays - rank))
    segment = x[:, first:last]
    width = segment.shape[1] - delays
    lifted = np.vstack([segment[:, s : s + width] for s in range(delays + 1)] + [np.ones(width)])
    u, s, _ = np.linalg.svd(lifted)
    values = np.concatenate([s**2, np.zeros(len(u) - len(s))])
    basis = u[:, :rank]
    return basis @ basis.T, values[0] / (values[rank - 1] - values[rank])


def projectors(bases: torch.Tensor) -> torch.Tensor:
    return bases @ bases.transpose(-1, -2)


def test_window_subspaces_match_the_svd_of_the_lifted_frames(device, dtype):
    series = toy_series()
    rank, delays = 2, 1
    tensors = [torch.from_numpy(x).to(device, dtype) for x in series]
    bases = window_subspaces(tensors, rank, delays=delays, windows=WINDOWS)
    n = 4 * (delays + 1) + 1
    assert bases.shape == (len(series), len(WINDOWS), n, rank)
    assert bases.dtype == dtype and bases.device.type == device.type
    eps = torch.finfo(dtype).eps
    eye = torch.eye(rank, dtype=dtype, device=device)
    assert (bases.transpose(-1, -2) @ bases - eye).abs().max() <= 8 * n * eps
    got = projectors(bases).double().cpu().numpy()
    for i, x in enumerate(series):
        for k, (start, stop) in enumerate(WINDOWS):
            expected, condition = oracle(x, rank, delays, start, stop)
            # Davis-Kahan: a Gram matrix accurate to n eps |G| moves the projector by that / gap
            assert np.abs(got[i, k] - expected).max() <= 8 * n * eps * condition


def test_window_axis_strings_defaults_and_widening(device):
    series = [torch.from_numpy(x).to(device) for x in toy_series()]
    whole = window_subspaces(series, 3, delays=2)
    assert whole.shape == (6, 4 * 3 + 1, 3) and whole.dtype == torch.float64
    # windows as "start:stop" strings equal the pairs; one window keeps its window axis
    assert torch.equal(window_subspaces(series, 3, delays=2, windows=["0:1"])[:, 0], whole)
    assert torch.equal(
        window_subspaces(series, 2, windows=["0:0.3", "0.2:0.5"]),
        window_subspaces(series, 2, windows=[(0.0, 0.3), (0.2, 0.5)]),
    )
    # a window shorter than delays + rank frames is widened to that many (here the first 4 frames)
    short = window_subspaces(series, 2, delays=2, windows=[(0.0, 0.01)])[:, 0]
    first = [x[:, :4] for x in series]
    assert torch.allclose(
        projectors(short), projectors(window_subspaces(first, 2, delays=2)), atol=1e-12
    )
    # dtype and device arguments; integer series become the default dtype
    cast = window_subspaces(toy_series(), 2, dtype=torch.float32, device=device)
    assert cast.dtype == torch.float32 and cast.device.type == device.type
    counts = [torch.arange(40, device=device).reshape(4, 10) % 7]
    assert window_subspaces(counts, 2).dtype == torch.get_default_dtype()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rank": 0},
        {"delays": -1},
        {"windows": [(0.5, 0.2)]},
        {"windows": [(0.0, 1.5)]},
        {"windows": ["0.1"]},
        {"windows": []},
        {"windows": "0:1"},
    ],
)
def test_window_subspaces_bad_arguments_raise(kwargs):
    arguments = {"rank": 2} | kwargs
    with pytest.raises(ValueError):
        window_subspaces(toy_series(), **arguments)


def test_bad_series_raise(device):
    with pytest.raises(ValueError, match="frames"):
        window_subspaces([torch.randn(4, 3, device=device)], 2, delays=2)
    with pytest.raises(ValueError, match="channels"):
        window_subspaces([torch.randn(4, 9, device=device), torch.randn(5, 9, device=device)], 2)
    with pytest.raises(ValueError, match=r"\(C, T\)"):
        window_subspaces([torch.randn(9, device=device)], 2)
    with pytest.raises(ValueError, match="at least one"):
        window_subspaces([], 2)


def test_unperturbed_copies_equal_the_plain_subspaces(device):
    series = [torch.from_numpy(x).to(device) for x in toy_series()]
    plain = window_subspaces(series, 2, delays=1, windows=WINDOWS)
    same = augmented_window_subspaces(
        series, 2, 3, delays=1, windows=WINDOWS, jitter=0.0, drop=0.0, noise=0.0
    )
    assert same.shape == (3,) + tuple(plain.shape)
    assert torch.equal(same, plain.expand_as(same))
    # without windows: no window axis
    assert augmented_window_subspaces(series, 2, 2, delays=1).shape == (2, 6, 9, 2)


def test_perturbed_copies_are_seeded_small_and_on_the_manifold(device):
    series = [torch.from_numpy(x).to(device) for x in toy_series()]
    plain = window_subspaces(series, 2, delays=1, windows=WINDOWS)

    def copies(seed, on=device):
        generator = torch.Generator().manual_seed(seed)
        inputs = [x.to(on) for x in series]
        return augmented_window_subspaces(
            inputs, 2, 2, delays=1, windows=WINDOWS, generator=generator
        )

    views = copies(1)
    assert torch.equal(views, copies(1))  # reproducible from the generator's seed
    # the draws are made on the CPU: every device gets the same copies (to float64 rounding)
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(
        projectors(views).cpu(), projectors(copies(1, "cpu")), atol=1e6 * eps, rtol=0
    )
    eye = torch.eye(2, dtype=views.dtype, device=device)
    assert (views.transpose(-1, -2) @ views - eye).abs().max() <= 8 * 9 * eps
    gap = (projectors(views) - projectors(plain)).flatten(3).norm(dim=-1)  # (copies, N, K)
    assert (gap > 1e-3).all()
    assert ((projectors(views[0]) - projectors(views[1])).flatten(2).norm(dim=-1) > 1e-3).all()
    # the subspaces depend continuously on the noise: noise of 1e-9 alone moves them by far less
    # than a unit (Davis-Kahan: by about 1e-9 |Z| / gap)
    tiny = augmented_window_subspaces(
        series, 2, 2, delays=1, windows=WINDOWS, jitter=0.0, drop=0.0, noise=1e-9
    )
    assert (projectors(tiny) - projectors(plain)).abs().max() < 1e-4


def test_frame_dropping_keeps_enough_frames(device):
    short = [torch.randn(4, 5, dtype=torch.float64, device=device)]  # the minimum is 2 + 2 + 1 = 5
    generator = torch.Generator().manual_seed(3)
    dropped = augmented_window_subspaces(
        short, 2, 8, delays=2, windows=WINDOWS, drop=0.9, generator=generator
    )
    assert torch.isfinite(dropped).all()


@pytest.mark.parametrize(
    "kwargs", [{"copies": 0}, {"drop": 1.0}, {"drop": -0.1}, {"noise": -1.0}, {"jitter": -0.1}]
)
def test_augmentation_bad_arguments_raise(kwargs):
    arguments = {"copies": 2} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        augmented_window_subspaces(toy_series(), 2, **arguments)
