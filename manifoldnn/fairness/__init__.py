"""Fairness on manifolds: a Riemannian metric stretched along the gradients of bias functions.

:class:`FairnessMetric` is used as a squared distance by geodesic attention
(:class:`manifoldnn.layers.GeodesicAttention`, ``metric=``) or on its own.
:mod:`~manifoldnn.fairness.evaluation` measures bias in word vectors (WEAT, Gonen & Goldberg's
tests, probes, similarity benchmarks); :mod:`~manifoldnn.fairness.debias` holds the baseline
debiasing transformers (hard debiasing, INLP, LEACE); :class:`FairMetricDebias` moves the vectors
by local natural-gradient steps under the fairness metric (:mod:`~manifoldnn.fairness.transform`).
"""

from . import debias, evaluation, metric, transform
from .debias import *  # noqa: F403
from .evaluation import *  # noqa: F403
from .metric import *  # noqa: F403
from .transform import *  # noqa: F403

__all__ = [*metric.__all__, *evaluation.__all__, *debias.__all__, *transform.__all__]
