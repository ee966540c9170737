"""Benchmark of the SPDNet block BiMap -> ReEig -> LogEig: forward + backward time, gradients
against the peers, and gradients at repeated eigenvalues.

Block (manifoldnn): ``BiMap`` (W on the Stiefel manifold) -> ``ReEig`` -> ``LogEig``, whose spectral
backward is the gap-safe Daleckii-Krein formula of :func:`manifoldnn.linalg.symmetric_functions`.
``fused``: the same function as ``BiMap`` -> ``LogEig(eps)``, ReEig and LogEig from one
eigendecomposition (the rectified matrix keeps the input's eigenvectors), the way
:class:`manifoldnn.models.SPDNet` runs its last block.
Neither checks its input (as the peers); ``checked`` is ``fused`` with the input's values checked
once, at BiMap (finite, symmetric, a Cholesky factorisation), SPDNet's default, timed apart.

Peers, on the same inputs and the same W, in the same process:

* ``spd_learn`` (0.2.1, the peer issue 29 names; ``pip install "manifoldnn[benchmarks]"``, its
  column is left out where it is not installed): its ``BiMap`` (``parametrized=False``: W used as
  given, as ours, rather than recomputed by a Cayley parametrisation at every call), ``ReEig`` with
  the same floor and ``LogEig`` returning the matrix, each with its own eigendecomposition-based
  backward;
* ``eigh``: ``W^T X W``, then ``torch.linalg.eigh`` with its own backward for ReEig and LogEig, the
  way an SPD layer written directly in PyTorch computes them.

Three checks, one table each:

1. forward + backward wall time (best of ``--repeats`` rounds, interleaved across the blocks, of
   ``--inner`` calls each) on a batch of ``--batch`` SPD matrices of each size in
   ``--sizes`` (output ``size // 2``), float32 and float64, and the speed-ups of manifoldnn (layer
   by layer, and fused) over each peer (peer time / manifoldnn time: above 1 means manifoldnn is
   faster);
2. float64 gradients of the fused block and each peer against manifoldnn's, with respect to the
   input and to W, largest difference relative to the gradient's size, where all are defined
   (random matrices: distinct eigenvalues);
3. inputs with repeated eigenvalues (``X = I`` plus a rank-2 term, a ReEig floor hit by several
   eigenvalues): how many gradient entries are NaN or infinite for each.

Run: ``OMP_NUM_THREADS=1 python benchmarks/spd_layers.py --json out/spd_layers.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from functools import partial

import torch
from benchmark_common import (
    add_benchmark_arguments,
    add_options,
    best_time,
    write_report,
)

from manifoldnn.layers import BiMap, LogEig, ReEig
from manifoldnn.utils.optional import require

EPS = 1e-4
HAS_SPD_LEARN = importlib.util.find_spec("spd_learn") is not None


def manifoldnn_block(weight: torch.Tensor, validate: bool = False):
    """``x -> (LogEig(ReEig(BiMap(x))), W)`` with BiMap's weight set to ``weight``; with
    ``validate`` the input's values are checked once, at BiMap (as
    :class:`manifoldnn.models.SPDNet` does by default), else nothing is checked (as the peers)."""
    bimap = BiMap(*weight.shape, validate=validate, dtype=weight.dtype)
    with torch.no_grad():
        bimap.weight.copy_(weight)
    block = torch.nn.Sequential(bimap, ReEig(EPS, validate=False), LogEig(validate=False))
    return lambda x: (block(x), bimap.weight)


def fused_block(weight: torch.Tensor, validate: bool = False):
    """``x -> (LogEig(EPS)(BiMap(x)), W)``: the same function with ReEig and LogEig from one
    eigendecomposition, as :class:`manifoldnn.models.SPDNet` runs its last block."""
    bimap = BiMap(*weight.shape, validate=validate, dtype=weight.dtype)
    with torch.no_grad():
        bimap.weight.copy_(weight)
    block = torch.nn.Sequential(bimap, LogEig(EPS, validate=False))
    return lambda x: (block(x), bimap.weight)


def eigh_block(weight: torch.Tensor):
    """The same function through ``torch.linalg.eigh`` and its own backward."""
    w = weight.clone().requires_grad_()

    def block(x):
        y = w.transpose(-1, -2) @ x @ w
        y = 0.5 * (y + y.transpose(-1, -2))
        lam, q = torch.linalg.eigh(y)
        y = (q * lam.clamp_min(EPS).unsqueeze(-2)) @ q.transpose(-1, -2)
        lam, q = torch.linalg.eigh(y)
        return (q * lam.log().unsqueeze(-2)) @ q.transpose(-1, -2), w

    return block


def spd_learn_block(weight: torch.Tensor):
    """The same function through spd_learn's layers (W of shape ``(1, n, p)``, its depthwise
    layout)."""
    peer = require("spd_learn.modules", "benchmarks", "the spd_learn comparison")
    bimap = peer.BiMap(*weight.shape, parametrized=False, dtype=weight.dtype)
    with torch.no_grad():
        bimap.weight.copy_(weight.unsqueeze(0))
    block = torch.nn.Sequential(
        bimap,
        peer.ReEig(EPS, dtype=weight.dtype),
        peer.LogEig(upper=False, flatten=False, dtype=weight.dtype),
    )
    return lambda x: (block(x), bimap.weight)


def blocks_for(weight: torch.Tensor) -> dict:
    """Each implementation of the block with W set to ``weight``, manifoldnn first."""
    blocks = {
        "manifoldnn": manifoldnn_block(weight),
        "fused": fused_block(weight),
        # SPDNet's default: the fused block with the input's values checked once, at BiMap
        "checked": fused_block(weight, validate=True),
    }
    if HAS_SPD_LEARN:
        blocks["spd_learn"] = spd_learn_block(weight)
    blocks["eigh"] = eigh_block(weight)
    return blocks


def spd_inputs(batch: int, n: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, 2 * n, generator=generator, dtype=torch.float64)
    return (a @ a.transpose(-1, -2) / (2 * n) + 1e-3 * torch.eye(n, dtype=torch.float64)).to(dtype)


def repeated_inputs(batch: int, n: int, seed: int) -> torch.Tensor:
    """``I + V V^T`` with V of rank 2: eigenvalue 1 repeated ``n - 2`` times."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, n, 2, generator=generator, dtype=torch.float64)
    return torch.eye(n, dtype=torch.float64) + v @ v.transpose(-1, -2)


def stiefel(n: int, p: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, p, generator=generator, dtype=torch.float64))[0].to(dtype)


def gradients(block, x, cotangent):
    """Gradients of ``<block(x), cotangent>`` with respect to ``x`` and W."""
    x = x.clone().requires_grad_()
    out, weight = block(x)
    return torch.autograd.grad((out * cotangent).sum(), (x, weight))


def main(argv: list[str] | None = None) -> dict:
    """Print the three tables; return ``{"results", "gradients", "repeated", "config", "seconds"}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(parser, {"batch": 64, "sizes": ("32,128", "comma-separated n"), "inner": 3})
    add_benchmark_arguments(parser, repeats=5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sizes = [int(size) for size in args.sizes.split(",")]

    results: dict[str, dict[str, float]] = {}
    peers = ["spd_learn", "eigh"] if HAS_SPD_LEARN else ["eigh"]
    print(
        f"BiMap(n, n/2) -> ReEig -> LogEig (fused: BiMap -> LogEig(eps), one eigendecomposition), "
        f"batch {args.batch}, forward + backward, "
        f"{torch.get_num_threads()} thread(s)"
        + ("" if HAS_SPD_LEARN else "; spd_learn not installed, its columns left out")
    )
    ours = ["manifoldnn", "fused"]
    header = f"{'n':>5}{'dtype':>9}"
    header += "".join(f"{name + ' ms':>15}" for name in ours + ["checked"] + peers)
    # speed-up columns: peer time / manifoldnn time (layer by layer, then fused)
    header += "".join(
        f"{('fused ' if name == 'fused' else '') + 'x vs ' + peer:>22}"
        for name in ours
        for peer in peers
    )
    print(header)
    for n in sizes:
        for dtype in (torch.float32, torch.float64):
            x = spd_inputs(args.batch, n, args.seed, dtype)
            weight = stiefel(n, n // 2, args.seed + 1, dtype)
            cotangent = torch.randn(args.batch, n // 2, n // 2, dtype=dtype)
            blocks = blocks_for(weight)
            times = dict.fromkeys(blocks, float("inf"))
            # rounds interleaved across the blocks, so that a change of the machine's load
            # between rounds reaches every block alike; the best round of each
            for _ in range(args.repeats):
                for name, block in blocks.items():
                    run = partial(gradients, block, x, cotangent)
                    times[name] = min(times[name], best_time(run, 1, args.inner))
            key = f"n={n} {str(dtype).removeprefix('torch.')}"
            row = {f"{name}_ms": 1e3 * seconds for name, seconds in times.items()}
            # speed-ups over each peer (peer time / ours): above 1, manifoldnn is faster
            row |= {f"speedup_vs_{peer}": times[peer] / times["manifoldnn"] for peer in peers}
            row |= {f"fused_speedup_vs_{peer}": times[peer] / times["fused"] for peer in peers}
            results[key] = row
            line = f"{n:>5}{key.split()[1]:>9}"
            line += "".join(f"{row[name + '_ms']:>15.2f}" for name in ours + ["checked"] + peers)
            line += "".join(
                f"{times[peer] / times[name]:>22.2f}" for name in ours for peer in peers
            )
            print(line)

    agreement: dict[str, dict[str, float]] = {}
    repeated = {}
    print(
        "float64 gradients, largest |manifoldnn - other| / largest |gradient|; "
        "NaN/inf gradient entries at repeated eigenvalues"
    )
    for n in sizes:
        weight = stiefel(n, n // 2, args.seed + 1, torch.float64)
        cotangent = torch.randn(args.batch, n // 2, n // 2, dtype=torch.float64)
        x = spd_inputs(args.batch, n, args.seed, torch.float64)
        grads = {name: gradients(block, x, cotangent) for name, block in blocks_for(weight).items()}
        agreement[f"n={n}"] = {
            peer: max(
                float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
                for a, b in zip(grads["manifoldnn"], grads[peer])
            )
            for peer in ["fused", "checked"] + peers
        }
        # a Stiefel W of the identity's first columns keeps the repeated eigenvalue 1
        eye_weight = torch.eye(n, n // 2, dtype=torch.float64)
        x_rep = repeated_inputs(args.batch, n, args.seed)
        grads = {
            name: gradients(block, x_rep, cotangent)
            for name, block in blocks_for(eye_weight).items()
        }
        bad = {
            name: sum(int((~torch.isfinite(g)).sum()) for g in grad) for name, grad in grads.items()
        }
        bad["entries"] = sum(g.numel() for g in grads["manifoldnn"])
        repeated[f"n={n}"] = bad
        distinct = ", ".join(f"{peer} {value:.1e}" for peer, value in agreement[f"n={n}"].items())
        nonfinite = ", ".join(f"{name} {bad[name]}" for name in grads)
        print(
            f"  n={n}: distinct eigenvalues: {distinct}; repeated eigenvalues, non-finite "
            f"entries: {nonfinite} of {bad['entries']}"
        )
    return write_report(args, results, start, gradients=agreement, repeated=repeated)


if __name__ == "__main__":
    main()
