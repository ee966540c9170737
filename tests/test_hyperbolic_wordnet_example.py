"""Smoke test of examples/hyperbolic_wordnet.py on a balanced tree (no WordNet files needed)."""

import json

from examples.hyperbolic_wordnet import main


def test_hyperbolic_wordnet_runs_on_a_balanced_tree(tmp_path):
    report = main(
        ["--tree", "3,3", "--dims", "2", "--epochs", "5", "--burn-in", "2", "--no-gensim"]
        + ["--out", str(tmp_path), "--json", str(tmp_path / "r.json")]
    )
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert results == report["results"]
    assert set(results) == {
        f"manifoldnn_{m}_{d}d" for m in ("poincare", "lorentz", "euclidean") for d in (2,)
    }
    for scores in results.values():
        assert scores["mean_rank"] >= 1 and 0 < scores["map"] <= 1
    classification = report["classification"]
    assert classification["categories"] == 3
    assert 0 <= classification["hyperbolic_mlr_on_poincare"] <= 1
    assert (tmp_path / "hyperbolic_wordnet.png").exists()
