"""Smoke run of the foundation demo: it must produce its results table with sane values."""

import json

from examples.karcher_demo import main


def test_karcher_demo_runs(tmp_path):
    report = main(
        [
            "--sets",
            "4",
            "--points",
            "10",
            "--out",
            str(tmp_path),
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert results == report["results"]
    assert results["karcher_mean"]["max_gradient_norm"] <= 1e-10
    assert (
        results["karcher_mean"]["geodesic_error"]
        <= results["naive_basis_average"]["geodesic_error"]
    )
    assert results["riemannian_adam_eigenspace"]["projection_distance_to_eigh"] < 1e-4
    assert (tmp_path / "karcher_demo.png").exists()
