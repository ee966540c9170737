"""Smoke test of benchmarks/spd_layers.py: a tiny run of its ``main``."""

import json

from benchmarks import spd_layers as bench


def test_benchmark_main_smoke(tmp_path):
    out = tmp_path / "spd.json"
    result = bench.main(
        ["--batch", "4", "--sizes", "8", "--repeats", "1", "--inner", "1"] + ["--json", str(out)]
    )
    assert set(result["results"]) == {"n=8 float32", "n=8 float64"}
    # where both are defined the two backward passes are the same formula: equal to rounding
    assert result["gradients"]["n=8"] <= 1e-10
    # at repeated eigenvalues the gap-safe backward stays finite
    assert result["repeated"]["n=8"]["manifoldnn"] == 0
    assert json.loads(out.read_text())["results"].keys() == result["results"].keys()
