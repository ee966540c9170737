"""The helpers shared by the benchmarks: ``best_time`` and the JSON file.

Benchmarks run as ``python benchmarks/x.py`` (``sys.path[0]`` is ``benchmarks/``) and are imported
as ``benchmarks.x`` by the tests, so each imports this module with a fallback::

    try:
        from benchmarks._common import best_time, write_json
    except ModuleNotFoundError:  # run as a script: benchmarks/ is sys.path[0]
        from _common import best_time, write_json
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


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


def write_json(path: str | Path | None, payload: dict) -> None:
    """Write ``payload`` (which must have a ``"results"`` mapping) as indented JSON to ``path``,
    creating its folder; ``path=None`` writes nothing. Values JSON cannot hold (paths) are written
    with ``str``. The same contract as ``examples._common.write_json``."""
    if path is None:
        return
    if not isinstance(payload.get("results"), dict):
        raise ValueError('write_json needs a payload with a "results" dict')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
