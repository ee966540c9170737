"""Linear-time approximations of causal softmax attention against the exact one: error and speed.

Error. Relative error ``||o - o_exact||_F / ||o_exact||_F`` of the attention output against exact
softmax attention, in float64 (so the figure is the approximation's, not rounding), on L =
``--length`` (512) tokens uniform on the unit sphere of R^``--dim`` (64), values = keys, logits
``-|q - k|^2 / tau`` (softmax over ``2 q.k / tau``: the setting of ``benchmarks/favor.py``) at
every tau of ``--taus`` (0.2, 1, 4); ``self`` = queries are the keys (non-causal), ``cross`` =
independent queries, ``causal`` = causal self-attention. Estimators:

* ``favor+`` and ``favor++``: :func:`manifoldnn.layers.favor_kernel_sums` with ``--features``
  (256) orthogonal random features, mean ± standard deviation over ``--draws`` (5) draws; FAVOR++'s
  ``A`` from the statistic of the pairs (:func:`~manifoldnn.layers.mean_squared_pair_norm`);
* ``vq``: Transformer-VQ (:func:`manifoldnn.layers.vq_attention`) with a codebook of
  ``--codes`` (64) codewords fitted to the keys by ``--lloyd`` (10) Lloyd iterations from random
  keys (one fit per draw).

Time. Forward pass (no gradient) and forward + backward pass (of the output's sum into the queries,
keys and values: a training step's attention), float32, batch 1, ``--heads`` (4) heads of width
``--dim``, of the causal attention core (projections excluded) for L in ``--lengths`` (1k, 4k,
16k): PyTorch's SDPA (``is_causal``), Transformer-VQ (``--codes-time`` (256) codewords, blocks of
``--block`` (128)), FAVOR+ and FAVOR++ (``--features`` features, chunks of ``--chunk`` (64));
minimum of ``--repeats`` calls after a warm-up, all in the same process on the same inputs, printed
as tokens/s and as the ratio to SDPA's time (above 1: faster than SDPA).

Run: ``OMP_NUM_THREADS=1 python benchmarks/softmax_approximations.py --json out/softmax.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmark_common import add_benchmark_arguments, add_options, best_time, write_report  # noqa: E402

from manifoldnn.layers import (  # noqa: E402
    favor_kernel_sums,
    mean_squared_pair_norm,
    optimal_feature_parameter,
    orthogonal_random_features,
    vector_quantize,
    vq_attention,
)

ESTIMATORS = ("favor+", "favor++", "vq")
METHODS = ("sdpa", "vq", "favor+", "favor++")


def unit_tokens(length: int, dim: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    x = torch.randn(length, dim, generator=gen, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def favor(x, y, v, features, estimator, causal, chunk):
    """Causal or full softmax attention with kernel exp(x.y), estimated by FAVOR+ / FAVOR++."""
    a = 0.0
    if estimator == "favor++":
        a = optimal_feature_parameter(mean_squared_pair_norm(x, y), x.shape[-1])
    num, den, _ = favor_kernel_sums(
        x, y, v, features, causal=causal, chunk_size=chunk, feature_parameter=a
    )
    return num / den.unsqueeze(-1)


def lloyd_codebook(keys: torch.Tensor, codes: int, iterations: int, gen: torch.Generator):
    """k-means codebook of the keys (..., L, D): random keys, then Lloyd steps."""
    start = torch.randperm(keys.shape[-2], generator=gen)[:codes]
    codebook = keys[..., start, :].clone()
    for _ in range(iterations):
        assigned, _ = vector_quantize(keys, codebook)
        one_hot = F.one_hot(assigned, codes).to(keys.dtype)
        counts = one_hot.sum(-2)
        means = one_hot.transpose(-1, -2) @ keys / counts.clamp_min(1).unsqueeze(-1)
        codebook = torch.where(counts.unsqueeze(-1) > 0, means, codebook)
    return codebook


def measure_errors(args) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    keys = unit_tokens(args.length, args.dim, gen)
    queries = unit_tokens(args.length, args.dim, gen)
    results = {}
    for tau in args.taus:
        root = (2.0 / tau) ** 0.5  # softmax over 2 q.k / tau: exp(x.y) with x = root q, y = root k
        for setting, q, causal in (
            ("self", keys, False),
            ("cross", queries, False),
            ("causal", keys, True),
        ):
            exact = F.scaled_dot_product_attention(
                q[None], keys[None], keys[None], is_causal=causal, scale=2.0 / tau
            )[0]
            row = {}
            for estimator in args.estimators:
                errors = []
                for draw in range(args.draws):
                    draw_gen = torch.Generator().manual_seed(args.seed + 1000 * draw + 1)
                    if estimator == "vq":
                        codebook = lloyd_codebook(keys, args.codes, args.lloyd, draw_gen)
                        out, _ = vq_attention(
                            q, keys, keys, codebook, scale=2.0 / tau,
                            block_size=args.block,
                        )  # fmt: skip
                        if not causal:  # the layer is causal; the full form is a reference only
                            _, quantised = vector_quantize(keys, codebook)
                            out = F.scaled_dot_product_attention(
                                q[None], quantised[None], keys[None], scale=2.0 / tau
                            )[0]
                    else:
                        w = orthogonal_random_features(
                            args.features, args.dim, generator=draw_gen, dtype=torch.float64
                        )
                        out = favor(root * q, root * keys, keys, w, estimator, causal, args.chunk)
                    errors.append(((out - exact).norm() / exact.norm()).item())
                errors = torch.tensor(errors)
                row[estimator] = {"mean": errors.mean().item(), "std": errors.std().item()}
            results[f"{setting} tau={tau:g}"] = row
    return results


def causal_methods(q, k, v, codebook, w, a, args) -> dict:
    """The causal attention cores timed, on the same inputs: each returns its output."""

    def favor_output(feature_parameter):
        num, den, _ = favor_kernel_sums(
            q, k, v, w, causal=True, chunk_size=args.chunk, feature_parameter=feature_parameter
        )
        return num / den.unsqueeze(-1)

    return {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "vq": lambda: vq_attention(q, k, v, codebook, block_size=args.block)[0],
        "favor+": lambda: favor_output(0.0),
        "favor++": lambda: favor_output(a),
    }


def training_step(q, k, v, forward):
    """Forward and backward of the output's sum into the inputs' gradients."""

    def step():
        for t in (q, k, v):
            t.grad = None
        forward().sum().backward()

    return step


def measure_times(args) -> dict:
    results = {}
    for length in args.lengths:
        gen = torch.Generator().manual_seed(args.seed)
        shape = (1, args.heads, length, args.dim)
        q, k, v = (torch.randn(shape, generator=gen) / args.dim**0.25 for _ in range(3))
        codebook = torch.randn(args.heads, args.codes_time, args.dim, generator=gen)
        w = orthogonal_random_features(
            args.features, args.dim, batch_shape=(args.heads,), generator=gen
        )
        a = optimal_feature_parameter(mean_squared_pair_norm(q, k).mean(0), args.dim)
        row = {}
        with torch.no_grad():
            for name, fn in causal_methods(q, k, v, codebook, w, a, args).items():
                seconds = best_time(fn, args.repeats)
                row[name] = {"seconds": seconds, "tokens_per_s": length / seconds}
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        for name, fn in causal_methods(q, k, v, codebook, w, a, args).items():
            seconds = best_time(training_step(q, k, v, fn), args.repeats)
            row[name] |= {"train_seconds": seconds, "train_tokens_per_s": length / seconds}
        for name in METHODS:
            row[name]["speedup_vs_sdpa"] = row["sdpa"]["seconds"] / row[name]["seconds"]
            row[name]["train_speedup_vs_sdpa"] = (
                row["sdpa"]["train_seconds"] / row[name]["train_seconds"]
            )
        results[str(length)] = row
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="linear-time softmax approximations vs exact")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.2, 1.0, 4.0])
    parser.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    add_options(
        parser,
        {
            "dim": 64,
            "length": 512,
            "features": 256,
            "draws": 5,
            "codes": 64,
            "lloyd": 10,
            "heads": 4,
            "codes_time": 256,
            "block": 128,
            "chunk": 64,
        },
    )
    add_benchmark_arguments(parser, repeats=3)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    errors = measure_errors(args)
    times = measure_times(args)

    print(f"\nrelative error against exact softmax attention, m={args.features}, float64")
    print(f"{'setting':<20}" + "".join(f"{e:>18}" for e in args.estimators))
    for name, row in errors.items():
        cells = "".join(f"{row[e]['mean']:>10.4f} ± {row[e]['std']:.4f}" for e in args.estimators)
        print(f"{name:<20}{cells}")
    for prefix, what in (("", "forward (no gradient)"), ("train_", "forward + backward")):
        print(f"\ncausal {what}, float32, {args.heads} heads of {args.dim}: tokens/s (x SDPA)")
        print(f"{'L':>8}" + "".join(f"{m:>22}" for m in METHODS))
        for length, row in times.items():
            cells = "".join(
                f"{row[m][prefix + 'tokens_per_s']:>13.0f} "
                f"({row[m][prefix + 'speedup_vs_sdpa']:>5.2f}x)"
                for m in METHODS
            )
            print(f"{length:>8}{cells}")
    return write_report(args, {"error": errors, "time": times}, start)


if __name__ == "__main__":
    main()
