"""Benchmark of the SPDNet block BiMap -> ReEig -> LogEig: forward + backward time, gradients
against a peer, and gradients at repeated eigenvalues.

Block (manifoldnn): ``BiMap`` (W on the Stiefel manifold) -> ``ReEig`` -> ``LogEig``, whose spectral
backward is the gap-safe Daleckii-Krein formula of :func:`manifoldnn.linalg.symmetric_functions`.

Peer (same function, no manifoldnn): ``W^T X W`` with the same W, then ``torch.linalg.eigh`` with
its own backward for ReEig and LogEig, the way an SPD layer written directly in PyTorch computes
them. (spd_learn, the peer issue 29 names, is not a dependency and is not compared here.)

Three checks, one table each:

1. forward + backward wall time on a batch of ``--batch`` SPD matrices of each size in
   ``--sizes`` (output ``size // 2``), float32 and float64, ratio manifoldnn / peer;
2. float64 gradients of both with respect to the input and to W, largest difference relative to
   the gradient's size, where both are defined (random matrices: distinct eigenvalues);
3. inputs with repeated eigenvalues (``X = I`` plus a rank-2 term, a ReEig floor hit by several
   eigenvalues): how many gradient entries are NaN or infinite for each.

Run: ``OMP_NUM_THREADS=1 python benchmarks/spd_layers.py --json out/spd_layers.json``.
"""

from __future__ import annotations

import argparse

import torch
from benchmark_common import add_benchmark_arguments, add_options, best_time, write_json

from manifoldnn.layers import BiMap, LogEig, ReEig

EPS = 1e-4


def manifoldnn_block(weight: torch.Tensor):
    """``x -> (LogEig(ReEig(BiMap(x))), W)`` with BiMap's weight set to ``weight``; the input is
    validated once, at BiMap (as in :class:`manifoldnn.models.SPDNet`)."""
    bimap = BiMap(*weight.shape, dtype=weight.dtype)
    with torch.no_grad():
        bimap.weight.copy_(weight)
    block = torch.nn.Sequential(bimap, ReEig(EPS, validate=False), LogEig(validate=False))
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
    """Print the three tables; return ``{"results", "gradients", "repeated", "config"}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(parser, {"batch": 64, "sizes": ("32,128", "comma-separated n"), "inner": 3})
    add_benchmark_arguments(parser, repeats=5)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]

    results: dict[str, dict[str, float]] = {}
    print(
        f"BiMap(n, n/2) -> ReEig -> LogEig, batch {args.batch}, forward + backward, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(f"{'n':>5}{'dtype':>9}{'manifoldnn ms':>15}{'eigh peer ms':>14}{'ratio':>8}")
    for n in sizes:
        for dtype in (torch.float32, torch.float64):
            x = spd_inputs(args.batch, n, args.seed, dtype)
            weight = stiefel(n, n // 2, args.seed + 1, dtype)
            cotangent = torch.randn(args.batch, n // 2, n // 2, dtype=dtype)
            blocks = {"manifoldnn": manifoldnn_block(weight), "eigh": eigh_block(weight)}
            times = {
                name: best_time(
                    lambda block=block, x=x, g=cotangent: gradients(block, x, g),
                    args.repeats,
                    args.inner,
                )
                for name, block in blocks.items()
            }
            key = f"n={n} {str(dtype).removeprefix('torch.')}"
            ratio = times["manifoldnn"] / times["eigh"]
            results[key] = {
                "manifoldnn_ms": 1e3 * times["manifoldnn"],
                "eigh_ms": 1e3 * times["eigh"],
                "ratio": ratio,
            }
            print(
                f"{n:>5}{key.split()[1]:>9}{1e3 * times['manifoldnn']:>15.2f}"
                f"{1e3 * times['eigh']:>14.2f}{ratio:>8.2f}"
            )

    agreement = {}
    repeated = {}
    print("float64 gradients, largest |manifoldnn - eigh| / largest |gradient|; NaN/inf entries")
    for n in sizes:
        weight = stiefel(n, n // 2, args.seed + 1, torch.float64)
        cotangent = torch.randn(args.batch, n // 2, n // 2, dtype=torch.float64)
        x = spd_inputs(args.batch, n, args.seed, torch.float64)
        ours = gradients(manifoldnn_block(weight), x, cotangent)
        peer = gradients(eigh_block(weight), x, cotangent)
        relative = max(
            float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) for a, b in zip(ours, peer)
        )
        agreement[f"n={n}"] = relative
        # a Stiefel W of the identity's first columns keeps the repeated eigenvalue 1
        eye_weight = torch.eye(n, n // 2, dtype=torch.float64)
        x_rep = repeated_inputs(args.batch, n, args.seed)
        ours = gradients(manifoldnn_block(eye_weight), x_rep, cotangent)
        peer = gradients(eigh_block(eye_weight), x_rep, cotangent)
        bad = {
            "manifoldnn": sum(int((~torch.isfinite(g)).sum()) for g in ours),
            "eigh": sum(int((~torch.isfinite(g)).sum()) for g in peer),
            "entries": sum(g.numel() for g in ours),
        }
        repeated[f"n={n}"] = bad
        print(
            f"  n={n}: distinct eigenvalues {relative:.1e}; repeated eigenvalues: non-finite "
            f"entries manifoldnn {bad['manifoldnn']}, eigh {bad['eigh']} of {bad['entries']}"
        )
    payload = {
        "results": results,
        "gradients": agreement,
        "repeated": repeated,
        "config": vars(args),
    }
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
