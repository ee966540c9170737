r"""Measuring gender bias in word vectors the way the field measures it.

The selection and the two geometric tests are Gonen & Goldberg (2019), "Lipstick on a Pig:
Debiasing Methods Cover up Systematic Gender Biases in Word Embeddings But do not Remove Them"
(NAACL); WEAT is Caliskan, Bryson & Narayanan (2017), "Semantics derived automatically from language
corpora contain human-like biases" (Science); the probes follow Gonen & Goldberg ("classifying previously
biased words") and Ravfogel et al. (2020, "Null It Out", ACL: linear and nonlinear probes after
INLP).

Vectors are numpy arrays ``(n, d)`` (a torch tensor is accepted and copied to the host); words are
looked up by exact string. scikit-learn is imported inside the functions that need it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "GenderBiasSplit",
    "gender_bias",
    "gender_bias_split",
    "WeatResult",
    "weat_effect_size",
    "weat_test",
    "weat_summary",
    "kmeans_bias_accuracy",
    "neighbour_bias_correlation",
    "ProbeResult",
    "probe_accuracy",
    "similarity_spearman",
    "neighbour_overlap",
    "attention_stereotype_gap",
]

_ALPHABETIC = re.compile(r"^[a-z]+$")


# ------------------------------------------------------------------------------ validation
def _as_matrix(vectors: object, name: str = "vectors") -> np.ndarray:
    """``vectors`` as a finite float64 ``(n, d)`` array, or a ``ValueError`` naming ``name``."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().double().numpy()
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n, d), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or inf ({int((~np.isfinite(array)).sum())} entries)")
    return array


def _as_labels(labels: object, n: int, name: str = "labels") -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the vectors, got {array.shape}")
    return array


def _unit_rows(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(
            f"vectors has {int((norms == 0).sum())} zero rows: no direction to compare"
        )
    return array / norms


def _vector_of(vectors: Mapping[str, object], word: str) -> np.ndarray:
    value = vectors[word]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    value = np.asarray(value, dtype=np.float64)
    if not np.isfinite(value).all():
        raise ValueError(f"the vector of {word!r} contains NaN or inf")
    return value


# ---------------------------------------------------------------------------- the word split
@dataclass(frozen=True)
class GenderBiasSplit:
    """Evaluation and fitting words of :func:`gender_bias_split` (indices into ``words``).

    Attributes:
        bias: ``(N,)`` original bias ``cos(w, he) - cos(w, she)`` of every word.
        candidates: indices of the words eligible for selection (lower-case alphabetic, not
            gender-specific), sorted by decreasing bias.
        eval_index: the ``2 * n_eval`` most biased candidates.
        eval_labels: their labels, ``+1`` male-biased, ``-1`` female-biased.
        fit_index: the next ``n_fit`` candidates per side and the ``n_neutral`` candidates of
            smallest ``|bias|``.
        fit_labels: their labels, ``+1`` / ``-1`` by side and ``0`` for the neutral ones.
    """

    bias: np.ndarray
    candidates: np.ndarray
    eval_index: np.ndarray
    eval_labels: np.ndarray
    fit_index: np.ndarray
    fit_labels: np.ndarray
    sizes: dict[str, int] = field(default_factory=dict)


def gender_bias(vectors: object, words: Sequence[str], male: str = "he", female: str = "she"):
    r"""Bias by projection of Gonen & Goldberg (2019): :math:`\cos(w, he) - \cos(w, she)`.

    Args:
        vectors: ``(N, d)`` word vectors (any norm).
        words: the ``N`` words.
        male: the male anchor word. Default: ``"he"``.
        female: the female anchor word. Default: ``"she"``.

    Returns:
        ``(N,)`` float64 bias, positive = male-biased.
    """
    X = _as_matrix(vectors)
    if len(words) != X.shape[0]:
        raise ValueError(f"words has {len(words)} entries but vectors has {X.shape[0]} rows")
    index = {w: i for i, w in enumerate(words)}
    for anchor in (male, female):
        if anchor not in index:
            raise ValueError(f"anchor word {anchor!r} is not in the vocabulary")
    U = _unit_rows(X)
    return U @ U[index[male]] - U @ U[index[female]]


def gender_bias_split(
    words: Sequence[str],
    vectors: object,
    specific_words: Iterable[str] | None = None,
    n_eval: int = 500,
    n_fit: int = 2500,
    n_neutral: int | None = None,
    male: str = "he",
    female: str = "she",
) -> GenderBiasSplit:
    r"""The word selection of Gonen & Goldberg (2019), with a disjoint fitting set.

    Bias :math:`b(w) = \cos(w, he) - \cos(w, she)` on the given (original) vectors. Candidates are
    lower-case ASCII-alphabetic words not in ``specific_words`` (case-insensitive). Ranked by
    ``b``, the ``n_eval`` most male- and ``n_eval`` most female-biased candidates are the
    evaluation set; ranks ``n_eval + 1 .. n_eval + n_fit`` on each side and the ``n_neutral``
    candidates of smallest ``|b|`` (not already chosen) are the fitting set, labelled ``+1``,
    ``-1``, ``0`` (the ``z`` of the debiasing transformers). The two sets are disjoint.

    Args:
        words: the ``N`` words of the vocabulary.
        vectors: ``(N, d)`` original vectors.
        specific_words: gender-specific words to exclude. Default: Bolukbasi et al. (2016)'s full
            list of 1,441 words (:func:`manifoldnn.datasets.load_gender_words`).
        n_eval: evaluation words per side. Default: 500.
        n_fit: fitting words per side. Default: 2500 (ranks 501-3000).
        n_neutral: neutral fitting words. Default: ``n_fit``.
        male: the male anchor word. Default: ``"he"``.
        female: the female anchor word. Default: ``"she"``.

    Returns:
        :class:`GenderBiasSplit`.
    """
    from ..validation import check_positive_int

    check_positive_int(n_eval, "n_eval")
    check_positive_int(n_fit, "n_fit")
    n_neutral = n_fit if n_neutral is None else check_positive_int(n_neutral, "n_neutral")
    if specific_words is None:
        from ..datasets import load_gender_words

        specific_words = load_gender_words().specific
    specific = {w.lower() for w in specific_words}
    bias = gender_bias(vectors, words, male, female)
    eligible = np.array(
        [bool(_ALPHABETIC.match(w)) and w not in specific for w in words], dtype=bool
    )
    candidates = np.flatnonzero(eligible)
    candidates = candidates[np.argsort(-bias[candidates], kind="stable")]
    needed = 2 * (n_eval + n_fit) + n_neutral
    if len(candidates) < needed:
        raise ValueError(
            f"only {len(candidates)} candidate words for n_eval={n_eval}, n_fit={n_fit}, "
            f"n_neutral={n_neutral} (need {needed})"
        )
    male_side, female_side = candidates, candidates[::-1]
    eval_index = np.concatenate([male_side[:n_eval], female_side[:n_eval]])
    fit_gendered = np.concatenate(
        [male_side[n_eval : n_eval + n_fit], female_side[n_eval : n_eval + n_fit]]
    )
    taken = set(eval_index.tolist()) | set(fit_gendered.tolist())
    by_magnitude = candidates[np.argsort(np.abs(bias[candidates]), kind="stable")]
    neutral = np.array([i for i in by_magnitude if i not in taken][:n_neutral], dtype=np.int64)
    fit_index = np.concatenate([fit_gendered, neutral])
    if set(fit_index.tolist()) & set(eval_index.tolist()):  # cannot happen: ranks are disjoint
        raise AssertionError("the fitting and evaluation words overlap")
    ones = np.ones(n_eval, dtype=np.int64)
    fit_labels = np.concatenate(
        [np.ones(n_fit, np.int64), -np.ones(n_fit, np.int64), np.zeros(n_neutral, np.int64)]
    )
    return GenderBiasSplit(
        bias=bias,
        candidates=candidates,
        eval_index=eval_index,
        eval_labels=np.concatenate([ones, -ones]),
        fit_index=fit_index,
        fit_labels=fit_labels,
        sizes={
            "candidates": len(candidates),
            "eval_per_side": n_eval,
            "fit_per_side": n_fit,
            "fit_neutral": n_neutral,
        },
    )


# ------------------------------------------------------------------------------------- WEAT
def weat_effect_size(
    vectors: Mapping[str, object],
    x: Iterable[str],
    y: Iterable[str],
    a: Iterable[str],
    b: Iterable[str],
) -> float:
    r"""WEAT effect size (Caliskan et al. 2017, eqs. 1-2) over the words found in ``vectors``.

    .. math::
        s(w) = \operatorname{mean}_{a \in A} \cos(w, a) - \operatorname{mean}_{b \in B} \cos(w, b),
        \qquad d = \frac{\operatorname{mean}_X s - \operatorname{mean}_Y s}
                        {\operatorname{std}_{X \cup Y} s}

    with the sample standard deviation (``ddof=1``). Words without a vector are skipped; a set
    with no word found raises ``ValueError``.

    Args:
        vectors: word -> vector.
        x: the first target word set.
        y: the second target word set.
        a: the first attribute word set.
        b: the second attribute word set.
    """
    return weat_test(vectors, "weat", x, y, a, b, min_words=1).effect_size


@dataclass(frozen=True)
class WeatResult:
    """One WEAT test: its effect size, the words found per set ``(x, y, a, b)`` and the set sizes,
    and whether it is degenerate (a set with fewer than ``min_words`` words found)."""

    name: str
    effect_size: float
    found: tuple[int, int, int, int]
    sizes: tuple[int, int, int, int]
    degenerate: bool


def weat_test(
    vectors: Mapping[str, object],
    name: str,
    x: Iterable[str],
    y: Iterable[str],
    a: Iterable[str],
    b: Iterable[str],
    min_words: int = 8,
) -> WeatResult:
    """:func:`weat_effect_size` with the words found per set; ``degenerate`` if a set has fewer
    than ``min_words`` (default 8) words in ``vectors``."""
    sets = [list(dict.fromkeys(s)) for s in (x, y, a, b)]
    found_sets = []
    for label, words in zip("xyab", sets):
        present = [w for w in words if w in vectors]
        if not present:
            raise ValueError(f"WEAT test {name!r}: no word of set {label} is in the vocabulary")
        found_sets.append(_unit_rows(np.stack([_vector_of(vectors, w) for w in present])))
    X, Y, A, B = found_sets

    def association(W: np.ndarray) -> np.ndarray:  # eq. 1
        return (W @ A.T).mean(1) - (W @ B.T).mean(1)

    sx, sy = association(X), association(Y)
    pooled = np.concatenate([sx, sy])
    spread = pooled.std(ddof=1) if len(pooled) > 1 else 0.0
    effect = float((sx.mean() - sy.mean()) / spread) if spread > 0 else float("nan")
    found = tuple(len(s) for s in found_sets)
    return WeatResult(
        name=name,
        effect_size=effect,
        found=found,  # type: ignore[arg-type]
        sizes=tuple(len(s) for s in sets),  # type: ignore[arg-type]
        degenerate=min(found) < min_words or not np.isfinite(effect),
    )


def weat_summary(
    vectors: Mapping[str, object], tests: Iterable[object], min_words: int = 8
) -> dict[str, object]:
    """Every WEAT test, and the mean ``|effect size|`` over the non-degenerate ones.

    Args:
        vectors: word -> vector.
        tests: objects with ``name, x, y, a, b`` (e.g. :func:`manifoldnn.datasets.load_weat_tests`).
        min_words: a test whose four sets do not each have this many words found is reported but
            not averaged (a set with no word found: effect size nan). Default: 8.

    Returns:
        ``{"tests": {name: WeatResult}, "mean_abs": float (nan if none qualifies),
        "averaged": [names], "degenerate": [names]}``.
    """
    results = {}
    for t in tests:
        sets = [list(dict.fromkeys(s)) for s in (t.x, t.y, t.a, t.b)]
        found = tuple(sum(w in vectors for w in s) for s in sets)
        if min(found) == 0:  # reported with its counts, no effect size
            sizes = tuple(len(s) for s in sets)
            results[t.name] = WeatResult(t.name, float("nan"), found, sizes, True)  # type: ignore[arg-type]
        else:
            results[t.name] = weat_test(vectors, t.name, t.x, t.y, t.a, t.b, min_words)
    averaged = [n for n, r in results.items() if not r.degenerate]
    mean_abs = (
        float(np.mean([abs(results[n].effect_size) for n in averaged])) if averaged else np.nan
    )
    return {
        "tests": results,
        "mean_abs": mean_abs,
        "averaged": averaged,
        "degenerate": [n for n in results if n not in averaged],
    }


# -------------------------------------------------------------- Gonen & Goldberg's two tests
def _check_binary(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    values = set(np.unique(labels).tolist())
    if not values <= {-1, 1} or len(values) != 2:
        raise ValueError(
            f"{name} must hold both +1 and -1 (and nothing else), got {sorted(values)}"
        )
    return labels


def kmeans_bias_accuracy(
    vectors: object, labels: object, n_init: int = 10, random_state: int = 0
) -> float:
    """Gonen & Goldberg (2019, the clustering experiment): 2-means on the vectors, accuracy of the
    clusters against the bias labels under the better of the two matchings (0.5 = no signal).

    Args:
        vectors: ``(n, d)``; unit-normalised here (the paper clusters normalised vectors).
        labels: ``(n,)`` ``+1`` / ``-1`` (male / female by original bias).
        n_init: k-means restarts. Default: 10.
        random_state: seed of scikit-learn's ``KMeans``. Default: 0.
    """
    from sklearn.cluster import KMeans

    X = _unit_rows(_as_matrix(vectors))
    y = _check_binary(_as_labels(labels, X.shape[0]))
    clusters = KMeans(2, n_init=n_init, random_state=random_state).fit_predict(X)
    agreement = float(np.mean((clusters == 1) == (y == 1)))
    return max(agreement, 1.0 - agreement)


def neighbour_bias_correlation(
    vectors: object, original_bias: object, k: int = 100, male: object | None = None
) -> float:
    """Gonen & Goldberg (2019, "bias-by-neighbours"): Pearson ``r`` between each word's
    original bias and the share of male-biased words among its ``k`` nearest neighbours.

    Neighbours (cosine) are searched among the rows of ``vectors`` only, the word itself
    excluded. The paper measures its most biased words; ``examples/debias_embeddings.py`` passes
    the 1000 evaluation words (the 500 most male- and 500 most female-biased, with their debiased
    vectors), so neighbourhoods are those of the transformed space while "male-biased" keeps its
    original meaning (``original_bias > 0``).

    Args:
        vectors: ``(n, d)`` (transformed) vectors, ``n > k``.
        original_bias: ``(n,)`` bias on the ORIGINAL vectors (:func:`gender_bias`).
        k: neighbours. Default: 100 (the paper's).
        male: ``(n,)`` bool, which rows count as male-biased. Default: ``original_bias > 0``.
    """
    from scipy.stats import pearsonr

    from ..validation import check_positive_int

    X = _unit_rows(_as_matrix(vectors))
    bias = _as_labels(original_bias, X.shape[0], "original_bias").astype(np.float64)
    k = check_positive_int(k, "k")
    if k >= X.shape[0]:
        raise ValueError(f"k={k} must be smaller than the number of words {X.shape[0]}")
    is_male = bias > 0 if male is None else _as_labels(male, X.shape[0], "male").astype(bool)
    similarity = X @ X.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    share = is_male[neighbours].mean(axis=1)
    if np.std(share) == 0 or np.std(bias) == 0:
        return 0.0  # a constant share carries no information about the bias
    return float(pearsonr(bias, share).statistic)


# ------------------------------------------------------------------------------------ probes
@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated probe accuracy: mean and standard deviation over seeds of the 5-fold mean,
    and every fold score (``(seeds, folds)``)."""

    mean: float
    std: float
    scores: np.ndarray


def _probe(kind: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if kind == "linear":
        model = LogisticRegression(max_iter=2000)
    elif kind == "rbf":
        model = SVC(kernel="rbf", C=1.0, gamma="scale")
    elif kind == "mlp":
        model = MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=seed)
    else:
        raise ValueError(f"kind must be 'linear', 'rbf' or 'mlp', got {kind!r}")
    return make_pipeline(StandardScaler(), model)


def probe_accuracy(
    vectors: object,
    labels: object,
    kind: str = "rbf",
    seeds: Sequence[int] = (0, 1, 2),
    n_splits: int = 5,
) -> ProbeResult:
    """Accuracy of a classifier predicting the labels from the vectors, stratified k-fold CV.

    The probes of Gonen & Goldberg (2019, an RBF-SVM) and Ravfogel et al. (2020, linear and
    MLP): ``"linear"`` (logistic regression), ``"rbf"`` (SVM, ``C=1``,
    ``gamma="scale"``) or ``"mlp"`` (one hidden layer of 100 ReLU units, Adam), each after
    standardising the features. Each seed reshuffles the folds (and initialises the MLP).

    Args:
        vectors: ``(n, d)``.
        labels: ``(n,)`` class labels (any values, at least ``n_splits`` of each class).
        kind: ``"linear"``, ``"rbf"`` or ``"mlp"``. Default: ``"rbf"``.
        seeds: one CV run per seed. Default: ``(0, 1, 2)``.
        n_splits: folds. Default: 5.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X = _as_matrix(vectors)
    y = _as_labels(labels, X.shape[0])
    _probe(kind, 0)  # validates kind before any work
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < n_splits:
        raise ValueError(f"labels need two classes with >= n_splits={n_splits} rows each")
    scores = np.stack(
        [
            cross_val_score(
                _probe(kind, seed),
                X,
                y,
                cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed),
            )
            for seed in seeds
        ]
    )
    per_seed = scores.mean(axis=1)
    return ProbeResult(float(per_seed.mean()), float(per_seed.std()), scores)


# ------------------------------------------------------------------------------------ meaning
def similarity_spearman(
    vectors: Mapping[str, object], pairs: Iterable[tuple[str, str, float]]
) -> tuple[float, int]:
    """Spearman correlation of cosine similarities with human scores (SimLex-999, Hill et al.
    2015; WordSim-353, Finkelstein et al. 2002) over the pairs whose two words are in
    ``vectors``; returns ``(rho, pairs found)``. No pair found raises ``ValueError``."""
    from scipy.stats import spearmanr

    gold, predicted = [], []
    for w1, w2, score in pairs:
        if w1 in vectors and w2 in vectors:
            u, v = _vector_of(vectors, w1), _vector_of(vectors, w2)
            predicted.append(float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))))
            gold.append(float(score))
    if len(gold) < 2:
        raise ValueError(f"only {len(gold)} benchmark pairs have both words in the vocabulary")
    return float(spearmanr(gold, predicted).statistic), len(gold)


def neighbour_overlap(
    original: object,
    transformed: object,
    k: int = 10,
    query: object | None = None,
    jaccard: bool = False,
) -> float:
    r"""Mean share of the ``k`` nearest neighbours (cosine, among all rows, self excluded) that a
    word keeps from the original space: :math:`|N_k(w) \cap N'_k(w)| / k`, or the Jaccard index
    :math:`|N \cap N'| / |N \cup N'|` with ``jaccard=True``.

    Args:
        original: ``(n, d)`` vectors of the original space.
        transformed: ``(n, d')`` vectors of the same words, in the same order, after the map.
        k: neighbours. Default: 10.
        query: indices of the words averaged over. Default: all.
        jaccard: Jaccard index instead of the overlap share. Default: False.
    """
    from ..validation import check_positive_int

    A, B = _unit_rows(_as_matrix(original, "original")), _unit_rows(_as_matrix(transformed))
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"original has {A.shape[0]} rows but transformed has {B.shape[0]}")
    k = check_positive_int(k, "k")
    if k >= A.shape[0]:
        raise ValueError(f"k={k} must be smaller than the number of words {A.shape[0]}")
    rows = np.arange(A.shape[0]) if query is None else np.asarray(query, dtype=np.int64)

    def neighbours(M: np.ndarray) -> np.ndarray:
        similarity = M[rows] @ M.T
        similarity[np.arange(len(rows)), rows] = -np.inf
        return np.argpartition(-similarity, k - 1, axis=1)[:, :k]

    shared = [len(set(p) & set(q)) for p, q in zip(neighbours(A), neighbours(B))]
    shared = np.asarray(shared, dtype=np.float64)
    return float(np.mean(shared / (2 * k - shared) if jaccard else shared / k))


# ---------------------------------------------------------------------------------- attention
def attention_stereotype_gap(
    weights: torch.Tensor,
    male_keys: Sequence[int],
    female_keys: Sequence[int],
    lean: object,
) -> tuple[float, float]:
    r"""Stereotype gap of attention weights over gender-neutral query words.

    For query :math:`q` with attention weights :math:`a_{qj}`,
    :math:`r_q = \log \sum_{j \in M} a_{qj} - \log \sum_{j \in F} a_{qj}` (mass on male against
    female definitional words); the gap is :math:`\operatorname{mean}_q r_q \operatorname{sign}(
    \ell_q)` with :math:`\ell_q` the query's lean (its projection on the gender direction), and the
    second figure the Pearson correlation of :math:`r` with :math:`\ell` (0 if :math:`r` is
    constant).

    Args:
        weights: ``(q, n_keys)`` attention weights (rows sum to 1).
        male_keys: key columns of the male words.
        female_keys: key columns of the female words.
        lean: ``(q,)`` the queries' lean.

    Returns:
        ``(gap, correlation)``.
    """
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be (queries, keys), got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("weights contain NaN or inf")
    if len(male_keys) == 0 or len(female_keys) == 0:
        raise ValueError("male_keys and female_keys must each name at least one key column")
    lean = _as_labels(np.asarray(lean, dtype=np.float64), w.shape[0], "lean")
    tiny = torch.finfo(torch.float64).tiny
    male_mass = w[:, list(male_keys)].sum(1).clamp_min(tiny)
    female_mass = w[:, list(female_keys)].sum(1).clamp_min(tiny)
    ratio = (male_mass.log() - female_mass.log()).numpy()
    gap = float(np.mean(ratio * np.sign(lean)))
    if np.std(ratio) == 0 or np.std(lean) == 0:
        return gap, 0.0
    return gap, float(np.corrcoef(ratio, lean)[0, 1])
