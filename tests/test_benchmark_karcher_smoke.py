"""Smoke test of benchmarks/karcher_mean.py: a tiny run of its ``main`` without geomstats."""

import json

import numpy as np
import pytest

from benchmarks import karcher_mean as bench


def test_reference_mean_is_a_critical_point_and_basis_free():
    """The NumPy reference satisfies first-order optimality and ignores the points' bases."""
    _, points, weights = bench.make_problem(3, 6, 7, 2, 0.6, "random", seed=1)
    reference, grad_norm, _ = bench.reference_mean(points, weights)
    logs = bench._np_log(reference[:, None], points)
    assert np.abs(np.einsum("sk,skia->sia", weights, logs)).max() < 1e-13
    assert grad_norm.max() < 1e-13
    rotations, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 6, 2, 2)))
    rotated, _, _ = bench.reference_mean(points @ rotations, weights)
    assert bench.projector_error(rotated, reference).max() < 1e-12


def test_reference_log_exp_round_trip_and_distance():
    """``Exp_X(Log_X(Y))`` spans Y and ``||Log_X(Y)||`` is the norm of the principal angles."""
    rng = np.random.default_rng(3)
    x, _ = np.linalg.qr(rng.standard_normal((4, 9, 3)))
    y, _ = np.linalg.qr(x + 0.4 * rng.standard_normal((4, 9, 3)))
    log = bench._np_log(x, y)
    assert np.abs(np.swapaxes(x, -1, -2) @ log).max() < 1e-12
    assert bench.projector_error(bench._np_exp(x, log), y).max() < 1e-12
    cosines = np.linalg.svd(np.swapaxes(x, -1, -2) @ y, compute_uv=False)
    angles = np.arccos(np.clip(cosines, -1.0, 1.0))
    np.testing.assert_allclose(np.linalg.norm(log, axis=(-2, -1)), np.linalg.norm(angles, axis=-1))


@pytest.mark.parametrize("weights", ["uniform", "random"])
def test_benchmark_main_smoke(tmp_path, weights):
    out = tmp_path / "karcher.json"
    argv = ["--sets", "2", "--points", "5", "--repeats", "1", "--weights", weights]
    argv += ["--skip", "geomstats", "pymanopt", "--json", str(out)]
    result = bench.main(argv)
    manifoldnn = result["results"]["manifoldnn float64"]
    assert manifoldnn["err_max"] <= 1e-8
    assert result["results"]["manifoldnn float32"]["err_max"] <= 1e-4
    assert json.loads(out.read_text())["results"].keys() == result["results"].keys()


def test_benchmark_pymanopt_runs_on_one_set():
    """pymanopt's steepest descent (NumPy backend) reaches the reference on one small set."""
    pytest.importorskip("pymanopt")
    _, points, weights = bench.make_problem(1, 5, 6, 2, 0.4, "uniform", seed=4)
    reference, _, _ = bench.reference_mean(points, weights)
    result = bench.run_pymanopt(points, weights, reference, "SteepestDescent", tight=True)
    assert result["err_max"] < 1e-6
