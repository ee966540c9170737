"""The helpers shared by the benchmarks: ``add_benchmark_arguments`` (``--seed``, ``--repeats``,
``--device``, ``--json``), ``best_time`` (synchronised on CUDA), ``synchronize``, and from
``examples/example_common.py`` ``add_options`` (options from a table of defaults) and ``write_json``
(``path=None`` writes nothing, the folder is created, the payload needs a ``"results"`` dict).

Benchmarks run as ``python benchmarks/x.py`` (``sys.path[0]`` is ``benchmarks/``); the tests put
``benchmarks/`` and ``examples/`` on ``sys.path`` too (``tests/conftest.py``), so every benchmark
imports this module as ``from benchmark_common import best_time, write_json``. ``write_report``
writes the usual report (results, options, seconds taken).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

# run as a script, only benchmarks/ is on sys.path; examples/ holds the helpers shared with the
# examples (and the repository root makes the examples importable as ``examples.x``)
ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "examples"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from example_common import add_options, write_json, write_report  # noqa: E402

__all__ = [
    "add_benchmark_arguments",
    "add_options",
    "best_time",
    "synchronize",
    "write_json",
    "write_report",
]


def add_benchmark_arguments(
    parser: argparse.ArgumentParser,
    *,
    repeats: int | None = 5,
    device: bool = False,
    json: bool = True,
) -> argparse.ArgumentParser:
    """Add ``--seed`` (default 0), ``--repeats`` (default ``repeats``; left out when ``None``),
    ``--device`` (default ``cpu``; only when ``device`` is true) and ``--json`` (default: none;
    only when ``json`` is true)."""
    parser.add_argument("--seed", type=int, default=0)
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds")
    if device:
        parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    if json:
        parser.add_argument(
            "--json", type=Path, default=None, help='write {"results": {...}} and the settings here'
        )
    return parser


def synchronize() -> None:
    """Wait for the queued CUDA work, where CUDA is in use (a no-op otherwise), so that a wall
    clock read after it includes that work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def best_time(function: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Best over ``repeats`` rounds of the mean wall time of ``inner`` calls, in seconds.

    One warm-up call comes first (allocations, lazy initialisation, caches). The minimum over rounds
    is the usual estimator of the cost free of interference from other processes (``timeit``'s
    documentation recommends it for the same reason). Where CUDA is in use, each round ends with
    :func:`synchronize`, so that it times the kernels and not only their launch.

    Args:
        function: called with no argument; its result is discarded.
        repeats: rounds, at least 1.
        inner: calls per round, at least 1. Default: 1.
    """
    if repeats < 1 or inner < 1:
        raise ValueError(f"best_time needs repeats >= 1 and inner >= 1, got {repeats}, {inner}")
    function()
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            function()
        synchronize()
        best = min(best, (time.perf_counter() - start) / inner)
    return best
