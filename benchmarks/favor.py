"""FAVOR+ geodesic attention against exact attention: approximation error against m, time against L.

Error. Relative error ``||o_favor - o_exact||_F / ||o_exact||_F`` of the attention output (Grassmann
outputs compared as projectors ``YY^T``), mean and standard deviation over ``--draws`` independent
draws of the orthogonal random features, in float64 (so the figure is the Monte-Carlo error, not
rounding), for m in ``--features``:

* ``sphere``: uniform unit vectors in R^``--dim`` (default 64), L = ``--length`` (512), chordal
  distance, at every tau of ``--taus`` (default 0.2, the temperature of
  ``examples/debias_attention.py``, then 1 and 4); ``self`` = queries, keys and values the same
  tokens, ``cross`` = independent uniform queries, ``causal`` = causal self-attention;
* ``grassmann``: uniform points of Gr(``--n``, ``--p``) (default Gr(8, 2)), projection distance,
  self-attention, same taus.

The exact reference is :func:`manifoldnn.layers.geodesic_attention` (its SDPA path).

Time. Forward pass (no gradient, float32, one sequence, one head) of ``geodesic_attention`` (exact,
through PyTorch's fused SDPA kernel) and of ``favor_attention`` (m = ``--time-features``,
non-causal and causal with ``--chunk`` keys a chunk) on sphere tokens of ``--dim``, for L in
``--lengths``; minimum of ``--repeats`` calls, all methods in the same process on the same inputs,
printed as the ratio exact / FAVOR+ (above 1: FAVOR+ is faster). The exact causal path is timed
too, for the causal ratio.

Run: ``OMP_NUM_THREADS=2 python benchmarks/favor.py --json out/favor.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from benchmark_common import add_options, best_time, write_report
from tqdm import tqdm

from manifoldnn.layers import (
    favor_attention,
    geodesic_attention,
    orthogonal_random_features,
)
from manifoldnn.manifolds import Grassmann, Sphere, geometry_for


def unit_tokens(length: int, dim: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    x = torch.randn(1, length, dim, generator=gen, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def grassmann_tokens(length: int, n: int, p: int, gen: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(1, length, n, p, generator=gen, dtype=torch.float64)).Q


def relative_error(out: torch.Tensor, exact: torch.Tensor, grassmann: bool) -> float:
    if grassmann:
        out, exact = out @ out.transpose(-1, -2), exact @ exact.transpose(-1, -2)
    return ((out - exact).norm() / exact.norm()).item()


def error_settings(args):
    """``(name, manifold, distance, tau, query, key/value, causal)`` for every setting."""
    gen = torch.Generator().manual_seed(args.seed)
    x = unit_tokens(args.length, args.dim, gen)
    queries = unit_tokens(args.length, args.dim, gen)
    bases = grassmann_tokens(args.length, args.n, args.p, gen)
    settings = []
    for tau in args.taus:
        settings += [
            (f"sphere self tau={tau:g}", Sphere(), "chordal", tau, x, x, False),
            (f"sphere cross tau={tau:g}", Sphere(), "chordal", tau, queries, x, False),
            (f"sphere causal tau={tau:g}", Sphere(), "chordal", tau, x, x, True),
            (f"grassmann self tau={tau:g}", Grassmann(), "projection", tau, bases, bases, False),
        ]
    return settings


def measure_errors(args) -> dict:
    results = {}
    settings = error_settings(args)
    bar = tqdm(total=len(settings) * len(args.features), desc="error vs m", disable=args.quiet)
    for name, manifold, distance, tau, q, kv, causal in settings:
        kwargs = {"tau": tau, "distance": distance, "is_causal": causal}
        exact, _ = geodesic_attention(manifold, q, kv, kv, **kwargs)
        width = geometry_for(manifold).sdpa_features(q[:, :1], kv[:, :1], distance)[0].shape[-1]
        row = {}
        for m in args.features:
            gen = torch.Generator().manual_seed(args.seed + m)
            draws = orthogonal_random_features(
                m, width, batch_shape=(args.draws,), generator=gen, dtype=torch.float64
            )
            errors = torch.tensor(
                [
                    relative_error(
                        favor_attention(manifold, q, kv, kv, features=w, **kwargs)[0],
                        exact,
                        manifold.__class__ is Grassmann,
                    )
                    for w in draws
                ]
            )
            row[str(m)] = {"mean": errors.mean().item(), "std": errors.std().item()}
            bar.update()
        results[name] = row
    bar.close()
    return results


def time_methods(x: torch.Tensor, w: torch.Tensor, args) -> dict:
    """Best forward time of each method on the same tokens ``x`` and features ``w``."""
    sphere = Sphere()
    common = {"tau": args.taus[0], "distance": "chordal", "validate": False}
    methods = {
        "exact": lambda: geodesic_attention(sphere, x, x, x, **common),
        "exact_causal": lambda: geodesic_attention(sphere, x, x, x, is_causal=True, **common),
        "favor": lambda: favor_attention(sphere, x, x, x, features=w, **common),
        "favor_causal": lambda: favor_attention(
            sphere, x, x, x, features=w, is_causal=True, chunk_size=args.chunk, **common
        ),
    }
    return {name: best_time(fn, args.repeats) for name, fn in methods.items()}


def measure_times(args) -> dict:
    results = {}
    for length in tqdm(args.lengths, desc="time vs L", disable=args.quiet):
        gen = torch.Generator().manual_seed(args.seed)
        x = unit_tokens(length, args.dim, gen, dtype=torch.float32)
        w = orthogonal_random_features(
            args.time_features, args.dim, generator=gen, dtype=torch.float32
        )
        with torch.no_grad():
            row = time_methods(x, w, args)
        row["ratio"] = row["exact"] / row["favor"]
        row["ratio_causal"] = row["exact_causal"] / row["favor_causal"]
        results[str(length)] = row
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="FAVOR+ vs exact geodesic attention")
    parser.add_argument("--features", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--taus", type=float, nargs="+", default=[0.2, 1.0, 4.0])
    add_options(
        parser,
        {
            "dim": 64,
            "length": 512,
            "n": 8,
            "p": 2,
            "draws": 5,
        },
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    add_options(
        parser,
        {
            "time_features": 256,
            "chunk": 64,
            "repeats": 3,
            "seed": 0,
        },
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    errors = measure_errors(args)
    times = measure_times(args)

    print("\nrelative error of the output (mean ± std over draws), float64")
    print(f"{'setting':<28}" + "".join(f"{'m=' + str(m):>17}" for m in args.features))
    for name, row in errors.items():
        cells = "".join(
            f"{row[str(m)]['mean']:>9.4f} ± {row[str(m)]['std']:.4f}" for m in args.features
        )
        print(f"{name:<28}{cells}")
    print(f"\nforward time (s), sphere d={args.dim}, m={args.time_features}, float32")
    header = ["L", "exact", "favor", "exact/favor", "exact causal", "favor causal", "ratio"]
    print("".join(f"{h:>14}" for h in header))
    for length, row in times.items():
        cells = [row["exact"], row["favor"], row["ratio"], row["exact_causal"]]
        cells += [row["favor_causal"], row["ratio_causal"]]
        print(f"{length:>14}" + "".join(f"{c:>14.4f}" for c in cells))
    return write_report(args, {"error": errors, "time": times}, start)


if __name__ == "__main__":
    main()
