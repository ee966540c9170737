"""Smoke test of benchmarks/shared_machine.py: two tiny runs, no busy loop."""

import json

import pytest

from benchmarks import shared_machine


@pytest.mark.skipif(not hasattr(shared_machine.os, "getloadavg"), reason="needs os.getloadavg")
def test_shared_machine_runs_and_reports(tmp_path):
    path = tmp_path / "r.json"
    argv = ["--reps", "1", "--workloads", "import", "--configs", "default,runsh", "--no-busy"]
    report = shared_machine.main([*argv, "--json", str(path)])
    assert json.loads(path.read_text())["results"] == report["results"]
    assert set(report["results"]) == {"import/default", "import/runsh"}
    runs = {run["config"]: run for run in report["runs"]}
    assert runs["default"]["settings"] == {}
    assert runs["runsh"]["settings"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert report["results"]["import/default"]["median_ratio_default_over_this"] == 1.0
    with pytest.raises(SystemExit):
        shared_machine.main(["--configs", "fast"])
