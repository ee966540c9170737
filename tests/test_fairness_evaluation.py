"""manifoldnn.fairness.evaluation against independent computations on planted data: WEAT against
its formula, a planted nonlinear bias (linear probe at chance, RBF probe finds it), k-means and
neighbour-bias correlation with known answers, the Gonen-Goldberg split, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifoldnn.fairness import evaluation

EPS = np.finfo(np.float64).eps


def chance_bound(n: int, sigmas: float = 4.0) -> float:
    """0.5 + ``sigmas`` standard errors of an accuracy at chance over ``n`` labels."""
    return 0.5 + sigmas * math.sqrt(0.25 / n)


# -------------------------------------------------------------------------------------- WEAT
def test_weat_matches_a_word_by_word_computation():
    rng = np.random.default_rng(0)
    vectors = {f"w{i}": rng.standard_normal(7) * rng.uniform(0.5, 2) for i in range(20)}
    names = list(vectors)
    x, y, a, b = names[:5], names[5:9], names[9:15], names[15:]

    def cos(u, v):
        return float(vectors[u] @ vectors[v]) / (
            np.linalg.norm(vectors[u]) * np.linalg.norm(vectors[v])
        )

    def s(w):  # Caliskan et al. 2017, eq. 1, with plain loops
        return sum(cos(w, t) for t in a) / len(a) - sum(cos(w, t) for t in b) / len(b)

    sx, sy = [s(w) for w in x], [s(w) for w in y]
    pooled = sx + sy
    mean = sum(pooled) / len(pooled)
    sd = math.sqrt(sum((v - mean) ** 2 for v in pooled) / (len(pooled) - 1))
    expected = (sum(sx) / len(sx) - sum(sy) / len(sy)) / sd
    assert abs(evaluation.weat_effect_size(vectors, x, y, a, b) - expected) <= 256 * EPS * abs(
        expected
    )
    result = evaluation.weat_test(vectors, "t", x + ["absent"], y, a, b, min_words=5)
    assert result.found == (5, 4, 6, 5) and result.sizes == (6, 4, 6, 5)
    assert result.degenerate  # y has 4 < 5 words found
    assert not evaluation.weat_test(vectors, "t", x, y, a, b, min_words=4).degenerate


def test_weat_summary_averages_only_non_degenerate_tests():
    from types import SimpleNamespace

    rng = np.random.default_rng(1)
    vectors = {f"w{i}": rng.standard_normal(5) for i in range(40)}
    n = list(vectors)
    full = SimpleNamespace(name="full", x=n[0:8], y=n[8:16], a=n[16:24], b=n[24:32])
    small = SimpleNamespace(name="small", x=n[0:2], y=n[8:16], a=n[16:24], b=n[24:32])
    empty = SimpleNamespace(name="empty", x=["nope"], y=n[8:16], a=n[16:24], b=n[24:32])
    summary = evaluation.weat_summary(vectors, [full, small, empty], min_words=8)
    assert summary["averaged"] == ["full"] and summary["degenerate"] == ["small", "empty"]
    assert summary["mean_abs"] == abs(evaluation.weat_effect_size(vectors, *n_sets(full)))
    assert math.isnan(summary["tests"]["empty"].effect_size)
    assert summary["tests"]["empty"].found == (0, 8, 8, 8)


def n_sets(test):
    return test.x, test.y, test.a, test.b


# ----------------------------------------------------------------------------------- probes
def test_planted_nonlinear_bias_is_missed_by_the_linear_probe_and_found_by_the_rbf_probe():
    # Labels by |x_1| > t (t the median of |N(0, 1)|): symmetric in x_1, so every linear rule
    # has expected accuracy 1/2, while the labels are a deterministic function of the vector.
    rng = np.random.default_rng(2)
    n = 600
    X = rng.standard_normal((n, 5))
    labels = np.where(np.abs(X[:, 0]) > 0.6745, 1, -1)
    linear = evaluation.probe_accuracy(X, labels, "linear", seeds=(0, 1))
    rbf = evaluation.probe_accuracy(X, labels, "rbf", seeds=(0, 1))
    assert linear.scores.shape == (2, 5)
    assert linear.mean <= chance_bound(n)
    assert rbf.mean >= 0.5 + 10 * math.sqrt(0.25 / n)  # ten standard errors above chance
    assert rbf.mean > linear.mean + 0.2


def test_probe_rejects_bad_kind_and_too_few_labels():
    X = np.random.default_rng(3).standard_normal((20, 3))
    with pytest.raises(ValueError, match="kind"):
        evaluation.probe_accuracy(X, np.arange(20) % 2, "tree")
    with pytest.raises(ValueError, match="n_splits"):
        evaluation.probe_accuracy(X, np.r_[np.ones(18), np.zeros(2)], "linear")


# ----------------------------------------------------------------- Gonen & Goldberg's tests
def two_clusters(n_per_side: int, dim: int = 10, spread: float = 0.05, seed: int = 4):
    rng = np.random.default_rng(seed)
    centre = np.eye(dim)[0]
    male = centre + spread * rng.standard_normal((n_per_side, dim))
    female = -centre + spread * rng.standard_normal((n_per_side, dim))
    return np.concatenate([male, female]), np.r_[np.ones(n_per_side), -np.ones(n_per_side)]


def test_kmeans_accuracy_on_planted_clusters():
    X, labels = two_clusters(60)
    assert evaluation.kmeans_bias_accuracy(X, labels) == 1.0
    assert evaluation.kmeans_bias_accuracy(X, -labels) == 1.0  # the better of the two matchings
    unrelated = np.where(np.random.default_rng(5).random(120) < 0.5, 1, -1)
    assert evaluation.kmeans_bias_accuracy(X, unrelated) <= chance_bound(120)


def test_neighbour_bias_correlation_on_planted_clusters():
    # Two tight clusters of 150 and k = 100 < 149: each word's neighbours are its own cluster,
    # so the share of male words is 1 (male) or 0 (female) and r = corr(bias, sign(bias)).
    X, labels = two_clusters(150)
    rng = np.random.default_rng(6)
    bias = labels * rng.uniform(0.1, 1.0, 300)
    expected = np.corrcoef(bias, (labels > 0).astype(float))[0, 1]
    value = evaluation.neighbour_bias_correlation(X, bias, k=100)
    assert abs(value - expected) <= 64 * EPS
    # Vectors unrelated to the bias: the shares carry no bias signal.
    noise = rng.standard_normal((300, 10))
    assert abs(evaluation.neighbour_bias_correlation(noise, bias, k=100)) <= 4 / math.sqrt(300)


def test_gender_bias_split_is_the_ranked_selection_and_disjoint():
    rng = np.random.default_rng(7)
    dim, n = 6, 400
    he, she = np.eye(dim)[0], np.eye(dim)[1]
    vectors = rng.standard_normal((n, dim))
    words = ["".join(chr(97 + (i // 26**k) % 26) for k in range(3)) for i in range(n)]
    words[:6] = ["he", "she", "Upper", "with_underscore", "queen", "abc1"]
    vectors[0], vectors[1] = he, she
    split = evaluation.gender_bias_split(
        words, vectors, {"he", "she", "QUEEN"}, n_eval=20, n_fit=50
    )
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    bias = unit[:, 0] - unit[:, 1]
    assert np.abs(split.bias - bias).max() <= 8 * EPS
    assert np.abs(evaluation.gender_bias(vectors, words) - bias).max() <= 8 * EPS
    eligible = np.arange(6, n)  # the six special words are excluded
    order = eligible[np.argsort(-bias[eligible])]
    assert split.eval_index.tolist() == order[:20].tolist() + order[::-1][:20].tolist()
    assert split.eval_labels.tolist() == [1] * 20 + [-1] * 20
    assert set(split.fit_index[:50]) == set(order[20:70])
    assert set(split.fit_index[50:100]) == set(order[::-1][20:70])
    assert set(split.fit_index) & set(split.eval_index) == set()
    neutral = split.fit_index[100:]
    assert len(neutral) == 50 and (split.fit_labels[100:] == 0).all()
    rest = np.setdiff1d(eligible, split.fit_index[:100].tolist() + split.eval_index.tolist())
    assert np.abs(bias[neutral]).max() <= np.sort(np.abs(bias[rest]))[49] + 8 * EPS


# ---------------------------------------------------------------------------------- meaning
def test_similarity_and_neighbour_overlap():
    rng = np.random.default_rng(8)
    vectors = {f"w{i}": rng.standard_normal(4) for i in range(10)}

    def cos(u, v):
        a, b = vectors[u], vectors[v]
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    pairs = [(f"w{i}", f"w{i + 1}", math.exp(cos(f"w{i}", f"w{i + 1}"))) for i in range(9)]
    assert evaluation.similarity_spearman(vectors, pairs + [("w0", "x", 1.0)]) == pytest.approx(
        (1.0, 9)
    )
    with pytest.raises(ValueError, match="pairs"):
        evaluation.similarity_spearman(vectors, [("x", "y", 1.0)])
    X = rng.standard_normal((50, 6))
    rotation = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    assert evaluation.neighbour_overlap(X, 2.0 * X @ rotation, k=5) == 1.0  # cosines unchanged
    assert evaluation.neighbour_overlap(X, X, k=5, jaccard=True) == 1.0
    # Brute force: the overlap of the 3-NN sets of word 0 under an independent second space.
    Y = rng.standard_normal((50, 6))

    def knn(M, i, k):
        unit = M / np.linalg.norm(M, axis=1, keepdims=True)
        sims = unit @ unit[i]
        return set([j for j in np.argsort(-sims) if j != i][:k])

    shared = len(knn(X, 0, 3) & knn(Y, 0, 3))
    assert evaluation.neighbour_overlap(X, Y, k=3, query=[0]) == pytest.approx(shared / 3)
    assert evaluation.neighbour_overlap(X, Y, k=3, query=[0], jaccard=True) == pytest.approx(
        shared / (6 - shared)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_stereotype_gap_closed_form(dtype, device):
    # Query 0 puts mass 0.6 on the male key, 0.2 on the female one; query 1 the reverse.
    weights = torch.tensor([[0.6, 0.2, 0.2], [0.1, 0.3, 0.6]], dtype=dtype, device=device)
    gap, corr = evaluation.attention_stereotype_gap(weights, [0], [1], [0.5, -0.2])
    r0, r1 = math.log(0.6 / 0.2), math.log(0.1 / 0.3)
    tol = 8 * torch.finfo(dtype).eps
    assert abs(gap - (r0 - r1) / 2) <= tol * 4
    assert abs(corr - 1.0) <= 1e-12  # two points: a perfect correlation
    with pytest.raises(ValueError, match="NaN"):
        evaluation.attention_stereotype_gap(weights * float("nan"), [0], [1], [0.5, -0.2])


# -------------------------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_problem():
    words = ["he", "she", "doctor"]
    vectors = np.eye(3)
    with pytest.raises(ValueError, match="words has 2 entries"):
        evaluation.gender_bias(vectors, words[:2])
    with pytest.raises(ValueError, match="NaN"):
        evaluation.gender_bias(np.where(np.eye(3) == 1, np.nan, 0.0), words)
    with pytest.raises(ValueError, match="anchor word 'he'"):
        evaluation.gender_bias(vectors, ["a", "she", "b"])
    vocab = {"a": np.ones(2), "b": np.array([1.0, -1.0])}
    with pytest.raises(ValueError, match="no word of set x"):
        evaluation.weat_effect_size(vocab, ["missing"], ["a"], ["a"], ["b"])
    with pytest.raises(ValueError, match="NaN"):
        evaluation.weat_effect_size(
            {"a": np.array([np.nan, 1.0]), "b": np.ones(2)}, "a", "b", "a", "b"
        )
    with pytest.raises(ValueError, match="NaN"):
        evaluation.kmeans_bias_accuracy(np.full((4, 2), np.nan), [1, 1, -1, -1])
    with pytest.raises(ValueError, match="labels must have shape"):
        evaluation.kmeans_bias_accuracy(np.eye(4), [1, -1])
    with pytest.raises(ValueError, match="k=5"):
        evaluation.neighbour_bias_correlation(np.eye(4), np.ones(4), k=5)
    with pytest.raises(ValueError, match="rows"):
        evaluation.neighbour_overlap(np.eye(4), np.eye(3), k=1)
    with pytest.raises(ValueError, match="candidate words"):
        evaluation.gender_bias_split(words, vectors, set(), n_eval=1, n_fit=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, torch.float32])
def test_inputs_of_any_float_type_give_the_float64_figures(dtype, device):
    # Inputs are promoted to float64 once; the only error left is rounding the input to dtype.
    X, labels = two_clusters(30, seed=9)
    bias = labels * np.linspace(0.1, 1.0, 60)
    if isinstance(dtype, torch.dtype):
        cast = torch.as_tensor(X, dtype=dtype, device=device)
        rounded = cast.cpu().double().numpy()
    else:
        cast = X.astype(dtype)
        rounded = np.asarray(cast, dtype=np.float64)
    vectors = {f"w{i}": row for i, row in enumerate(cast)}
    reference = {f"w{i}": row for i, row in enumerate(rounded)}
    sets = ([f"w{i}" for i in range(0, 5)], [f"w{i}" for i in range(30, 35)])
    attributes = ([f"w{i}" for i in range(5, 10)], [f"w{i}" for i in range(35, 40)])
    assert evaluation.weat_effect_size(vectors, *sets, *attributes) == pytest.approx(
        evaluation.weat_effect_size(reference, *sets, *attributes), abs=64 * EPS
    )
    assert evaluation.neighbour_bias_correlation(cast, bias, k=10) == pytest.approx(
        evaluation.neighbour_bias_correlation(rounded, bias, k=10), abs=64 * EPS
    )
    assert evaluation.kmeans_bias_accuracy(cast, labels) == evaluation.kmeans_bias_accuracy(
        rounded, labels
    )
