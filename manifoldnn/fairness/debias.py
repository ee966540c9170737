r"""Baseline debiasing transforms of word vectors: hard debiasing, INLP and LEACE.

All three follow scikit-learn's transformer contract: ``fit(X, z)`` returns ``self`` and
``transform(X)`` maps ANY rows (also words not fitted on) to debiased vectors. ``X`` is ``(n, d)``
float (numpy, or a torch tensor copied to the host); ``z`` holds ``+1`` (male-biased), ``-1``
(female-biased) and ``0`` (neutral), e.g. the fitting words of
:func:`manifoldnn.fairness.gender_bias_split`. The transforms compute in float64 and return NumPy
arrays in the float dtype of their input (float64 for integer input), unit-normalised rows unless
``normalize=False``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..utils.estimators import float_dtype_of, store_parameters, torch_seed, validate_parameters
from ..utils.optional import require
from ..validation import check_bool, check_in_range, check_positive_float, check_positive_int
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


def _transformed(X: object, transform) -> np.ndarray:
    """``transform`` applied to ``X`` as a float64 matrix, returned in ``X``'s float dtype."""
    return transform(_as_matrix(X, "X")).astype(float_dtype_of(X), copy=False)


def _fit_input(estimator: BaseEstimator, X: object, z: object) -> tuple[np.ndarray, np.ndarray]:
    """The boundary of ``fit(X, z)``: the estimator's parameters checked, ``X`` as a finite float64
    matrix (its width stored as ``n_features_in_``) and ``z`` one label per row."""
    validate_parameters(estimator, estimator._parameter_checks)
    X = _as_matrix(X, "X")
    estimator.n_features_in_ = X.shape[1]
    return X, _check_z(z, X.shape[0])


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
        male: the male word fixing the sign. Default: ``"he"``.
        female: the female word fixing the sign. Default: ``"she"``.

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


class HardDebias(TransformerMixin, BaseEstimator):
    """Hard debiasing (Bolukbasi et al. 2016) as a transformer.

    ``fit`` computes the gender direction from the definitional pairs of the vocabulary given to
    the constructor (``X`` only fixes the width; ``z`` is not used). ``transform(X)`` neutralises
    every row; ``transform(X, words=...)`` treats the rows as those words: gender-specific words
    are kept and the equalize pairs equalised (:func:`hard_debias`).

    Args:
        words: the vocabulary (``N`` words).
        vectors: ``(N, d)`` its (original) vectors.
        definitional_pairs: pairs for the direction; ``None``: Bolukbasi et al.'s ten pairs.
            Default: ``None``.
        equalize_pairs: pairs to equalise; ``None``: Bolukbasi et al.'s 52. Default: ``None``.
        specific_words: words never neutralised; ``None``: Bolukbasi et al.'s 1,441.
            Default: ``None``.
        strength: share of the gender component removed, in ``[0, 1]``. Default: ``1.0``.

    Attributes:
        direction_: ``(d,)`` unit gender direction.
        definitional_pairs_: the definitional pairs used.
        equalize_pairs_: the equalisation pairs used.
        specific_words_: the gender-specific words used.
        n_features_in_: d.
    """

    _parameter_checks = {"strength": functools.partial(check_in_range, low=0, high=1)}

    def __init__(
        self,
        words: Sequence[str],
        vectors: object,
        definitional_pairs: Iterable[tuple[str, str]] | None = None,
        equalize_pairs: Iterable[tuple[str, str]] | None = None,
        specific_words: Iterable[str] | None = None,
        strength: float = 1.0,
    ) -> None:
        store_parameters(self, locals())

    def fit(self, X: object, z: object | None = None) -> HardDebias:
        """Compute the gender direction; ``X`` fixes the width, ``z`` is not used.

        Returns:
            ``self``.
        """
        validate_parameters(self, self._parameter_checks)
        vocabulary = _as_matrix(self.vectors, "vectors")
        words = list(self.words)
        if len(words) != vocabulary.shape[0]:
            raise ValueError(
                f"words has {len(words)} entries but vectors has {vocabulary.shape[0]} rows"
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
        lookup = {w: vocabulary[i] for i, w in enumerate(words)}
        self.direction_ = gender_direction(lookup, self.definitional_pairs_)
        self.n_features_in_ = vocabulary.shape[1]
        _check_width(_as_matrix(X, "X"), self.n_features_in_)
        return self

    def transform(self, X: object, words: Sequence[str] | None = None) -> np.ndarray:
        """Neutralise the rows of ``X`` ``(n, d)``; with ``words`` (the rows' words), keep the
        gender-specific ones and equalise the pairs (:func:`hard_debias`).

        Returns:
            ``(n, d)`` NumPy array in the float dtype of ``X``.
        """
        check_is_fitted(self, "direction_")
        if words is not None and len(words) != len(X):
            raise ValueError(f"words has {len(words)} entries but X has {len(X)} rows")

        def debias(matrix: np.ndarray) -> np.ndarray:
            matrix = _check_width(_unit(matrix), self.n_features_in_)
            if words is None:  # rows of unknown words: neutralise all, nothing to equalise
                return hard_debias(
                    [""] * len(matrix), matrix, self.direction_, (), (), self.strength
                )
            return hard_debias(
                words, matrix, self.direction_, self.specific_words_, self.equalize_pairs_,
                self.strength,
            )  # fmt: skip

        return _transformed(X, debias)


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


class INLP(TransformerMixin, BaseEstimator):
    """Iterative null-space projection (Ravfogel et al. 2020) as a transformer.

    ``fit`` runs :func:`inlp_directions`; ``transform`` applies the projection of the first
    ``n_rounds`` rounds (default all): ``x P`` with ``P`` from :func:`inlp_projection`.

    Args:
        n_rounds: rounds (35 is the paper's for word vectors). Default: ``35``.
        C: LinearSVC regularisation. Default: ``1.0``.
        random_state: round ``r`` seeds its classifier with ``seed + r``, ``seed`` the int
            ``random_state`` (or one drawn from ``None`` or a ``numpy.random.RandomState``).
            Default: ``0``.
        normalize: unit-normalise the outputs. Default: ``True``.

    Attributes:
        directions_: per round the ``(k, d)`` classifier directions.
        ranks_: rank of the projection's complement after each round.
        accuracies_: each round's training accuracy.
        n_features_in_: d.
    """

    _parameter_checks = {
        "n_rounds": check_positive_int,
        "C": check_positive_float,
        "normalize": check_bool,
    }

    def __init__(
        self,
        n_rounds: int = 35,
        C: float = 1.0,
        random_state: int | np.random.RandomState | None = 0,
        normalize: bool = True,
    ) -> None:
        store_parameters(self, locals())

    def fit(self, X: object, z: object) -> INLP:
        """Run :func:`inlp_directions` on ``X`` ``(n, d)`` and labels ``z`` ``(n,)``.

        Returns:
            ``self``.
        """
        X, z = _fit_input(self, X, z)
        self.directions_, self.accuracies_ = inlp_directions(
            X, z, self.n_rounds, torch_seed(self.random_state), self.C
        )
        d = X.shape[1]
        self.ranks_ = [
            d - round(float(np.trace(inlp_projection(self.directions_[: r + 1]))))
            for r in range(self.n_rounds)
        ]
        return self

    def projection(self, n_rounds: int | None = None) -> np.ndarray:
        """``(d, d)`` projection of the first ``n_rounds`` rounds (``None``: all)."""
        check_is_fitted(self, "directions_")
        rounds = self.n_rounds if n_rounds is None else check_positive_int(n_rounds, "n_rounds")
        if rounds > len(self.directions_):
            raise ValueError(f"n_rounds={rounds} exceeds the {len(self.directions_)} fitted")
        return inlp_projection(self.directions_[:rounds])

    def transform(self, X: object, n_rounds: int | None = None) -> np.ndarray:
        """``X P`` with ``P`` the projection of the first ``n_rounds`` rounds (``None``: all).

        Returns:
            ``(n, d)`` NumPy array in the float dtype of ``X``.
        """
        projection = self.projection(n_rounds)

        def project(matrix: np.ndarray) -> np.ndarray:
            out = _check_width(matrix, self.n_features_in_) @ projection
            return _unit(out) if self.normalize else out

        return _transformed(X, project)


# --------------------------------------------------------------------------------------- LEACE
class LEACE(TransformerMixin, BaseEstimator):
    """LEAst-squares Concept Erasure (Belrose et al. 2023, "LEACE: Perfect linear concept erasure
    in closed form", NeurIPS) through ``concept_erasure.LeaceEraser``.

    The concept is the one-hot class of ``z`` (with the neutral class: three columns); the
    eraser is the least-squares affine map after which the class-conditional means coincide, so
    that no linear classifier does better than a constant one.

    Needs the optional dependency concept-erasure: ``pip install "manifoldnn[fairness]"``.

    Args:
        normalize: unit-normalise the outputs. Default: ``True``.

    Attributes:
        classes_: the classes of ``z``.
        eraser_: the fitted ``concept_erasure.LeaceEraser``.
        n_features_in_: d.
    """

    _parameter_checks = {"normalize": check_bool}

    def __init__(self, normalize: bool = True) -> None:
        store_parameters(self, locals())

    def fit(self, X: object, z: object) -> LEACE:
        """Fit the eraser on ``X`` ``(n, d)`` and the one-hot classes of ``z`` ``(n,)``.

        Returns:
            ``self``.
        """
        X, z = _fit_input(self, X, z)
        LeaceEraser = require("concept_erasure", "fairness", "LEACE").LeaceEraser
        self.classes_, codes = np.unique(z, return_inverse=True)
        one_hot = np.eye(len(self.classes_))[codes]
        self.eraser_ = LeaceEraser.fit(
            torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(one_hot, dtype=torch.float64)
        )
        return self

    def transform(self, X: object) -> np.ndarray:
        """Erase the concept from the rows of ``X`` ``(n, d)``.

        Returns:
            ``(n, d)`` NumPy array in the float dtype of ``X``.
        """
        check_is_fitted(self, "eraser_")

        def erase(matrix: np.ndarray) -> np.ndarray:
            matrix = _check_width(matrix, self.n_features_in_)
            with torch.no_grad():
                out = self.eraser_(torch.as_tensor(matrix, dtype=torch.float64)).numpy()
            return _unit(out) if self.normalize else out

        return _transformed(X, erase)
