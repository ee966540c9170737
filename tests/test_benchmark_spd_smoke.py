"""Smoke test of benchmarks/spd_layers.py: a tiny run of its ``main``."""

import importlib.util
import json

import pytest

from benchmarks import spd_layers as bench

HAS_SPD_LEARN = importlib.util.find_spec("spd_learn") is not None


def test_benchmark_main_smoke(tmp_path):
    out = tmp_path / "spd.json"
    result = bench.main(
        ["--batch", "4", "--sizes", "8", "--repeats", "1", "--inner", "1"] + ["--json", str(out)]
    )
    assert set(result["results"]) == {"n=8 float32", "n=8 float64"}
    # where both are defined the two backward passes are the same formula: equal to rounding
    assert result["gradients"]["n=8"]["eigh"] <= 1e-10
    # ReEig and LogEig from one eigendecomposition: the same function and derivative
    assert result["gradients"]["n=8"]["fused"] <= 1e-10
    assert result["repeated"]["n=8"]["fused"] == 0
    # at repeated eigenvalues the gap-safe backward stays finite
    assert result["repeated"]["n=8"]["manifoldnn"] == 0
    assert json.loads(out.read_text())["results"].keys() == result["results"].keys()


@pytest.mark.skipif(not HAS_SPD_LEARN, reason="spd_learn (the benchmarks extra) is not installed")
def test_benchmark_times_and_checks_the_spd_learn_peer():
    result = bench.main(["--batch", "4", "--sizes", "8", "--repeats", "1", "--inner", "1"])
    row = result["results"]["n=8 float64"]
    assert row["speedup_vs_spd_learn"] > 0 and row["fused_speedup_vs_spd_learn"] > 0
    # the same function and, where eigenvalues are distinct, the same derivative
    assert result["gradients"]["n=8"]["spd_learn"] <= 1e-10
