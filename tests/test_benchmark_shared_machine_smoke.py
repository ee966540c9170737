"""Smoke test of benchmarks/shared_machine.py: two tiny runs, no busy loop."""

import json

import pytest

from benchmarks import shared_machine


@pytest.mark.skipif(not hasattr(shared_machine.os, "getloadavg"), reason="needs os.getloadavg")
def test_shared_machine_runs_and_reports(tmp_path, monkeypatch):
    # run.sh's rule sees a busy machine (MANIFOLDNN_LOAD stands in for the measured busy cores)
    monkeypatch.setenv("MANIFOLDNN_LOAD", "99")
    path = tmp_path / "r.json"
    argv = ["--reps", "1", "--workloads", "import", "--configs", "default,runsh", "--no-busy"]
    report = shared_machine.main([*argv, "--json", str(path)])
    assert json.loads(path.read_text())["results"] == report["results"]
    assert set(report["results"]) == {"import/default", "import/runsh"}
    runs = {run["config"]: run for run in report["runs"]}
    assert runs["default"]["settings"] == {}
    settings = runs["runsh"]["settings"]
    assert settings["OMP_WAIT_POLICY"] == "PASSIVE"  # the example's rule: all cores, passive wait
    assert set(settings) == {"OMP_NUM_THREADS", "OMP_WAIT_POLICY"}
    assert int(settings["OMP_NUM_THREADS"]) >= 1
    assert report["results"]["import/default"]["median_ratio_default_over_this"] == 1.0
    with pytest.raises(SystemExit):
        shared_machine.main(["--configs", "fast"])


def test_run_sh_settings_on_an_idle_machine(monkeypatch):
    # no busy core: all cores, libgomp's default wait (OMP_WAIT_POLICY left unset)
    monkeypatch.setenv("MANIFOLDNN_LOAD", "0")
    settings = shared_machine.run_sh_settings()
    assert set(settings) == {"OMP_NUM_THREADS"}
    assert int(settings["OMP_NUM_THREADS"]) >= 1
