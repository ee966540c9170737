"""Wall time of the README's workloads beside a busy loop, under OpenMP thread settings.

Starts one busy loop (``python -c "while True: pass"``, unless ``--no-busy``), then runs every
workload under every setting, ``--reps`` times, reversing the order of the settings from one
repetition to the next so that a change of the machine's load hits them alike. Each run is a fresh
process (OpenMP reads its environment once, at load) with the OpenMP variables of the caller
removed and those of the setting added. Records wall time, the child's CPU time (user + system)
and the 1-minute load average at the start. The load from other processes is not controlled:
compare settings within a repetition (``ratio`` in the printed table: median over repetitions of
default / setting).

Settings: ``default`` (nothing set), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``), ``one``
(``OMP_NUM_THREADS=1``), ``runsh`` (what ``scripts/run.sh`` exports at that moment: its ``threads``
function is run). Workloads: ``karcher`` (``pytest tests/test_karcher.py``), ``flagship5`` (the
flagship example, 5 epochs of one training, no self-labelling, no plots), ``import`` (``import
torch``, for smoke tests).

Run: ``python benchmarks/shared_machine.py --reps 3 --configs default,passive,one --json PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmark_common import write_json

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "karcher": ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_karcher.py"],
    "flagship5": [
        "examples/multiview_clustering.py",
        "--epochs",
        "5",
        "--restarts",
        "1",
        "--self-label-epochs",
        "0",
        "--no-plots",
        "--quiet",
    ],
    "import": ["-c", "import torch; torch.ones(4).sum()"],
}
CONFIGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one": {"OMP_NUM_THREADS": "1"},
    "runsh": None,  # evaluated at each run
}
OPENMP_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_")


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(OPENMP_PREFIXES)}


def run_sh_settings() -> dict[str, str]:
    """The variables scripts/run.sh's ``threads`` function exports now."""
    run_sh = ROOT / "scripts" / "run.sh"
    functions = "".join(
        f"eval \"$(sed -n '/^{name}() {{/,/^}}/p' {run_sh})\"\n"
        for name in ("busy_between", "busy_cores", "threads")
    )
    script = functions + 'threads 2>/dev/null\necho "${OMP_NUM_THREADS-}|${OMP_WAIT_POLICY-}"\n'
    out = subprocess.run(
        ["bash", "-c", script], env=clean_environment(), capture_output=True, text=True, check=True
    ).stdout.strip()
    threads, policy = out.split("|")
    # an idle machine keeps libgomp's default wait: OMP_WAIT_POLICY stays unset
    return {"OMP_NUM_THREADS": threads} | ({"OMP_WAIT_POLICY": policy} if policy else {})


def run_once(workload: str, config: str, out_dir: Path) -> dict:
    settings = run_sh_settings() if CONFIGS[config] is None else dict(CONFIGS[config])
    env = clean_environment() | settings | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, *WORKLOADS[workload]]
    if workload == "flagship5":
        command += ["--out", str(out_dir)]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{workload} under {config} failed:\n{result.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {
        "workload": workload,
        "config": config,
        "settings": settings,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "loadavg1": load,
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def summarise(rows: list[dict], workloads: list[str], configs: list[str]) -> dict:
    results = {}
    reps = sorted({row["rep"] for row in rows})
    for workload in workloads:
        by = {(r["config"], r["rep"]): r for r in rows if r["workload"] == workload}
        for config in configs:
            times = [by[config, k]["seconds"] for k in reps]
            entry = {
                "median_seconds": statistics.median(times),
                "median_cpu_seconds": statistics.median(by[config, k]["cpu_seconds"] for k in reps),
            }
            if "default" in configs:
                entry["median_ratio_default_over_this"] = statistics.median(
                    by["default", k]["seconds"] / by[config, k]["seconds"] for k in reps
                )
            results[f"{workload}/{config}"] = entry
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workloads", default="karcher,flagship5")
    parser.add_argument("--configs", default="default,passive,one,runsh")
    parser.add_argument("--no-busy", action="store_true", help="no busy loop beside the runs")
    parser.add_argument("--out", type=Path, default=Path("out/shared_machine"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    workloads, configs = args.workloads.split(","), args.configs.split(",")
    for name, known in ((workloads, WORKLOADS), (configs, CONFIGS)):
        unknown = sorted(set(name) - set(known))
        if unknown:
            parser.error(f"unknown {unknown}; choose from {sorted(known)}")
    busy = None
    if not args.no_busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    rows: list[dict] = []
    try:
        time.sleep(1.0)
        for rep in range(args.reps):
            order = configs if rep % 2 == 0 else configs[::-1]
            for workload in workloads:
                for config in order:
                    row = run_once(workload, config, args.out) | {"rep": rep}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    results = summarise(rows, workloads, configs)
    print(f"{'workload/setting':24} {'median s':>9} {'median CPU s':>13} {'ratio':>6}")
    for key, entry in results.items():
        ratio = entry.get("median_ratio_default_over_this", float("nan"))
        print(
            f"{key:24} {entry['median_seconds']:9.1f} {entry['median_cpu_seconds']:13.1f} {ratio:6.2f}"
        )
    report = {"results": results, "runs": rows, "busy_loop": not args.no_busy}
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
