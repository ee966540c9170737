"""GrassmannKMeans (batched torch) against a NumPy implementation of the same algorithm.

Both run Lloyd's iteration on the same subspaces from the same initial centres: assignment by the
projection metric d^2 = p - ||X^T Y||_F^2, centres by the extrinsic mean (top-p eigenvectors of the
cluster's mean projector, numpy.linalg.eigh in the reference). The reference is a straightforward
per-cluster NumPy loop, as one would write it with pymanopt's conventions (points as (n, p) arrays).
Prints the time ratio and whether the labels agree.

    python benchmarks/clustering.py --points 4000 --n 30 --p 4 --clusters 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from benchmark_common import add_benchmark_arguments, add_options, write_json

from manifoldnn.clustering import GrassmannKMeans, adjusted_rand_index
from manifoldnn.linalg import qr_positive


def numpy_grassmann_kmeans(points: np.ndarray, centres: np.ndarray, max_iter: int, tol: float):
    """Lloyd's iteration with NumPy: ``points`` ``(N, n, p)``, ``centres`` ``(K, n, p)``."""
    p = points.shape[-1]
    previous = np.inf
    for _ in range(max_iter):
        squared = np.stack(
            [p - np.einsum("inp,nq->ipq", points, c).__pow__(2).sum((1, 2)) for c in centres], 1
        )
        labels = squared.argmin(1)
        inertia = squared.min(1).sum()
        if previous - inertia <= tol * abs(inertia):
            break
        previous = inertia
        for k in range(centres.shape[0]):
            members = points[labels == k]
            if len(members):
                projector = np.einsum("inp,imp->nm", members, members) / len(members)
                centres[k] = np.linalg.eigh(projector)[1][:, -p:]
    squared = np.stack(
        [p - np.einsum("inp,nq->ipq", points, c).__pow__(2).sum((1, 2)) for c in centres], 1
    )
    return squared.argmin(1), centres


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser, {"points": 4000, "n": 30, "p": 4, "clusters": 10})
    add_benchmark_arguments(parser, repeats=None)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(args.seed)
    dtype = torch.float64
    centres = qr_positive(
        torch.randn(args.clusters, args.n, args.p, generator=generator, dtype=dtype)
    )
    assignment = torch.randint(args.clusters, (args.points,), generator=generator)
    noise = 0.3 * torch.randn(args.points, args.n, args.p, generator=generator, dtype=dtype)
    points = qr_positive(centres[assignment] + noise)
    initial = points[torch.randperm(args.points, generator=generator)[: args.clusters]]

    start = time.perf_counter()
    ours = GrassmannKMeans(args.clusters, init=initial, max_iter=100, tol=1e-10).fit(points)
    torch_seconds = time.perf_counter() - start

    start = time.perf_counter()
    reference_labels, _ = numpy_grassmann_kmeans(
        points.numpy(), initial.numpy().copy(), max_iter=100, tol=1e-10
    )
    numpy_seconds = time.perf_counter() - start

    same = bool(np.array_equal(ours.labels_, reference_labels))
    result = {
        "torch_seconds": torch_seconds,
        "numpy_seconds": numpy_seconds,
        "speedup": numpy_seconds / torch_seconds,
        "same_labels": same,
        "ari_to_truth": adjusted_rand_index(assignment.numpy(), ours.labels_),
    }
    print(
        f"GrassmannKMeans on {args.points} points of Gr({args.n}, {args.p}), K={args.clusters}, "
        f"same initial centres ({torch.get_num_threads()} torch threads)"
    )
    print(f"  torch (batched)    {torch_seconds:8.3f} s   {ours.n_iter_} iterations")
    print(f"  NumPy reference    {numpy_seconds:8.3f} s")
    print(f"  ratio NumPy/torch  {result['speedup']:8.2f}x   identical labels: {same}")
    print(f"  ARI to the planted clusters: {result['ari_to_truth']:.3f}")
    write_json(args.json, {"results": {"GrassmannKMeans": result}, "config": vars(args)})
    return result


if __name__ == "__main__":
    main()
