"""Smoke test of benchmarks/karcher_mean.py: a tiny run of its ``main`` without the peers."""

import json

from benchmarks import karcher_mean as bench


def test_benchmark_main_smoke(tmp_path):
    out = tmp_path / "karcher.json"
    argv = ["--sets", "2", "--points", "5", "--repeats", "1", "--weights", "random"]
    argv += ["--skip", "geomstats", "pymanopt", "--json", str(out)]
    result = bench.main(argv)
    # the NumPy reference is a critical point to float64 rounding, and manifoldnn's mean agrees
    # with it to its tolerance (1e-10 on the gradient norm in float64, 1e-5 in float32)
    assert result["reference"]["grad_norm_max"] < 1e-13
    assert result["results"]["manifoldnn float64"]["err_max"] <= 1e-8
    assert result["results"]["manifoldnn float32"]["err_max"] <= 1e-4
    saved = json.loads(out.read_text())
    assert (
        saved["results"].keys()
        == result["results"].keys()
        == {
            "manifoldnn float64",
            "manifoldnn float32",
        }
    )
    assert saved["config"]["device"] == "cpu"
