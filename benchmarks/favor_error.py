"""FAVOR+ approximation error against exact softmax attention as a function of the features m.

Unit-sphere queries and keys (uniform on S^(d-1)), Gaussian values; exact attention
``softmax(Q K^T / tau) V`` against ``favor_attention`` (non-causal; the causal form is the same
estimate on each prefix) with positive orthogonal random features. Relative error
``||O_favor - O_exact||_F / ||O_exact||_F``, mean and standard deviation over ``--draws`` feature
redraws, float64. ``tau = 0.2`` is the debiasing example's temperature (it uses the geodesic
distance; on the sphere the chordal score ``-||q - k||^2 / (2 tau)`` is this kernel).

    python benchmarks/favor_error.py --json out/favor_error.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from manifoldnn.models import favor_attention, orthogonal_random_features


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--taus", type=float, nargs="+", default=[0.1, 0.2, 0.5, 1.0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--values", type=int, default=16)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    q = F.normalize(torch.randn(args.tokens, args.dim, generator=g, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(args.tokens, args.dim, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(args.tokens, args.values, generator=g, dtype=torch.float64)
    results: dict[str, dict[str, dict]] = {}
    for tau in args.taus:
        exact = torch.softmax(q @ k.T / tau, dim=-1) @ v
        row = {}
        for m in args.features:
            errors = []
            for _ in range(args.draws):
                omega = orthogonal_random_features(m, args.dim, generator=g, dtype=torch.float64)
                estimate = favor_attention(q, k, v, omega, tau=tau)
                errors.append(float((estimate - exact).norm() / exact.norm()))
            spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
            row[str(m)] = {"mean": statistics.mean(errors), "std": spread}
        results[f"tau={tau}"] = row
    print(f"relative error, d = {args.dim}, T = {args.tokens}, {args.draws} draws (mean +- std)")
    print(f"{'tau':>6}" + "".join(f"{'m=' + str(m):>17}" for m in args.features))
    for tau in args.taus:
        row = results[f"tau={tau}"]
        cells = "".join(
            f"{row[str(m)]['mean']:>10.4f} +-{row[str(m)]['std']:.3f}" for m in args.features
        )
        print(f"{tau:>6}" + cells)
    report = {
        "results": results,
        "settings": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
        },
        "seconds": time.perf_counter() - start,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
