"""Smoke test of benchmarks/favor.py: a tiny run of its ``main``."""

import json

from benchmarks import favor as bench


def test_benchmark_main_smoke(tmp_path):
    out = tmp_path / "favor.json"
    argv = ["--features", "8", "32", "--taus", "2", "--dim", "8", "--length", "16", "--n", "4"]
    argv += ["--draws", "2", "--lengths", "32", "--time-features", "8", "--repeats", "1"]
    argv += ["--quiet", "--json", str(out)]
    report = bench.main(argv)
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(report["results"]))
    errors = report["results"]["error"]
    assert set(errors) == {
        "sphere self tau=2",
        "sphere cross tau=2",
        "sphere causal tau=2",
        "grassmann self tau=2",
    }
    for row in errors.values():
        assert set(row) == {"8", "32"}
        assert all(0 <= cell["mean"] < float("inf") for cell in row.values())
    timing = report["results"]["time"]["32"]
    assert timing["ratio"] == timing["exact"] / timing["favor"] > 0
