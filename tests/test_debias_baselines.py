"""The baseline debiasing transformers of manifoldnn.fairness.debias on planted data: INLP keeps
removing directions every round, LEACE leaves no linear signal, hard debiasing neutralises and
equalises; all transform unseen rows and are deterministic."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from manifoldnn.fairness import (
    INLP,
    LEACE,
    HardDebias,
    gender_direction,
    inlp_projection,
    probe_accuracy,
)

EPS = np.finfo(np.float64).eps


def planted(n_per_class: int = 200, dim: int = 12, seed: int = 0):
    """Unit vectors with a linear gender signal along e0 (+1 male, -1 female, 0 neutral)."""
    rng = np.random.default_rng(seed)
    z = np.repeat([1, -1, 0], n_per_class)
    X = rng.standard_normal((len(z), dim)) + 1.5 * z[:, None] * np.eye(dim)[0]
    return X / np.linalg.norm(X, axis=1, keepdims=True), z


def test_inlp_rank_grows_every_round_and_removes_the_signal():
    X, z = planted(dim=40)  # 5 rounds remove at most 15 of the 40 dimensions
    inlp = INLP(n_rounds=5, random_state=0).fit(X, z)
    # three classes, one-vs-rest: up to three new directions a round, at least one
    assert all(b > a for a, b in zip([0] + inlp.ranks_[:-1], inlp.ranks_))
    assert inlp.ranks_[0] == 3
    P = inlp.projection()
    stacked = np.concatenate(inlp.directions_)
    assert np.abs(stacked @ P).max() <= 64 * EPS * np.abs(stacked).max()
    assert inlp.accuracies_[0] > 0.6 and inlp.accuracies_[-1] < inlp.accuracies_[0]
    out = inlp.transform(X)
    gendered = z != 0
    assert probe_accuracy(out[gendered], z[gendered], "linear", seeds=(0,)).mean <= 0.5 + 4 * (
        math.sqrt(0.25 / gendered.sum())
    )
    # unseen rows and fewer rounds; deterministic given random_state
    unseen, _ = planted(dim=40, seed=1)
    assert np.allclose(
        inlp.transform(unseen, 2), _unit(unseen @ inlp_projection(inlp.directions_[:2]))
    )
    again = INLP(n_rounds=5, random_state=0).fit(X, z)
    assert np.array_equal(again.transform(unseen), inlp.transform(unseen))


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_inlp_projection_is_an_orthogonal_projection():
    rng = np.random.default_rng(4)
    directions = [rng.standard_normal((2, 6)), rng.standard_normal((1, 6))]
    P = inlp_projection(directions)
    assert np.abs(P - P.T).max() <= 16 * EPS
    assert np.abs(P @ P - P).max() <= 16 * EPS
    assert round(np.trace(P)) == 3


def test_leace_leaves_no_linear_signal():
    pytest.importorskip("concept_erasure", reason="LEACE needs the concept-erasure package")
    X, z = planted(seed=2)
    leace = LEACE(normalize=False).fit(X, z)
    out = leace.transform(X)
    # LEACE (Belrose et al. 2023) makes the class-conditional means equal: the
    # cross-covariance with the one-hot concept vanishes.
    means = np.stack([out[z == c].mean(0) for c in (-1, 0, 1)])
    assert np.abs(means - means.mean(0)).max() <= 1e3 * EPS
    gendered = z != 0
    normalised = LEACE().fit(X, z).transform(X)
    assert probe_accuracy(normalised[gendered], z[gendered], "linear").mean <= 0.5 + 4 * (
        math.sqrt(0.25 / gendered.sum())
    )
    unseen, _ = planted(seed=3)
    assert leace.transform(unseen).shape == unseen.shape


def test_hard_debias_neutralises_unseen_rows_and_equalises_named_pairs():
    rng = np.random.default_rng(5)
    dim = 6
    words = ["he", "she", "man", "woman", "doctor", "nurse"]
    vectors = rng.standard_normal((6, dim))
    vectors[0], vectors[1] = vectors[0] + 2 * np.eye(dim)[0], vectors[0] - 2 * np.eye(dim)[0]
    vectors = _unit(vectors)
    hard = HardDebias(
        words, vectors, [("she", "he"), ("woman", "man")], [("he", "she")], {"he", "she"}
    ).fit(vectors)
    g = gender_direction(dict(zip(words, vectors)), [("she", "he"), ("woman", "man")])
    assert np.abs(hard.direction_ - g).max() == 0.0 and g @ (vectors[0] - vectors[1]) > 0
    unseen = _unit(rng.standard_normal((7, dim)))
    out = hard.transform(unseen)
    assert np.abs(out @ g).max() <= 16 * EPS
    assert np.abs(np.linalg.norm(out, axis=1) - 1).max() <= 16 * EPS
    named = hard.transform(vectors, words)
    assert np.abs(named[2:] @ g).max() <= 16 * EPS  # neutral words
    assert abs(named[0] @ g + named[1] @ g) <= 16 * EPS  # the equalised pair
    half = HardDebias(words, vectors, [("she", "he")], [], set(), strength=0.5).fit(vectors)
    assert np.all(np.abs(half.transform(unseen) @ half.direction_) > 0)


def test_bad_input():
    pytest.importorskip("concept_erasure", reason="LEACE needs the concept-erasure package")
    X, z = planted(20)
    with pytest.raises(ValueError, match="z must have shape"):
        INLP(2).fit(X, z[:-1])
    with pytest.raises(ValueError, match="NaN"):
        LEACE().fit(np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), z)
    with pytest.raises(ValueError, match="n_rounds"):
        INLP(0).fit(X, z)
    leace = LEACE().fit(X, z)
    with pytest.raises(ValueError, match="columns"):
        leace.transform(X[:, :3])
    with pytest.raises(ValueError, match="definitional pair"):
        HardDebias(["a", "b"], np.eye(2), [("x", "y")], [], set()).fit(np.eye(2))
    with pytest.raises(ValueError, match="strength"):
        HardDebias(["a", "b"], np.eye(2), [("a", "b")], [], set(), strength=2).fit(np.eye(2))


def test_leace_without_concept_erasure_names_the_extra(monkeypatch):
    """concept-erasure is optional: ``import manifoldnn.fairness`` works without it and LEACE's
    fit says which extra installs it."""
    monkeypatch.setitem(sys.modules, "concept_erasure", None)  # as if not installed
    X, z = planted(20)
    with pytest.raises(ImportError, match=r"manifoldnn\[fairness\]"):
        LEACE().fit(X, z)


def test_transforms_return_the_input_float_dtype():
    X, z = planted(50)
    words = ["he", "she"] + [f"w{i}" for i in range(len(X) - 2)]
    for model in (INLP(2), HardDebias(words, X, [("he", "she")], [], [])):
        model.fit(X, z)
        assert model.transform(X.astype(np.float32)).dtype == np.float32
        assert model.transform(X).dtype == np.float64
