"""The OpenMP wait-policy helper: what libgomp actually reads, checked with OMP_DISPLAY_ENV."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manifoldnn.utils.threads import (
    WAIT_VARIABLES,
    free_cores,
    openmp_runtime_loaded,
    prefer_passive_openmp_wait,
)

ROOT = Path(__file__).resolve().parent.parent
GNU_OPENMP = sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info()


def _spin_count(code: str, **extra: str) -> str:
    """Run ``code`` in a fresh interpreter; return the GOMP_SPINCOUNT libgomp reports at load."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    env.update(PYTHONPATH=str(ROOT), OMP_DISPLAY_ENV="VERBOSE", **extra)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # libgomp prints its settings once per runtime loaded; torch's is the first
    match = re.search(r"GOMP_SPINCOUNT = '(\w+)'", result.stderr)
    assert match, result.stderr
    return match.group(1)


CALL_THEN_IMPORT = (
    "from manifoldnn.utils.threads import prefer_passive_openmp_wait as p\n"
    "assert p()\n"
    "import torch\n"
    "torch.ones(1)\n"
)


@pytest.mark.skipif(not GNU_OPENMP, reason="OMP_DISPLAY_ENV output is GNU libgomp's (Linux)")
def test_policy_reaches_torchs_openmp_runtime():
    assert _spin_count("import torch") == "300000"  # libgomp's default: spin before sleeping
    assert _spin_count(CALL_THEN_IMPORT) == "0"


@pytest.mark.skipif(not GNU_OPENMP, reason="OMP_DISPLAY_ENV output is GNU libgomp's (Linux)")
def test_user_choice_is_respected():
    code = CALL_THEN_IMPORT.replace("assert p()", "assert not p()")
    assert _spin_count(code, OMP_WAIT_POLICY="ACTIVE") != "0"
    assert _spin_count(code, GOMP_SPINCOUNT="1000") == "1000"


def test_sets_only_unset_environment():
    environ = {}
    assert prefer_passive_openmp_wait(environ) is True
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    for name in WAIT_VARIABLES:
        environ = {name: "42"}
        assert prefer_passive_openmp_wait(environ) is False
        assert environ == {name: "42"}


def test_warns_once_torch_is_loaded(monkeypatch):
    # torch is imported by this module, so its OpenMP runtime is already loaded here
    assert openmp_runtime_loaded()
    for name in WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.warns(RuntimeWarning, match="before the first `import torch`"):
        assert prefer_passive_openmp_wait() is True
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


# scripts/run.sh's functions alone (its commands would set up a venv)
_RUN_SH_FUNCTIONS = "".join(
    f"eval \"$(sed -n '/^{name}() {{/,/^}}/p' {ROOT / 'scripts' / 'run.sh'})\"\n"
    for name in ("busy_between", "busy_cores", "threads")
)


def _run_sh_threads(rule: str = "free", **env: str) -> tuple[str, str]:
    """Run scripts/run.sh's ``threads`` function alone; return (OMP_NUM_THREADS, OMP_WAIT_POLICY)."""
    script = (
        _RUN_SH_FUNCTIONS
        + f"threads {rule}\n"
        + 'echo "${OMP_NUM_THREADS-unset} ${OMP_WAIT_POLICY-unset}"\n'
    )
    clean = {k: v for k, v in os.environ.items() if k not in (*WAIT_VARIABLES, "OMP_NUM_THREADS")}
    result = subprocess.run(
        ["bash", "-c", script], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    threads, policy = result.stdout.split()
    return threads, policy


def test_run_sh_threads():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = str(cores - 0.6)  # one core left free
    # an idle machine keeps libgomp's default wait (the passive one costs sleeps and wake-ups)
    assert _run_sh_threads(MANIFOLDNN_LOAD="0.0") == (str(cores), "unset")
    assert _run_sh_threads("cores", MANIFOLDNN_LOAD="0.0") == (str(cores), "unset")
    # a busy machine: waiting threads sleep; the tests get the free cores, the example all of them
    assert _run_sh_threads(MANIFOLDNN_LOAD=busy) == ("1", "PASSIVE")
    assert _run_sh_threads("cores", MANIFOLDNN_LOAD=busy) == (str(cores), "PASSIVE")
    # values the caller set are kept
    assert _run_sh_threads(OMP_NUM_THREADS="7", OMP_WAIT_POLICY="ACTIVE", MANIFOLDNN_LOAD=busy) == (
        "7",
        "ACTIVE",
    )
    assert _run_sh_threads(GOMP_SPINCOUNT="10", MANIFOLDNN_LOAD=busy)[1] == "unset"


def test_free_cores():
    assert free_cores(load=0.0, cores=2) == 2
    assert free_cores(load=0.4, cores=2) == 2
    assert free_cores(load=0.5, cores=2) == 1  # half up, as run.sh
    assert free_cores(load=1.3, cores=2) == 1
    assert free_cores(load=9.0, cores=2) == 1  # never below one
    assert free_cores(load=1.6, cores=8) == 6
    assert 1 <= free_cores() <= os.cpu_count()
    with pytest.raises(ValueError, match="cores"):
        free_cores(load=0.0, cores=0)
    with pytest.raises(ValueError, match="load"):
        free_cores(load=float("nan"), cores=2)


def _run_sh_busy_between(before: str, after: str, cores: int) -> float:
    """scripts/run.sh's ``busy_between`` on two given /proc/stat ``cpu`` lines."""
    script = _RUN_SH_FUNCTIONS + f'busy_between "{before}" "{after}" {cores}\n'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout)


def test_run_sh_busy_between_counts_the_non_idle_share():
    """The busy-core figure is the non-idle share of the CPU time between the two readings
    (idle and iowait are idle; user, nice, system, irq, softirq and steal are busy) times the
    cores, printed to two decimals."""
    # fields: cpu user nice system idle iowait irq softirq steal guest guest_nice
    before = "cpu  1000 10 500 8000 100 5 5 0 0 0"
    # +300 user +100 nice +100 system +1400 idle +100 iowait: 500 busy of 2000
    after = "cpu  1300 110 600 9400 200 5 5 0 0 0"
    assert _run_sh_busy_between(before, after, 4) == 4 * 500 / 2000
    # irq, softirq and steal are busy time too: +100 each of +1000
    after = "cpu  1000 10 500 8600 200 105 105 100 0 0"
    assert _run_sh_busy_between(before, after, 2) == 2 * 300 / 1000
    # a fully idle and a fully busy interval bound the figure by 0 and the cores
    assert _run_sh_busy_between(before, "cpu  1000 10 500 9000 100 5 5 0 0 0", 8) == 0.0
    assert _run_sh_busy_between(before, "cpu  2000 10 500 8000 100 5 5 0 0 0", 8) == 8.0
    # no time elapsed (two equal readings): 0, not a division by zero
    assert _run_sh_busy_between(before, before, 8) == 0.0
