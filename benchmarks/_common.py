"""The helpers shared by the benchmarks: ``best_time``, and ``write_json`` (the examples' one, from
``examples/_common.py``: ``path=None`` writes nothing, the folder is created, the payload needs a
``"results"`` dict).

Benchmarks run as ``python benchmarks/x.py`` (``sys.path[0]`` is ``benchmarks/``) and are imported
as ``benchmarks.x`` by the tests, so each imports this module with a fallback::

    try:
        from benchmarks._common import best_time, write_json
    except ModuleNotFoundError:  # run as a script: benchmarks/ is sys.path[0]
        from _common import best_time, write_json
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

# run as a script, only benchmarks/ is on sys.path; the repository root makes examples importable
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples._common import write_json  # noqa: E402

__all__ = ["best_time", "write_json"]


def best_time(function: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Best over ``repeats`` rounds of the mean wall time of ``inner`` calls, in seconds.

    One warm-up call comes first (allocations, lazy initialisation, caches). The minimum over rounds
    is the usual estimator of the cost free of interference from other processes (``timeit``'s
    documentation recommends it for the same reason).

    Args:
        function: called with no argument; its result is discarded.
        repeats: rounds, at least 1.
        inner: calls per round, at least 1. Default: 1.
    """
    if repeats < 1 or inner < 1:
        raise ValueError(f"best_time needs repeats >= 1 and inner >= 1, got {repeats}, {inner}")
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            function()
        best = min(best, (time.perf_counter() - start) / inner)
    return best
