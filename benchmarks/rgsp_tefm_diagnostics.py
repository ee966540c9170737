"""What RGSP-TEFM computes on real fine-tuned trunks: λ, the GW value d̄, the collapse of U_B'.

Trains C, A and B as ``examples/model_merging.py`` does (same seeds, same schedule) and runs
``rgsp_tefm`` on the two trunk layers at each rank, printing the ranges over seeds, layers and
ranks of λ, of d̄ against its value 4 (1 - 1/r) for a rank-one U_B', and of the ratio of the second
to the first singular value of U_B' = U_B M^T.

Run: ``OMP_NUM_THREADS=1 python benchmarks/rgsp_tefm_diagnostics.py --json out/rgsp.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from benchmark_common import write_json

from examples.model_merging import fine_tune, is_trunk
from manifoldnn.merging import rgsp_tefm


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["digits", "mfeat"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {}
    for setting in args.settings:
        rows = []
        for seed in range(args.seeds):
            models = fine_tune(setting, seed, args.lr, epochs=30, hidden=64)
            for rank in args.ranks:
                _, infos = rgsp_tefm(
                    models["A"], models["B"], rank, include=is_trunk, return_info=True
                )
                for info in infos.values():
                    sv = torch.linalg.svdvals(info["U_B'"])
                    rows.append(
                        {
                            "lambda": float(info["lambda"]),
                            "d": float(info["d"]),
                            "d_rank_one": 4 * (1 - 1 / rank),
                            "sigma2_over_sigma1": float(sv[1] / sv[0]),
                        }
                    )
        summary = {
            key: [min(r[key] for r in rows), max(r[key] for r in rows)]
            for key in ("lambda", "d", "sigma2_over_sigma1")
        }
        summary["max |d - 4(1 - 1/r)|"] = max(abs(r["d"] - r["d_rank_one"]) for r in rows)
        report[setting] = summary
        print(f"{setting}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    write_json(args.json, {"results": report})
    return report


if __name__ == "__main__":
    main()
