"""Forward+backward time and activation memory against sequence length: causal SDPA vs linear time.

Methods, all causal, batch 1, ``--heads`` heads, measured in the same process:

- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``, head width ``--dim``;
- ``bdh``: BDH-GPU's attention, ``causal_linear_attention(q, q, v, strict=True)`` chunked, with
  ``q = RoPE(ReLU(.))`` of ``--bdh-neurons`` features per head and one value sequence of width
  ``--dim`` shared by the heads (as in the model);
- ``delta``: the chunked (WY) delta rule, unit keys of width ``--dim``, ``beta`` in (0, 1);
- ``favor``: causal FAVOR+ (``favor_attention(is_causal=True)``), unit-sphere queries and keys of width
  ``--dim``, ``--favor-features`` positive orthogonal random features, tau 0.2.

Time is the median of ``--repeats`` forward+backward passes after one warm-up, in CPU seconds of
this process on the CPU (with one thread, the wall-clock of an idle core; other processes on a shared
machine do not inflate it) and in synchronised wall-clock seconds on CUDA; memory is the size of
the tensors autograd saves for the backward pass plus the output (distinct storages, counted through
``torch.autograd.graph.saved_tensors_hooks``), which is what grows with ``T``; on CUDA the peak of
``torch.cuda.max_memory_allocated`` is reported as well. A method whose pass exceeds
``--max-seconds`` is not run at longer ``T``. One thread by default.

    python benchmarks/sequence.py --json out/sequence.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchmark_common import add_benchmark_arguments, add_options, write_json

from manifoldnn.layers import favor_attention, rotary
from manifoldnn.layers.favor import orthogonal_random_features
from manifoldnn.manifolds import Euclidean, EuclideanGeometry
from manifoldnn.models import causal_linear_attention, delta_rule

EUCLIDEAN = EuclideanGeometry(Euclidean(ndim=1))

METHODS = ("sdpa", "bdh", "delta", "favor")


def make_inputs(method: str, length: int, args, device, dtype) -> tuple[torch.Tensor, ...]:
    # one stream per (seed, length): the inputs of a length do not depend on the others run
    g = torch.Generator(device="cpu").manual_seed(args.seed * 2**32 + length)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).to(device).requires_grad_()

    h, d = args.heads, args.dim
    if method in ("sdpa", "favor"):
        return randn(1, h, length, d), randn(1, h, length, d), randn(1, h, length, d)
    if method == "bdh":
        return randn(1, h, length, args.bdh_neurons), randn(1, 1, length, d)
    return (
        randn(1, h, length, d),
        randn(1, h, length, d),
        randn(1, h, length, d),
        randn(1, h, length),
    )


def run(method: str, inputs, chunk_size: int, omega: torch.Tensor | None = None) -> torch.Tensor:
    if method == "sdpa":
        return F.scaled_dot_product_attention(*inputs, is_causal=True)
    if method == "bdh":
        pre, v = inputs
        # the 1/sqrt(N) keeps the unnormalised scores of random inputs at a moderate size
        qk = rotary(torch.relu(pre), 0, 2.0**16) * pre.shape[-1] ** -0.5
        return causal_linear_attention(qk, qk, v, strict=True, chunk_size=chunk_size)
    if method == "favor":
        q, k, v = inputs
        unit_q, unit_k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        return favor_attention(
            EUCLIDEAN, unit_q, unit_k, v, tau=0.2, is_causal=True, features=omega,
            chunk_size=chunk_size, validate=False,
        )[0]  # fmt: skip
    q, k, v, beta = inputs
    key = F.normalize(k, dim=-1)
    return delta_rule(F.normalize(q, dim=-1), key, v, torch.sigmoid(beta), chunk_size=chunk_size)


def measure(method: str, length: int, args, device, dtype) -> dict:
    inputs = make_inputs(method, length, args, device, dtype)
    features = torch.Generator().manual_seed(args.seed)
    # the Euclidean geometry's inner-product features of a d-vector have d + 1 entries
    omega = orthogonal_random_features(
        args.favor_features, args.dim + 1, generator=features, device=device, dtype=dtype
    )
    # CPU time of this process on the CPU (one thread: the wall-clock of an idle core, and robust to
    # the other processes of a shared machine); wall-clock with synchronisation on CUDA
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = []
    saved_bytes = 0
    for repeat in range(args.repeats + 1):
        storages: dict[int, int] = {}
        # the storages are kept alive until the pass ends: a tensor saved by a graph branch the
        # output does not use is freed at once, and its memory, reused by a later saved tensor,
        # would otherwise make the keys (data pointers) collide and the count vary run to run
        alive: list = []

        def pack(tensor, storages=storages, alive=alive):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            alive.append(storage)
            return tensor

        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = clock()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = run(method, inputs, args.chunk_size, omega)
        out.backward(torch.ones_like(out))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if repeat:  # the first pass warms up
            times.append(clock() - t0)
        storages[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
        saved_bytes = sum(storages.values())
        for tensor in inputs:
            tensor.grad = None
        del out
    row = {"seconds": statistics.median(times), "saved_mb": saved_bytes / 2**20}
    if device.type == "cuda":
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2**p for p in range(9, 17)])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    add_options(
        parser,
        {
            "heads": 4,
            "dim": (64, "head width (keys and values)"),
            "bdh_neurons": (64, "BDH features per head"),
            "favor_features": 256,
            "chunk_size": 64,
            "max_seconds": 60.0,
            "threads": 1,
        },
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    add_benchmark_arguments(parser, repeats=3, device=True)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    results: dict[str, dict[str, dict]] = {method: {} for method in args.methods}
    stopped: set[str] = set()
    for length in args.lengths:
        for method in args.methods:
            if method in stopped:
                continue
            row = measure(method, length, args, device, dtype)
            results[method][str(length)] = row
            if row["seconds"] > args.max_seconds:
                stopped.add(method)

    header = f"{'T':>7}" + "".join(f"{m + ' s':>11}{m + ' MB':>11}" for m in args.methods)
    ratios = [m for m in args.methods if m != "sdpa"] if "sdpa" in args.methods else []
    header += "".join(f"{'sdpa/' + m + ' time':>17}{m + '/sdpa mem':>15}" for m in ratios)
    print(header)
    for length in args.lengths:
        key = str(length)
        line = f"{length:>7}"
        for method in args.methods:
            row = results[method].get(key)
            line += (
                f"{row['seconds']:>11.4f}{row['saved_mb']:>11.1f}" if row else f"{'-':>11}{'-':>11}"
            )
        for method in ratios:
            a, b = results["sdpa"].get(key), results[method].get(key)
            if a and b:
                b["speedup_over_sdpa"] = a["seconds"] / b["seconds"]
                b["memory_over_sdpa"] = b["saved_mb"] / a["saved_mb"]
                line += f"{b['speedup_over_sdpa']:>17.2f}{b['memory_over_sdpa']:>15.2f}"
            else:
                line += f"{'-':>17}{'-':>15}"
        print(line)
    report = {
        "results": results,
        "settings": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
        },
        "seconds": time.perf_counter() - start,
    }
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
