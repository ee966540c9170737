"""scikit-learn's estimator contract, checked on every estimator and transformer of the library.

The individual checks of ``sklearn.utils.estimator_checks`` that apply to inputs of subspaces, word
vectors with bias labels and lists of views: ``clone`` and the ``get_params`` / ``set_params``
round trip, a constructor that only stores its arguments, ``fit`` returning ``self`` with learned
state ending in ``_``, ``NotFittedError`` before ``fit``, one return type (NumPy), parameters
validated in ``fit`` with a message that starts with the parameter's name, and ``random_state``
taken the scikit-learn way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin, clone
from sklearn.exceptions import NotFittedError

from manifoldnn.clustering import (
    GrassmannKMeans,
    GrassmannSpectralClustering,
    MultiViewSubspaceClustering,
)
from manifoldnn.fairness import INLP, LEACE, FairMetricDebias, HardDebias
from manifoldnn.linalg import qr_positive


def bases(device, dtype=torch.float64, seed=0):
    """30 orthonormal bases of Gr(6, 2) in three planted groups around three centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = qr_positive(torch.randn(3, 6, 2, generator=generator, dtype=dtype))
    noise = 0.05 * torch.randn(3, 10, 6, 2, generator=generator, dtype=dtype)
    return qr_positive((centres[:, None] + noise).reshape(30, 6, 2)).to(device)


def word_vectors(device, dtype=torch.float64, seed=0):
    """60 unit vectors in R^5 whose first coordinate carries the side of a bias label z."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.tensor([1, -1, 0]).repeat(20)
    x = torch.randn(60, 5, generator=generator, dtype=dtype)
    x[:, 0] += 2.0 * z.to(dtype)
    return torch.nn.functional.normalize(x, dim=-1).to(device), z.numpy()


def views(device, seed=0):
    """Two views (5 and 4 features) of 60 samples in three planted groups."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(20)
    return [
        (
            (3 * torch.randn(3, d, generator=generator))[labels]
            + torch.randn(60, d, generator=generator)
        ).to(device)
        for d in (5, 4)
    ]


WORDS = [f"w{i}" for i in range(56)] + ["he", "she", "man", "woman"]


@dataclass
class Case:
    """An estimator, how to build its ``fit`` arguments on a device, and bad parameter values."""

    build: Any
    fit_args: Any
    bad: dict = field(default_factory=dict)
    output: str = "labels"  # "labels" (clusterers) or "transform"
    needs: str | None = None

    def estimator(self, device):
        return self.build(device)


CASES = {
    "GrassmannKMeans": Case(
        lambda device: GrassmannKMeans(3, n_init=2, random_state=0),
        lambda device, dtype=torch.float64: (bases(device, dtype),),
        bad={"n_clusters": 0, "mean": "median", "n_init": 0, "max_iter": 1.5, "tol": -1.0},
    ),
    "GrassmannSpectralClustering": Case(
        lambda device: GrassmannSpectralClustering(3, n_neighbors=5, random_state=0),
        lambda device, dtype=torch.float64: (bases(device, dtype),),
        bad={"n_clusters": 1, "kernel": "gauss", "sigma": -1.0, "assign_labels": "x", "n_init": 0},
    ),
    "MultiViewSubspaceClustering": Case(
        lambda device: MultiViewSubspaceClustering(
            3,
            epochs=2,
            batch_size=30,
            hidden=(8,),
            ambient_size=6,
            rank=2,
            projected_size=4,
            warmup=1,
            neighbors=5,
            restarts=1,
            self_label_rounds=0,
            select=False,
            device=device,
        ),  # fmt: skip
        lambda device, dtype=torch.float64: (views(device),),
        bad={"n_clusters": 1, "epochs": 0, "confidence": 0.0, "hidden": (8, 0), "select": "no"},
    ),
    "FairMetricDebias": Case(
        lambda device: FairMetricDebias(rounds=2, n_features=16, random_state=0),
        lambda device, dtype=torch.float64: word_vectors(device, dtype),
        bad={"alpha": -1.0, "rounds": -1, "n_features": 0, "gamma": 0.0, "dtype": torch.float16},
        output="transform",
    ),
    "INLP": Case(
        lambda device: INLP(n_rounds=2, random_state=0),
        lambda device, dtype=torch.float64: word_vectors(device, dtype),
        bad={"n_rounds": 0, "C": 0.0, "normalize": "yes"},
        output="transform",
    ),
    "HardDebias": Case(
        lambda device: HardDebias(
            WORDS,
            word_vectors(device)[0],
            definitional_pairs=[("he", "she"), ("man", "woman")],
            equalize_pairs=[],
            specific_words=[],
        ),
        lambda device, dtype=torch.float64: word_vectors(device, dtype),
        bad={"strength": 1.5},
        output="transform",
    ),
    "LEACE": Case(
        lambda device: LEACE(),
        lambda device, dtype=torch.float64: word_vectors(device, dtype),
        bad={"normalize": 1},
        output="transform",
        needs="concept_erasure",
    ),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request) -> Case:
    chosen = CASES[request.param]
    if chosen.needs is not None:
        pytest.importorskip(chosen.needs, reason=f"{request.param} needs {chosen.needs}")
    return chosen


def test_constructor_stores_its_arguments_and_clone_round_trips(case, device):
    estimator = case.estimator(device)
    assert isinstance(estimator, BaseEstimator)
    assert isinstance(estimator, ClusterMixin if case.output == "labels" else TransformerMixin)
    params = estimator.get_params()
    # the constructor sets its parameters and nothing else (scikit-learn's
    # check_no_attributes_set_in_init), each the very object given (clone checks identity)
    assert set(vars(estimator)) == set(params)
    copy = clone(estimator)
    assert copy is not estimator and copy.get_params().keys() == params.keys()
    for name, value in copy.get_params().items():
        assert value is params[name] or repr(value) == repr(params[name]), name
    assert estimator.set_params(**params) is estimator
    assert estimator.get_params() == params


def test_fit_returns_self_and_learned_state_ends_in_an_underscore(case, device):
    estimator = case.estimator(device)
    before = set(vars(estimator))
    assert estimator.fit(*case.fit_args(device)) is estimator
    learned = set(vars(estimator)) - before
    assert learned and all(name.endswith("_") for name in learned), learned


def test_not_fitted_raises_not_fitted_error(case, device):
    estimator = case.estimator(device)
    method = {"labels": "predict", "transform": "transform"}[case.output]
    if not hasattr(estimator, method):
        pytest.skip(f"{type(estimator).__name__} is transductive (no {method})")
    X = case.fit_args(device)[0]
    with pytest.raises(NotFittedError):
        getattr(estimator, method)(X)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_one_return_type_numpy(case, device, dtype):
    """Labels are int64 NumPy arrays; transforms are NumPy arrays in the input's float dtype,
    whether the input is a tensor (on any device) or an array."""
    arguments = case.fit_args(device, dtype)
    estimator = case.estimator(device).fit(*arguments)
    if case.output == "labels":
        assert isinstance(estimator.labels_, np.ndarray) and estimator.labels_.dtype == np.int64
        if hasattr(estimator, "predict"):
            predicted = estimator.predict(arguments[0])
            assert isinstance(predicted, np.ndarray) and predicted.dtype == np.int64
        return
    X = arguments[0]
    expected = torch.empty((), dtype=dtype).numpy().dtype
    for given in (X, X.cpu().numpy()):
        out = estimator.transform(given)
        assert isinstance(out, np.ndarray) and out.dtype == expected
        assert out.shape == tuple(X.shape)


def test_a_bad_parameter_is_named_by_fit(case, device):
    """Checked in ``fit``, not in the constructor (scikit-learn's convention): the constructor
    accepts anything and ``fit`` raises a ``ValueError`` whose message starts with the name."""
    for name, value in case.bad.items():
        estimator = case.estimator(device).set_params(**{name: value})
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            estimator.fit(*case.fit_args(device))


@pytest.mark.parametrize("name", ["GrassmannKMeans", "FairMetricDebias", "INLP"])
def test_random_state_the_scikit_learn_way(name, device):
    """An int seeds the run (two fits agree to the bit); a ``RandomState`` is accepted; anything
    else is refused naming ``random_state``."""
    case = CASES[name]
    arguments = case.fit_args(device)

    def result(random_state):
        estimator = case.estimator(device).set_params(random_state=random_state)
        estimator.fit(*arguments)
        if case.output == "labels":
            return estimator.labels_
        return estimator.transform(arguments[0])

    np.testing.assert_array_equal(result(3), result(3))
    assert result(np.random.RandomState(0)).shape[0] == arguments[0].shape[0]
    with pytest.raises(ValueError, match="^random_state"):
        result("seed")


SKLEARN_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_parameters_default_constructible",
    "check_estimator_repr",
    "check_estimator_cloneable",
]


@pytest.mark.parametrize("check", SKLEARN_CHECKS)
@pytest.mark.parametrize(
    "estimator_class",
    [
        GrassmannKMeans,
        GrassmannSpectralClustering,
        MultiViewSubspaceClustering,
        FairMetricDebias,
        INLP,
        LEACE,
    ],
    ids=lambda cls: cls.__name__,
)
def test_scikit_learn_estimator_checks(estimator_class, check):
    """scikit-learn's own checks that need no fit on tabular data, on the default-constructed
    estimator (``HardDebias`` needs its vocabulary: covered above)."""
    from sklearn.utils import estimator_checks

    run = getattr(estimator_checks, check, None)
    if run is None:
        pytest.skip(f"this scikit-learn has no {check}")
    run(estimator_class.__name__, estimator_class())


def test_multiview_renamed_size_keywords_warn_and_map_to_the_new_names():
    with pytest.warns(FutureWarning, match="is renamed"):
        model = MultiViewSubspaceClustering(3, ambient_dim=8, projected_dim=5)
    params = model.get_params()
    assert (params["ambient_size"], params["projected_size"]) == (8, 5)
    assert "ambient_dim" not in params and "projected_dim" not in params
    assert clone(model).get_params()["ambient_size"] == 8
