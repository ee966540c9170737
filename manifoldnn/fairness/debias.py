r"""Baseline debiasing transforms of word vectors: hard debiasing, INLP and LEACE.

All three follow scikit-learn's transformer contract: ``fit(X, z)`` returns ``self`` and
``transform(X)`` maps ANY rows (also words not fitted on) to debiased vectors. ``X`` is ``(n, d)``
float (numpy, or a torch tensor copied to the host); ``z`` holds ``+1`` (male-biased), ``-1``
(female-biased) and ``0`` (neutral), e.g. the fitting words of
:func:`manifoldnn.fairness.gender_bias_split`. Outputs are float64 numpy arrays, unit-normalised
rows unless ``normalize=False``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..validation import check_positive_int
from .evaluation import _as_matrix

__all__ = [
    "gender_direction",
    "hard_debias",
    "HardDebias",
    "inlp_directions",
    "inlp_projection",
    "INLP",
    "LEACE",
]


def _unit(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms > 0, norms, 1.0)


def _check_width(X: np.ndarray, width: int, name: str = "X") -> np.ndarray:
    if X.shape[1] != width:
        raise ValueError(f"{name} has {X.shape[1]} columns but the transform was fitted on {width}")
    return X


def _check_z(z: object, n: int) -> np.ndarray:
    array = np.asarray(z)
    if array.shape != (n,):
        raise ValueError(f"z must have shape ({n},) to match X, got {array.shape}")
    if len(np.unique(array)) < 2:
        raise ValueError("z must hold at least two classes")
    return array


# ----------------------------------------------------------------------------- hard debiasing
def gender_direction(
    vectors: Mapping[str, object],
    pairs: Iterable[tuple[str, str]],
    male: str = "he",
    female: str = "she",
) -> np.ndarray:
    """The gender direction of Bolukbasi et al. (2016, Sec. 5): the first principal component of
    the definitional pairs, each centred on its own mean; signed so that ``male - female`` has a
    positive component. Pairs with a word missing are skipped (none found: ``ValueError``).

    Args:
        vectors: word -> vector.
        pairs: definitional pairs (either order).
        male, female: the words fixing the sign. Default: ``"he"``, ``"she"``.

    Returns:
        ``(d,)`` unit vector.
    """
    rows = []
    for a, b in pairs:
        if a in vectors and b in vectors:
            va, vb = (np.asarray(vectors[w], dtype=np.float64) for w in (a, b))
            centre = (va + vb) / 2
            rows += [va - centre, vb - centre]
    if not rows:
        raise ValueError("no definitional pair has both words in the vocabulary")
    if male not in vectors or female not in vectors:
        raise ValueError(f"the sign words {male!r} and {female!r} must be in the vocabulary")
    _, _, vt = np.linalg.svd(_as_matrix(np.stack(rows), "definitional pair vectors"))
    g = vt[0]
    offset = np.asarray(vectors[male], dtype=np.float64) - np.asarray(vectors[female], np.float64)
    return g if g @ offset > 0 else -g


def hard_debias(
    words: Sequence[str],
    X: np.ndarray,
    g: np.ndarray,
    specific: Iterable[str],
    equalize: Iterable[tuple[str, str]],
    strength: float = 1.0,
) -> np.ndarray:
    r"""Hard debiasing of Bolukbasi et al. (2016, Sec. 5 and Appendix): neutralise, then equalise.

    Neutralise every word outside ``specific``: :math:`w \leftarrow (w - s \langle w, g\rangle g)
    / \lVert\cdot\rVert` with strength :math:`s`. At full strength also equalise each pair
    (lower, title and upper case): with :math:`\mu` the pair's mean and :math:`\nu = \mu -
    \langle \mu, g\rangle g`, each word becomes :math:`\nu \pm \sqrt{1 - \lVert\nu\rVert^2}\, g`.

    Args:
        words: ``N`` words (the rows of ``X``).
        X: ``(N, d)`` unit vectors.
        g: ``(d,)`` unit gender direction.
        specific: gender-specific words, left un-neutralised.
        equalize: pairs to equalise.
        strength: share of the ``g`` component removed. Default: 1 (equalise too).
    """
    out = np.array(X, dtype=np.float64, copy=True)
    specific = set(specific)
    neutral = np.array([w not in specific for w in words], dtype=bool)
    proj = out[neutral] @ g
    out[neutral] -= strength * proj[:, None] * g[None, :]
    out[neutral] = _unit(out[neutral])
    if strength < 1.0:
        return out
    index = {w: i for i, w in enumerate(words)}
    for a, b in equalize:
        for ca, cb in ((a.lower(), b.lower()), (a.title(), b.title()), (a.upper(), b.upper())):
            if ca in index and cb in index:
                ia, ib = index[ca], index[cb]
                mu = (out[ia] + out[ib]) / 2
                nu = mu - (mu @ g) * g
                scale = math.sqrt(max(0.0, 1 - float(nu @ nu)))
                for i in (ia, ib):
                    side = np.sign((out[i] - mu) @ g) or 1.0
                    out[i] = nu + scale * side * g
    return out


class HardDebias:
    """Hard debiasing (Bolukbasi et al. 2016) as a transformer.

    ``fit`` computes the gender direction from the definitional pairs of the vocabulary given to
    the constructor (``X`` only fixes the width; ``z`` is not used). ``transform(X)`` neutralises
    every row; ``transform(X, words=...)`` treats the rows as those words: gender-specific words
    are kept and the equalize pairs equalised (:func:`hard_debias`).

    Args:
        words: the vocabulary (``N`` words).
        vectors: ``(N, d)`` its (original) vectors.
        definitional_pairs: pairs for the direction. Default: Bolukbasi et al.'s ten pairs.
        equalize_pairs: pairs to equalise. Default: Bolukbasi et al.'s 52.
        specific_words: words never neutralised. Default: Bolukbasi et al.'s 1,441.
        strength: share of the gender component removed, in ``[0, 1]``. Default: 1.
    """

    def __init__(
        self,
        words: Sequence[str],
        vectors: object,
        definitional_pairs: Iterable[tuple[str, str]] | None = None,
        equalize_pairs: Iterable[tuple[str, str]] | None = None,
        specific_words: Iterable[str] | None = None,
        strength: float = 1.0,
    ) -> None:
        self.words = list(words)
        self.vectors = vectors
        self.definitional_pairs = definitional_pairs
        self.equalize_pairs = equalize_pairs
        self.specific_words = specific_words
        self.strength = strength

    def fit(self, X: object, z: object | None = None) -> HardDebias:
        if not 0.0 <= float(self.strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength!r}")
        vocabulary = _as_matrix(self.vectors, "vectors")
        if len(self.words) != vocabulary.shape[0]:
            raise ValueError(
                f"words has {len(self.words)} entries but vectors has {vocabulary.shape[0]} rows"
            )
        if any(p is None for p in (self.definitional_pairs, self.equalize_pairs)) or (
            self.specific_words is None
        ):
            from ..datasets import load_gender_words

            shipped = load_gender_words()
        pairs = self.definitional_pairs
        self.definitional_pairs_ = list(shipped.definitional_pairs if pairs is None else pairs)
        pairs = self.equalize_pairs
        self.equalize_pairs_ = list(shipped.equalize_pairs if pairs is None else pairs)
        specific = self.specific_words
        self.specific_words_ = set(shipped.specific if specific is None else specific)
        lookup = {w: vocabulary[i] for i, w in enumerate(self.words)}
        self.direction_ = gender_direction(lookup, self.definitional_pairs_)
        self.n_features_in_ = vocabulary.shape[1]
        _check_width(_as_matrix(X, "X"), self.n_features_in_)
        return self

    def transform(self, X: object, words: Sequence[str] | None = None) -> np.ndarray:
        X = _check_width(_unit(_as_matrix(X, "X")), self.n_features_in_)
        if words is None:  # rows of unknown words: neutralise all, nothing to equalise
            return hard_debias([""] * X.shape[0], X, self.direction_, (), (), self.strength)
        if len(words) != X.shape[0]:
            raise ValueError(f"words has {len(words)} entries but X has {X.shape[0]} rows")
        return hard_debias(
            words, X, self.direction_, self.specific_words_, self.equalize_pairs_, self.strength
        )


# ---------------------------------------------------------------------------------------- INLP
def inlp_projection(directions: Sequence[np.ndarray]) -> np.ndarray:
    """Projection onto the intersection of the null spaces of the classifier directions
    (Ravfogel et al. 2020): ``I - B B^T`` with ``B`` an orthonormal basis of their span."""
    stacked = np.concatenate([np.atleast_2d(d) for d in directions])
    u, s, _ = np.linalg.svd(stacked.T, full_matrices=False)
    # rank cut-off: singular values below d * eps * s_max are rounding (numpy's matrix_rank rule)
    basis = u[:, s > s.max() * max(stacked.shape) * np.finfo(np.float64).eps]
    return np.eye(stacked.shape[1]) - basis @ basis.T


def inlp_directions(
    X: np.ndarray, z: np.ndarray, rounds: int, seed: int = 0, C: float = 1.0
) -> tuple[list[np.ndarray], list[float]]:
    """Iterative null-space projection (Ravfogel et al. 2020, Alg. 1).

    Each round trains ``LinearSVC(fit_intercept=False)`` (one-vs-rest: one direction per class
    for three or more classes) on the data projected so far and adds its directions.

    Returns:
        ``(directions, accuracies)``: per round the ``(k, d)`` classifier directions and its
        training accuracy before projecting.
    """
    from sklearn.svm import LinearSVC

    d = X.shape[1]
    P = np.eye(d)
    found, accuracies = [], []
    for r in range(rounds):
        clf = LinearSVC(C=C, fit_intercept=False, dual=False, max_iter=5000, random_state=seed + r)
        clf.fit(X @ P, z)
        accuracies.append(float(clf.score(X @ P, z)))
        found.append(clf.coef_.reshape(-1, d) @ P)  # directions live in the projected space
        P = inlp_projection(found)
    return found, accuracies


class INLP:
    """Iterative null-space projection (Ravfogel et al. 2020) as a transformer.

    ``fit`` runs :func:`inlp_directions`; ``transform`` applies the projection of the first
    ``n_rounds`` rounds (default all): ``x P`` with ``P`` from :func:`inlp_projection`.

    Args:
        n_rounds: rounds. Default: 35 (the paper's for word vectors).
        C: LinearSVC regularisation. Default: 1.
        random_state: seed of round ``r`` is ``random_state + r``. Default: 0.
        normalize: unit-normalise the outputs. Default: True.

    Attributes:
        directions_: per round ``(k, d)``; ``ranks_``: rank of the projection's complement after
        each round; ``accuracies_``: each round's training accuracy.
    """

    def __init__(
        self, n_rounds: int = 35, C: float = 1.0, random_state: int = 0, normalize: bool = True
    ) -> None:
        self.n_rounds = n_rounds
        self.C = C
        self.random_state = random_state
        self.normalize = normalize

    def fit(self, X: object, z: object) -> INLP:
        check_positive_int(self.n_rounds, "n_rounds")
        if not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C!r}")
        X = _as_matrix(X, "X")
        z = _check_z(z, X.shape[0])
        self.directions_, self.accuracies_ = inlp_directions(
            X, z, self.n_rounds, self.random_state, self.C
        )
        d = X.shape[1]
        self.ranks_ = [
            d - round(float(np.trace(inlp_projection(self.directions_[: r + 1]))))
            for r in range(self.n_rounds)
        ]
        self.n_features_in_ = d
        return self

    def projection(self, n_rounds: int | None = None) -> np.ndarray:
        """``(d, d)`` projection of the first ``n_rounds`` rounds (default all)."""
        rounds = self.n_rounds if n_rounds is None else check_positive_int(n_rounds, "n_rounds")
        if rounds > len(self.directions_):
            raise ValueError(f"n_rounds={rounds} exceeds the {len(self.directions_)} fitted")
        return inlp_projection(self.directions_[:rounds])

    def transform(self, X: object, n_rounds: int | None = None) -> np.ndarray:
        X = _check_width(_as_matrix(X, "X"), self.n_features_in_)
        out = X @ self.projection(n_rounds)
        return _unit(out) if self.normalize else out


# --------------------------------------------------------------------------------------- LEACE
class LEACE:
    """LEAst-squares Concept Erasure (Belrose et al. 2023, "LEACE: Perfect linear concept erasure
    in closed form", NeurIPS) through ``concept_erasure.LeaceEraser``.

    The concept is the one-hot class of ``z`` (with the neutral class: three columns); the
    eraser is the least-squares affine map after which the class-conditional means coincide, so
    that no linear classifier does better than a constant one.

    Args:
        normalize: unit-normalise the outputs. Default: True.
    """

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize

    def fit(self, X: object, z: object) -> LEACE:
        import torch
        from concept_erasure import LeaceEraser

        X = _as_matrix(X, "X")
        z = _check_z(z, X.shape[0])
        self.classes_, codes = np.unique(z, return_inverse=True)
        one_hot = np.eye(len(self.classes_))[codes]
        self.eraser_ = LeaceEraser.fit(
            torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(one_hot, dtype=torch.float64)
        )
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: object) -> np.ndarray:
        import torch

        X = _check_width(_as_matrix(X, "X"), self.n_features_in_)
        with torch.no_grad():
            out = self.eraser_(torch.as_tensor(X, dtype=torch.float64)).numpy()
        return _unit(out) if self.normalize else out
