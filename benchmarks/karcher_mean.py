"""Karcher (Fréchet) mean on the Grassmannian: manifoldnn against pymanopt and geomstats.

Problem (defaults): Gr(20, 4), 64 sets of 50 points each, scattered around a random centre (an
isotropic Gaussian tangent vector at the centre of expected norm 0.6, mapped by the exponential, so
the mean geodesic distance from the centre is about 0.6), uniform weights (``--weights random``
for per-set random weights). Every method gets the same float64 points.

Reported for each method: time per set and the error of its mean against a float64 reference,
``||M M^T - R R^T||_F`` (projector difference). The reference is computed here, independently of
manifoldnn's code path: the fixed-point iteration ``R <- Exp_R(sum_i w_i Log_R(Y_i))`` in NumPy
float64 with the SVD forms of the logarithm (Absil, Mahony & Sepulchre 2004, Acta Appl. Math. 80,
Sec. 3.8) and the exponential (Edelman, Arias & Smith 1998, Thm. 2.3), iterated until its gradient
norm stops decreasing (about 1e-15).

- manifoldnn: ``karcher_mean(Grassmann(), points)`` on the whole batch at once, float64 (default
  tolerance 1e-10 on the gradient norm) and, separately, float32 (default tolerance 1e-5).
- pymanopt: its ``Grassmann(n, p)`` manifold and the cost ``1/2 sum_i w_i d^2(X, Y_i)``, one set
  at a time, started at the first point of the set (as geomstats is), with pymanopt's default
  stopping rules and with tight ones (min_gradient_norm 1e-12, min_step_size 1e-16).
  SteepestDescent and ConjugateGradient: NumPy backend, cost and Euclidean gradient
  ``-sum_i w_i Log_X(Y_i)`` from pymanopt's own ``log``. TrustRegions (which needs a Hessian): the
  same cost written in PyTorch, Hessian-vector products by pymanopt's autodiff backend.
- geomstats 2.8: ``FrechetMean`` on ``Grassmannian(n, p)`` (points as projectors ``Y Y^T``), one
  set at a time, with its default settings (max_iter 32, epsilon 1e-4) and tight ones (max_iter
  500, epsilon 1e-10); its stopping rule is ``|mean log|^2 <= epsilon * dim`` (dim = p(n - p)), so
  even the tight one stops at a gradient norm near 1e-4. Also its ``method="adaptive"`` (tight) on
  the first ``--geomstats-adaptive-sets`` sets. Skipped, with a message, where it is not installed.

geomstats 2.8 imports only with numpy < 2.4, so it gets its own environment. Set it up, from the
repository root, with:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 && \
        .venv-bench/bin/pip install -e . -r benchmarks/requirements-geomstats.txt

Run (one thread for torch and for the BLAS/LAPACK behind NumPy; ``--threads`` changes both):

    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/karcher_mean.py
    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/karcher_mean.py --profile
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/karcher_mean.py     # without geomstats

Options: ``--sets``, ``--points``, ``--n``, ``--p``, ``--spread``, ``--weights``, ``--seed``,
``--repeats`` (manifoldnn timing repeats), ``--peer-sets`` (time the one-set-at-a-time peers on
the first K sets only), ``--skip`` (methods to leave out), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from benchmark_common import add_options, synchronize, write_json

from manifoldnn.manifolds import Grassmann, karcher_mean

# --------------------------------------------------------------------------- NumPy reference


def _np_log(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Grassmann logarithm ``Log_X(Y)`` by SVD, float64: ``(..., n, p)`` -> ``(..., n, p)``.

    ``T = (I - X X^T) Y (X^T Y)^{-1} = U diag(tan t) V^T`` and ``Log_X(Y) = U diag(t) V^T``
    (Absil, Mahony & Sepulchre 2004, Sec. 3.8).
    """
    xty = np.swapaxes(x, -1, -2) @ y
    residual = y - x @ xty
    # T = residual @ inv(xty), as the solution of xty^T T^T = residual^T
    t = np.swapaxes(
        np.linalg.solve(np.swapaxes(xty, -1, -2), np.swapaxes(residual, -1, -2)), -1, -2
    )
    u, s, vt = np.linalg.svd(t, full_matrices=False)
    return (u * np.arctan(s)[..., None, :]) @ vt


def _np_exp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Grassmann exponential by SVD, re-orthonormalised: ``(..., n, p)`` -> ``(..., n, p)``.

    With ``V = U diag(s) W^T``, ``Exp_X(V) = X W cos(s) W^T + U sin(s) W^T`` (Edelman, Arias &
    Smith 1998, Thm. 2.3).
    """
    u, s, wt = np.linalg.svd(v, full_matrices=False)
    w = np.swapaxes(wt, -1, -2)
    y = (x @ w) * np.cos(s)[..., None, :] @ wt + (u * np.sin(s)[..., None, :]) @ wt
    q, _ = np.linalg.qr(y)
    return q


def reference_mean(
    points: np.ndarray, weights: np.ndarray, *, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray, int]:
    """Float64 fixed point ``R <- Exp_R(sum_i w_i Log_R(Y_i))`` for every set at once.

    ``points (S, N, n, p)``, ``weights (S, N)`` summing to 1 -> means ``(S, n, p)``, final gradient
    norms ``(S,)`` and the number of iterations. Starts from the extrinsic mean (top-p eigenvectors
    of ``sum_i w_i Y_i Y_i^T``) and stops once the largest gradient norm has not decreased for 5
    iterations (the rounding floor) or is below 1e-15.
    """
    p = points.shape[-1]
    projector = np.einsum("sk,skia,skja->sij", weights, points, points)
    _, vectors = np.linalg.eigh(projector)
    mean = vectors[..., -p:]
    best, stalled, best_mean = math.inf, 0, mean
    best_norms = np.full(points.shape[0], math.inf)
    iterations = 0
    for _ in range(max_iter):
        iterations += 1
        grad = np.einsum("sk,skia->sia", weights, _np_log(mean[:, None], points))
        norms = np.linalg.norm(grad, axis=(-2, -1))
        worst = float(norms.max())
        if worst < best:
            best, stalled, best_mean, best_norms = worst, 0, mean, norms
        else:
            stalled += 1
        if stalled >= 5 or worst < 1e-15:
            break
        mean = _np_exp(mean, grad)
    return best_mean, best_norms, iterations


def projector_error(mean: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``||M M^T - R R^T||_F`` per set; ``mean`` is a basis ``(S, n, p)`` or a projector ``(S, n, n)``."""
    if mean.shape[-1] != mean.shape[-2]:
        mean = mean @ np.swapaxes(mean, -1, -2)
    diff = mean - reference @ np.swapaxes(reference, -1, -2)
    return np.linalg.norm(diff, axis=(-2, -1))


# --------------------------------------------------------------------------- data


def make_problem(
    sets: int, points: int, n: int, p: int, spread: float, weights: str, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres ``(S, n, p)``, points ``(S, N, n, p)`` and normalised weights ``(S, N)``, float64.

    Each point is ``Exp_C(V)`` with ``V`` the horizontal projection of a Gaussian ``n x p`` matrix
    scaled so that ``E ||V||_F`` is about ``spread`` (``||V||_F`` is the geodesic distance).
    """
    rng = np.random.default_rng(seed)
    centres, _ = np.linalg.qr(rng.standard_normal((sets, n, p)))
    z = rng.standard_normal((sets, points, n, p)) * (spread / math.sqrt((n - p) * p))
    c = centres[:, None]
    tangent = z - c @ (np.swapaxes(c, -1, -2) @ z)
    ys = _np_exp(np.broadcast_to(c, tangent.shape), tangent)
    if weights == "uniform":
        w = np.ones((sets, points))
    else:
        w = rng.uniform(0.1, 1.0, size=(sets, points))
    return centres, ys, w / w.sum(-1, keepdims=True)


# --------------------------------------------------------------------------- methods


def _summary(times: list[float], errors: np.ndarray, **extra) -> dict:
    return {
        "time_per_set_s": float(sum(times) / len(times)),
        "err_max": float(errors.max()),
        "err_median": float(np.median(errors)),
        **extra,
    }


def run_manifoldnn(
    points: np.ndarray,
    weights: np.ndarray,
    reference: np.ndarray,
    dtype,
    repeats: int,
    device: str = "cpu",
) -> dict:
    """Whole batch in one call on ``device``, ``repeats`` timed calls after one warm-up (each
    synchronised on CUDA); time = median / sets."""
    gr = Grassmann()
    x = torch.as_tensor(points, dtype=dtype, device=device)
    w = torch.as_tensor(weights, dtype=dtype, device=device)
    uniform = bool(np.all(weights == weights[:, :1]))

    def call():
        return karcher_mean(gr, x) if uniform else karcher_mean(gr, x, w)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
        synchronize()
        calls = []
        for _ in range(repeats):
            start = time.perf_counter()
            mean = call()
            synchronize()
            calls.append(time.perf_counter() - start)
    _, grad_norm, iterations = (
        karcher_mean(gr, x, return_info=True)
        if uniform
        else karcher_mean(gr, x, w, return_info=True)
    )
    sets = points.shape[0]
    errors = projector_error(mean.double().cpu().numpy(), reference)
    return {
        "time_per_set_s": statistics.median(calls) / sets,
        "time_per_set_best_s": min(calls) / sets,
        "time_per_set_all_s": [t / sets for t in calls],
        "err_max": float(errors.max()),
        "err_median": float(np.median(errors)),
        "iterations_max": int(iterations.max()),
        "iterations_mean": float(iterations.double().mean()),
        "grad_norm_max": float(grad_norm.max()),
        "warnings": sorted({str(c.message) for c in caught}),
    }


def _pymanopt_numpy_problem(pymanopt, manifold, ys: np.ndarray, w: np.ndarray):
    """Cost ``1/2 sum_i w_i ||Log_X(Y_i)||^2`` and its Euclidean gradient ``-sum_i w_i Log_X(Y_i)``
    with pymanopt's own (NumPy) Grassmann logarithm."""

    @pymanopt.function.numpy(manifold)
    def cost(x):
        logs = manifold.log(x, ys)
        return 0.5 * float(np.sum(w * np.sum(logs * logs, axis=(-2, -1))))

    @pymanopt.function.numpy(manifold)
    def gradient(x):
        return -np.einsum("k,kia->ia", w, manifold.log(x, ys))

    return pymanopt.Problem(manifold, cost, euclidean_gradient=gradient)


def _pymanopt_torch_problem(pymanopt, manifold, ys: np.ndarray, w: np.ndarray):
    """The same cost in PyTorch, ``1/2 sum_i w_i sum_k atan(sigma_k(T_i))^2`` with
    ``T_i = (I - X X^T) Y_i (X^T Y_i)^{-1}``, so that pymanopt's autodiff supplies the Hessian."""
    ys_t, w_t = torch.as_tensor(ys), torch.as_tensor(w)

    @pymanopt.function.pytorch(manifold)
    def cost(x):
        xty = x.transpose(-1, -2) @ ys_t
        t = torch.linalg.solve(xty, ys_t - x @ xty, left=False)
        return 0.5 * (w_t * torch.atan(torch.linalg.svdvals(t)).pow(2).sum(-1)).sum()

    return pymanopt.Problem(manifold, cost)


def run_pymanopt(
    points: np.ndarray, weights: np.ndarray, reference: np.ndarray, solver: str, tight: bool
) -> dict:
    """One set at a time, started from its first point (after one untimed warm-up run).

    SteepestDescent and ConjugateGradient use the NumPy backend with the closed-form gradient;
    TrustRegions needs a Hessian, so it uses the PyTorch backend (autodiff Hessian-vector products).
    """
    import pymanopt

    sets, _, n, p = points.shape
    manifold = pymanopt.manifolds.Grassmann(n, p)
    options = {"verbosity": 0}
    if tight:
        options.update(max_iterations=5000, min_gradient_norm=1e-12, min_step_size=1e-16)
        options.update(max_cost_evaluations=20000)
    optimizer = getattr(pymanopt.optimizers, solver)(**options)
    build = _pymanopt_torch_problem if solver == "TrustRegions" else _pymanopt_numpy_problem
    optimizer.run(build(pymanopt, manifold, points[0], weights[0]), initial_point=points[0, 0])
    times, means, iterations, reasons, grad_norms = [], [], [], [], []
    for s in range(sets):
        start = time.perf_counter()
        problem = build(pymanopt, manifold, points[s], weights[s])
        result = optimizer.run(problem, initial_point=points[s, 0].copy())
        times.append(time.perf_counter() - start)
        means.append(result.point)
        iterations.append(result.iterations)
        reasons.append(result.stopping_criterion)
        grad_norms.append(result.gradient_norm)
    errors = projector_error(np.stack(means), reference[:sets])
    return _summary(
        times,
        errors,
        backend="pytorch" if solver == "TrustRegions" else "numpy",
        iterations_max=int(max(iterations)),
        iterations_mean=float(np.mean(iterations)),
        grad_norm_max=float(max(grad_norms)),
        stopping=sorted({r.split(" after ")[0] for r in reasons}),
        settings=options,
    )


def run_geomstats(
    points: np.ndarray,
    weights: np.ndarray,
    reference: np.ndarray,
    tight: bool,
    method: str = "default",
) -> dict:
    """``FrechetMean(Grassmannian(n, p), method)`` one set at a time, points as projectors.

    geomstats starts at the first point of each set; one untimed warm-up fit comes first.
    """
    from geomstats.geometry.grassmannian import Grassmannian
    from geomstats.learning.frechet_mean import FrechetMean

    sets, _, n, p = points.shape
    space = Grassmannian(n, p)
    estimator = FrechetMean(space, method=method)
    if tight:
        estimator.set(max_iter=500, epsilon=1e-10)
    settings = {
        "method": estimator.method,
        "max_iter": estimator.optimizer.max_iter,
        "epsilon": estimator.optimizer.epsilon,
    }
    projectors = points @ np.swapaxes(points, -1, -2)
    uniform = bool(np.all(weights == weights[:, :1]))
    times, means = [], []
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # geomstats logs a warning for every set that hits max_iter
    try:
        estimator.fit(projectors[0], weights=None if uniform else weights[0])
        for s in range(sets):
            start = time.perf_counter()
            estimator.fit(projectors[s], weights=None if uniform else weights[s])
            times.append(time.perf_counter() - start)
            means.append(np.asarray(estimator.estimate_))
    finally:
        logger.setLevel(level)
    errors = projector_error(np.stack(means), reference[:sets])
    return _summary(times, errors, settings=settings)


# --------------------------------------------------------------------------- profile


def profile_manifoldnn(points: np.ndarray, weights: np.ndarray, rows: int = 18) -> None:
    """cProfile (Python functions) and torch.profiler (ATen operators) of one float64 batch call."""
    import cProfile
    import pstats

    gr = Grassmann()
    x = torch.as_tensor(points)
    w = torch.as_tensor(weights)
    karcher_mean(gr, x, w)
    profiler = cProfile.Profile()
    profiler.enable()
    karcher_mean(gr, x, w)
    profiler.disable()
    print("\n[profile] cProfile of one karcher_mean call (float64, whole batch), by own time:")
    pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("tottime").print_stats(rows)
    print("[profile] same, by cumulative time:")
    stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("cumulative")
    stats.print_stats(rows)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        karcher_mean(gr, x, w)
    print("[profile] torch.profiler, ATen operators by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# --------------------------------------------------------------------------- main


def _thread_limits(threads: int):
    """Limit torch and, where threadpoolctl is installed, NumPy's BLAS/LAPACK to ``threads``."""
    torch.set_num_threads(threads)
    if importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def _blas_threads() -> str:
    if importlib.util.find_spec("threadpoolctl") is None:
        return (
            f"unknown (threadpoolctl missing; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})"
        )
    from threadpoolctl import threadpool_info

    return ", ".join(f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info()) or "none"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(
        parser,
        {
            "sets": (64, "number of sets (batch size)"),
            "points": (50, "points per set"),
            "n": (20, "ambient dimension"),
            "p": (4, "subspace dimension"),
            "spread": (0.6, "mean distance to the centre"),
        },
    )
    parser.add_argument("--weights", choices=("uniform", "random"), default="uniform")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=7, help="timed manifoldnn batch calls")
    parser.add_argument(
        "--peer-sets", type=int, default=None, help="time pymanopt/geomstats on the first K sets"
    )
    parser.add_argument(
        "--geomstats-adaptive-sets",
        type=int,
        default=2,
        help="also time geomstats' adaptive FrechetMean (tight) on the first K sets (slow)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--device", default="cpu", help="manifoldnn's device (peers: the CPU)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("float32", "pymanopt", "geomstats", "geomstats-default"),
        help="methods to leave out",
    )
    parser.add_argument("--profile", action="store_true", help="profile manifoldnn's call")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.sets < 1 or args.points < 1 or not 1 <= args.p <= args.n:
        raise SystemExit("need --sets >= 1, --points >= 1 and 1 <= --p <= --n")
    previous = torch.get_num_threads()
    try:
        with _thread_limits(args.threads):
            return _run(args)
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    centres, points, weights = make_problem(
        args.sets, args.points, args.n, args.p, args.spread, args.weights, args.seed
    )
    distances = np.linalg.norm(_np_log(centres[:, None], points), axis=(-2, -1))
    start = time.perf_counter()
    reference, ref_grad, ref_iterations = reference_mean(points, weights)
    ref_time = time.perf_counter() - start
    print(
        f"Gr({args.n},{args.p}), {args.sets} sets x {args.points} points, {args.weights} weights, "
        f"seed {args.seed}; distance to the centre: mean {distances.mean():.3f}, "
        f"max {distances.max():.3f}"
    )
    print(
        f"threads: torch {torch.get_num_threads()}, BLAS/LAPACK {_blas_threads()}; "
        f"torch {torch.__version__}, numpy {np.__version__}"
    )
    print(
        f"reference (NumPy float64 fixed point, SVD log/exp): {ref_iterations} iterations, "
        f"max gradient norm {ref_grad.max():.1e}, {ref_time:.2f} s for all sets"
    )

    peer_sets = args.sets if args.peer_sets is None else max(1, min(args.peer_sets, args.sets))
    results: dict[str, dict] = {}
    results["manifoldnn float64"] = run_manifoldnn(
        points, weights, reference, torch.float64, args.repeats, args.device
    )
    if "float32" not in args.skip:
        results["manifoldnn float32"] = run_manifoldnn(
            points, weights, reference, torch.float32, args.repeats, args.device
        )
    peer_points, peer_weights = points[:peer_sets], weights[:peer_sets]
    notes = []
    if "pymanopt" in args.skip:
        pass
    elif importlib.util.find_spec("pymanopt") is None:
        notes.append("pymanopt skipped: not installed")
    else:
        for solver in ("SteepestDescent", "ConjugateGradient", "TrustRegions"):
            for tight in (False, True):
                name = f"pymanopt {solver} {'tight' if tight else 'default'}"
                print(f"running {name} on {peer_sets} sets ...", flush=True)
                results[name] = run_pymanopt(peer_points, peer_weights, reference, solver, tight)
    if "geomstats" in args.skip:
        pass
    elif importlib.util.find_spec("geomstats") is None:
        notes.append(
            "geomstats skipped: not installed in this environment (it needs numpy < 2.4); "
            "set up .venv-bench as the module docstring says"
        )
    else:
        os.environ.setdefault("GEOMSTATS_BACKEND", "numpy")
        for tight in (True, False):
            if not tight and "geomstats-default" in args.skip:
                continue
            name = f"geomstats FrechetMean {'tight' if tight else 'default'}"
            print(f"running {name} on {peer_sets} sets ...", flush=True)
            results[name] = run_geomstats(peer_points, peer_weights, reference, tight)
        adaptive_sets = min(args.geomstats_adaptive_sets, peer_sets)
        if adaptive_sets > 0:
            name = "geomstats FrechetMean adaptive tight"
            print(f"running {name} on {adaptive_sets} sets ...", flush=True)
            results[name] = run_geomstats(
                points[:adaptive_sets], weights[:adaptive_sets], reference, True, "adaptive"
            )
            results[name]["sets"] = adaptive_sets

    base = results["manifoldnn float64"]["time_per_set_s"]
    for result in results.values():
        result["time_ratio_to_manifoldnn_float64"] = result["time_per_set_s"] / base
    print(
        f"\ntime per set: manifoldnn = median of {args.repeats} batch calls / {args.sets}; "
        f"peers = mean over {peer_sets} sets run one at a time"
    )
    print(f"{'method':<36}{'ms / set':>10}{'x manifoldnn64':>16}{'err max':>11}{'err median':>12}")
    for name, result in results.items():
        print(
            f"{name:<36}{1e3 * result['time_per_set_s']:>10.3f}"
            f"{result['time_ratio_to_manifoldnn_float64']:>16.1f}"
            f"{result['err_max']:>11.1e}{result['err_median']:>12.1e}"
        )
    for name, result in results.items():
        details = {
            k: v
            for k, v in result.items()
            if k not in ("time_per_set_s", "err_max", "err_median", "time_per_set_all_s")
            and not k.startswith("time_ratio")
        }
        print(f"  {name}: {details}")
    for note in notes:
        print(note)
    target = {
        "manifoldnn float64 err_max <= 1e-8": results["manifoldnn float64"]["err_max"] <= 1e-8
    }
    for name, result in results.items():
        needed = (
            300 if name == "geomstats FrechetMean tight" else 30 if "pymanopt" in name else None
        )
        if needed is not None:
            target[f"{name} >= {needed}x"] = result["time_ratio_to_manifoldnn_float64"] >= needed
    print("target (per set >= 300x geomstats-tight, >= 30x pymanopt, error <= 1e-8):")
    for key, ok in target.items():
        print(f"  {key}: {'met' if ok else 'NOT met'}")

    if args.profile:
        profile_manifoldnn(points, weights)

    output = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "threads": {"torch": torch.get_num_threads(), "blas": _blas_threads()},
        "data": {"distance_mean": float(distances.mean()), "distance_max": float(distances.max())},
        "reference": {"iterations": ref_iterations, "grad_norm_max": float(ref_grad.max())},
        "results": results,
        "target": target,
        "notes": notes,
    }
    write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
