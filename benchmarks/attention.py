"""Grassmann attention vs scaled_dot_product_attention: time ratio and peak memory against L.

Tokens are points of Gr(n, p) (bases ``(L, n, p)``). Methods, forward pass only (no gradient):

* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` on Euclidean features of the same
  size as those the projection path feeds it (queries, keys and values of ``n(n+1)/2`` numbers, one
  head: PyTorch's fused CPU flash kernel), the peer;
* ``projection``: ``geodesic_attention(Grassmann(), ..., distance="projection",
  aggregation="extrinsic")``: packed projector features through SDPA, then the top-p eigenvectors
  of each weighted mean projector;
* ``geodesic``: ``distance="geodesic"`` (principal angles of every query-key pair, key chunks of
  ``--chunk`` with an online softmax), run only up to ``--geodesic-max`` tokens.

Time: minimum of ``--repeats`` calls (the least disturbed by other processes on a shared machine), ``sdpa`` and the Grassmann methods timed in the same process on
the same inputs; the ratio is printed. Peak memory: each (method, L) runs once in a fresh
subprocess, and the peak is ``ru_maxrss`` (``resource.getrusage``, the process's resident-set
high-water mark) minus the resident set size just before the call, i.e. the extra memory the call
needed. (tracemalloc does not see PyTorch's allocator, hence RSS.)

Correctness, printed first: at the first length, each Grassmann method's output (as timed: float32,
chunked) against a float64 dense computation of its definition (softmax over all keys, then the
top-p eigenspace of the weighted mean projector), with the smallest eigengap that bounds the
difference.

``--backward-lengths 2048 4096`` adds forward+backward of the chunked path (sphere, geodesic
distance, tangent aggregation, d = 16) with key chunks of ``--chunk`` (activation checkpointing)
against a single chunk (no checkpointing): time and peak extra RSS, each in a fresh process.

``--device cuda`` runs the inputs and the timed calls on the GPU (timings synchronised); there the
peak memory is ``torch.cuda.max_memory_allocated`` above the memory allocated before the call.

Run: ``OMP_NUM_THREADS=2 python benchmarks/attention.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from benchmark_common import (
    add_benchmark_arguments,
    add_options,
    best_time,
    synchronize,
    write_json,
)

from manifoldnn.layers import geodesic_attention
from manifoldnn.manifolds import Grassmann


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * (resource.getpagesize() // 1024)


def _device(args: argparse.Namespace) -> str:
    """The workers' device (``cpu`` for a namespace without one)."""
    return getattr(args, "device", "cpu")


def make_inputs(length: int, n: int, p: int, seed: int, device: str = "cpu"):
    """Drawn on the CPU (the same numbers on every device), then moved to ``device``."""
    gen = torch.Generator().manual_seed(seed)
    grassmann = Grassmann()

    def bases():
        return torch.linalg.qr(torch.randn(1, length, n, p, generator=gen))[0].to(device)

    q, k, v = bases(), bases(), bases()
    m = n * (n + 1) // 2
    eq, ek, ev = (torch.randn(1, 1, length, m, generator=gen).to(device) for _ in range(3))
    return grassmann, (q, k, v), (eq, ek, ev)


def run_method(method: str, grassmann, points, features, chunk: int):
    with torch.no_grad():
        if method == "sdpa":
            return F.scaled_dot_product_attention(*features)
        q, k, v = points
        return geodesic_attention(
            grassmann, q, k, v, tau=0.5, distance=method, aggregation="extrinsic", chunk_size=chunk
        )[0]


def worker_time(args) -> dict:
    grassmann, points, features = make_inputs(args.length, args.n, args.p, args.seed, _device(args))
    methods = ["sdpa", "projection"] + (["geodesic"] if args.length <= args.geodesic_max else [])
    times = {}
    for method in methods:
        times[method] = best_time(
            lambda method=method: run_method(method, grassmann, points, features, args.chunk),
            repeats=args.repeats if args.length <= 4096 else 1,
        )
    return times


def dense_reference(method: str, grassmann, points) -> torch.Tensor:
    """The attention output, as projectors ``(1, L, n, n)``, from the definition in float64, and the
    eigenvalues of the weighted mean projectors: weights ``softmax(-d^2 / tau)`` over all keys (``d``
    the projection distance or the geodesic distance of :class:`~manifoldnn.manifolds.Grassmann`),
    output the span of the top-p eigenvectors of the
    weighted mean projector of the values (extrinsic mean)."""
    q, k, v = (x.double() for x in points)
    query, key = q[..., :, None, :, :], k[..., None, :, :, :]
    if method == "projection":  # p - ||Q^T K||_F^2 = ||sin theta||^2
        sq_distance = q.shape[-1] - (query.transpose(-1, -2) @ key).pow(2).sum((-2, -1))
    else:
        sq_distance = grassmann.dist(query, key).pow(2)
    weights = torch.softmax(-sq_distance / 0.5, dim=-1)  # tau = 0.5 as in run_method
    mean = torch.einsum("...ij,...jab->...iab", weights, v @ v.transpose(-1, -2))
    top = torch.linalg.eigh(mean)[1][..., -q.shape[-1] :]
    return top @ top.transpose(-1, -2), torch.linalg.eigvalsh(mean)


def worker_agreement(args) -> dict:
    """Largest entry of the difference between the projector of each Grassmann method's output (as
    timed: float32, key chunks of ``args.chunk``) and that of :func:`dense_reference`, and the
    smallest eigenvalue gap ``lambda_p - lambda_{p+1}`` of the reference's weighted mean projectors
    (which bounds the sensitivity of the output subspace, Davis & Kahan 1970)."""
    grassmann, points, features = make_inputs(args.length, args.n, args.p, args.seed, _device(args))
    methods = ["projection"] + (["geodesic"] if args.length <= args.geodesic_max else [])
    report = {}
    for method in methods:
        out = run_method(method, grassmann, points, features, args.chunk).double()
        projector, eigenvalues = dense_reference(method, grassmann, points)
        gap = eigenvalues[..., -args.p] - eigenvalues[..., -args.p - 1]
        report[method] = {
            "max_projector_difference": (out @ out.transpose(-1, -2) - projector)
            .abs()
            .max()
            .item(),
            "min_eigengap": gap.min().item(),
        }
    return report


def worker_memory(args) -> dict:
    small = make_inputs(16, args.n, args.p, args.seed, _device(args))
    run_method(args.method, *small, args.chunk)  # load kernels and libraries first
    grassmann, points, features = make_inputs(args.length, args.n, args.p, args.seed, _device(args))
    if torch.device(_device(args)).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run_method(args.method, grassmann, points, features, args.chunk)
        torch.cuda.synchronize()
        return {"peak_extra_mib": (torch.cuda.max_memory_allocated() - before) / 2**20}
    before = _rss_kib()
    run_method(args.method, grassmann, points, features, args.chunk)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_extra_mib": max(0, peak - before) / 1024}


def worker_backward(args) -> dict:
    """Forward + backward of sphere attention (geodesic distance, tangent aggregation, d = 16) on
    ``args.length`` tokens with key chunks of ``args.chunk`` (``chunk >= length``: one chunk, no
    checkpointing): seconds and peak extra RSS."""
    from manifoldnn.manifolds import Sphere

    sphere = Sphere()
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.length, 16, generator=gen).to(_device(args))
    x = x / x.norm(dim=-1, keepdim=True)
    warm = x[:8].clone().requires_grad_()
    geodesic_attention(sphere, warm, warm, warm, aggregation="tangent", chunk_size=4)[
        0
    ].sum().backward()
    q = x.clone().requires_grad_()
    before = _rss_kib()
    start = time.perf_counter()
    out, _ = geodesic_attention(
        sphere, q, q, q, tau=0.3, aggregation="tangent", chunk_size=args.chunk
    )
    out.pow(2).sum().backward()
    synchronize()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_extra_mib": max(0, peak - before) / 1024}


def _spawn(extra: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *extra], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Grassmann attention vs SDPA")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    add_options(
        parser,
        {
            "n": 6,
            "p": 2,
            "chunk": 256,
            "geodesic_max": 2048,
        },
    )
    add_benchmark_arguments(parser, repeats=5, device=True)
    parser.add_argument(
        "--backward-lengths",
        type=int,
        nargs="*",
        default=[],
        help="also measure forward+backward memory of the chunked path (checkpointed) at these L",
    )
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure peak memory (one fresh process per method and length); --no-memory times "
        "in this process and leaves memory out (a quick run)",
    )
    parser.add_argument("--worker", choices=["time", "memory", "backward"], default=None)
    parser.add_argument("--method", default="sdpa")
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args(argv)
    if args.worker == "time":
        print(json.dumps(worker_time(args)))
        return {}
    if args.worker == "memory":
        print(json.dumps(worker_memory(args)))
        return {}
    if args.worker == "backward":
        print(json.dumps(worker_backward(args)))
        return {}

    common = ["--n", str(args.n), "--p", str(args.p), "--chunk", str(args.chunk)]
    common += ["--seed", str(args.seed), "--repeats", str(args.repeats)]
    common += ["--geodesic-max", str(args.geodesic_max), "--device", args.device]
    rows = {}
    agreement = worker_agreement(argparse.Namespace(**(vars(args) | {"length": args.lengths[0]})))
    rows["agreement"] = agreement
    for method, row in agreement.items():
        print(
            f"{method}: max |projector - float64 dense reference| at L = {args.lengths[0]}: "
            f"{row['max_projector_difference']:.1e} (smallest eigengap {row['min_eigengap']:.2e})"
        )
    print(
        f"Gr({args.n},{args.p}) tokens; SDPA peer on q/k/v features of size "
        f"{args.n * (args.n + 1) // 2}; device {args.device}, torch threads {torch.get_num_threads()}"
    )
    header = (
        f"{'L':>6} {'sdpa s':>9} {'proj s':>9} {'proj/sdpa':>9} {'geod s':>9} {'geod/sdpa':>9}"
        f" {'mem sdpa':>9} {'mem proj':>9} {'mem geod':>9}  (MiB)"
    )
    print(header)
    for length in args.lengths:
        if args.memory:
            times = _spawn(common + ["--worker", "time", "--length", str(length)])
            memory = {
                method: _spawn(
                    common + ["--worker", "memory", "--method", method, "--length", str(length)]
                )["peak_extra_mib"]
                for method in times
            }
        else:
            times = worker_time(argparse.Namespace(**(vars(args) | {"length": length})))
            memory = {}  # not measured
        rows[length] = {"time_s": times, "peak_extra_mib": memory}
        geo_t = times.get("geodesic")
        print(
            f"{length:>6} {times['sdpa']:>9.4f} {times['projection']:>9.4f} "
            f"{times['projection'] / times['sdpa']:>9.2f} "
            + (f"{geo_t:>9.3f} {geo_t / times['sdpa']:>9.1f} " if geo_t else f"{'-':>9} {'-':>9} ")
            + " ".join(
                f"{memory[method]:>9.1f}" if method in memory else f"{'-':>9}"
                for method in ("sdpa", "projection", "geodesic")
            )
        )
    if args.backward_lengths:
        print("forward+backward, sphere geodesic attention, tangent aggregation, d = 16:")
        print(
            f"{'L':>6} {'chunked s':>10} {'one-chunk s':>12} {'chunked MiB':>12} {'one-chunk MiB':>14}"
        )
    for length in args.backward_lengths:
        base = ["--seed", str(args.seed), "--worker", "backward", "--length", str(length)]
        base += ["--device", args.device]
        chunked = _spawn(base + ["--chunk", str(args.chunk)])
        whole = _spawn(base + ["--chunk", str(length)])
        rows[f"backward_{length}"] = {"chunked": chunked, "one_chunk": whole}
        print(
            f"{length:>6} {chunked['seconds']:>10.2f} {whole['seconds']:>12.2f} "
            f"{chunked['peak_extra_mib']:>12.0f} {whole['peak_extra_mib']:>14.0f}"
        )
    write_json(args.json, {"results": rows, "config": vars(args)})
    return rows


if __name__ == "__main__":
    main()
