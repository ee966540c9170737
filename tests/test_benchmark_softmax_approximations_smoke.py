"""Smoke test of benchmarks/softmax_approximations.py: a tiny run of its ``main``."""

import json

from benchmarks import softmax_approximations as bench


def test_benchmark_main_smoke(tmp_path):
    out = tmp_path / "softmax.json"
    argv = ["--taus", "2", "--dim", "8", "--length", "24", "--features", "16", "--draws", "2"]
    argv += ["--codes", "4", "--lloyd", "2", "--block", "8", "--chunk", "8", "--heads", "2"]
    argv += ["--codes-time", "8", "--lengths", "32", "--repeats", "1", "--json", str(out)]
    report = bench.main(argv)
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(report["results"]))
    errors = report["results"]["error"]
    assert set(errors) == {"self tau=2", "cross tau=2", "causal tau=2"}
    for row in errors.values():
        assert set(row) == {"favor+", "favor++", "vq"}
        assert all(0 <= cell["mean"] < float("inf") for cell in row.values())
    timing = report["results"]["time"]["32"]
    assert set(timing) == {"sdpa", "vq", "favor+", "favor++"}
    for cell in timing.values():
        assert cell["speedup_vs_sdpa"] == timing["sdpa"]["seconds"] / cell["seconds"] > 0
        ratio = timing["sdpa"]["train_seconds"] / cell["train_seconds"]
        assert cell["train_speedup_vs_sdpa"] == ratio > 0
