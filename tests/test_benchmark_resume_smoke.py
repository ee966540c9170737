"""Smoke test of benchmarks/resume_drift.py on tiny settings."""

import json

from benchmarks import resume_drift


def test_resume_drift_runs_and_reports(tmp_path):
    report = resume_drift.main(
        ["--before", "2", "--after", "2", "--json", str(tmp_path / "r.json")]
    )
    assert json.loads((tmp_path / "r.json").read_text())["results"] == report["results"]
    for key, row in report["results"].items():
        assert set(row) == set(resume_drift.ROUTES)
        if key.startswith("manifoldnn.optim/"):
            assert all(value == 0.0 for value in row.values()), key
    assert all(value > 0.0 for value in report["results"]["geoopt/adam/float64"].values())
