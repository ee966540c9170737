"""OpenMP wait policy: keep idle worker threads from spinning on a shared machine.

PyTorch's CPU kernels (and scikit-learn's) run on an OpenMP runtime, GNU libgomp in the Linux
wheels. When a parallel region ends, libgomp's worker threads do not sleep at once: unless told
otherwise they busy-wait for ``GOMP_SPINCOUNT`` = 300,000 spins first (libgomp manual,
"GOMP_SPINCOUNT"). On idle cores that saves a wake-up; beside another busy process on as many cores
as threads, the spinning threads take the cores that the working thread, the other process and
the threads late to a barrier need, and every short parallel region costs a scheduler time slice.
``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at once (spin count 0) and leaves the
number of threads, hence the results' rounding, unchanged.

The runtime reads the variable once, when it is loaded (for PyTorch: at ``import torch``), so it
must be in the environment before that: ``scripts/run.sh`` exports it, and a script run directly can
call :func:`prefer_passive_openmp_wait` before its first ``import torch``. Fewer threads than
cores helps more when another process holds some of them: :func:`free_cores` gives the count
``scripts/run.sh`` uses for ``OMP_NUM_THREADS``, for ``torch.set_num_threads`` (which, unlike the
wait policy, works at any time). When each helps: "Threads on a shared machine" in
``docs/getting-started.md``.

Examples::

    from manifoldnn.utils.threads import free_cores, prefer_passive_openmp_wait

    prefer_passive_openmp_wait()  # before torch is imported
    import torch  # noqa: E402

    torch.set_num_threads(free_cores())
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["free_cores", "openmp_runtime_loaded", "prefer_passive_openmp_wait"]

# Variables with which the user has already chosen how OpenMP threads wait; any of them is respected.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Shared-library names of the OpenMP runtimes: GNU, Intel, LLVM.
_RUNTIMES = ("libgomp", "libiomp", "libomp")


def openmp_runtime_loaded() -> bool:
    """Whether an OpenMP runtime is already loaded in this process (so reads no more variables).

    On Linux the process's memory map is read; elsewhere an imported ``torch`` or ``sklearn`` is
    taken as the sign, since both load their runtime on import.
    """
    maps = Path("/proc/self/maps")
    if maps.exists():
        text = maps.read_text(errors="replace")
        return any(name in text for name in _RUNTIMES)
    return "torch" in sys.modules or "sklearn" in sys.modules


def prefer_passive_openmp_wait(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user already chose how OpenMP threads wait.

    Args:
        environ: the environment to edit. Default: ``None`` (``os.environ``, which the OpenMP
            runtime loaded by the next ``import torch`` reads).

    Returns:
        ``True`` if this call set the variable, ``False`` if one of ``OMP_WAIT_POLICY``,
        ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` was already set (then nothing changes).

    Warns:
        RuntimeWarning: when editing ``os.environ`` after an OpenMP runtime was loaded in this
            process: that runtime keeps its policy, only runtimes loaded later (and child
            processes) see the new one.
    """
    target = os.environ if environ is None else environ
    if any(name in target for name in WAIT_VARIABLES):
        return False
    target["OMP_WAIT_POLICY"] = "PASSIVE"
    if environ is None and openmp_runtime_loaded():
        warnings.warn(
            "prefer_passive_openmp_wait() was called after an OpenMP runtime was loaded (torch "
            "was imported): the running runtime keeps its wait policy. Call it before the first "
            "`import torch`, or export OMP_WAIT_POLICY=PASSIVE before starting Python.",
            RuntimeWarning,
            stacklevel=2,
        )
    return True


def free_cores(load: float | None = None, cores: int | None = None) -> int:
    """Cores not already taken by other processes: ``cores - round(load)``, at least 1.

    The rule of ``scripts/run.sh``. A snapshot: the 1-minute load average lags a job that has just
    started or stopped, and it counts the whole machine (in a container it may include processes
    on cores the container cannot use, which only makes the answer smaller).

    Args:
        load: the load average. Default: ``None`` (``os.getloadavg()[0]``, 0 where unavailable).
        cores: the usable cores. Default: ``None`` (the CPUs this process may run on).

    Returns:
        The number of threads to give an OpenMP runtime, between 1 and ``cores``.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    if cores is None or cores < 1:
        raise ValueError(f"free_cores: cores must be a positive integer, got {cores!r}")
    if not load >= 0:
        raise ValueError(f"free_cores: load must be a non-negative number, got {load!r}")
    # half up, as run.sh's awk int(l + 0.5)
    return max(1, min(cores, cores - int(load + 0.5)))
