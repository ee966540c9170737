"""Fairness on manifolds: a Riemannian metric stretched along the gradients of bias functions.

:class:`FairnessMetric` is used as a squared distance by geodesic attention
(:class:`manifoldnn.layers.GeodesicAttention`, ``metric=``) or on its own.
:mod:`~manifoldnn.fairness.evaluation` measures bias in word vectors (WEAT, Gonen & Goldberg's
tests, probes, similarity benchmarks); :mod:`~manifoldnn.fairness.debias` holds the baseline
debiasing transformers (hard debiasing, INLP, LEACE); :class:`FairMetricDebias` moves the vectors
by local natural-gradient steps under the fairness metric (:mod:`~manifoldnn.fairness.transform`).
"""

from .debias import (
    INLP,
    LEACE,
    HardDebias,
    gender_direction,
    hard_debias,
    inlp_directions,
    inlp_projection,
)
from .evaluation import (
    GenderBiasSplit,
    ProbeResult,
    WeatResult,
    attention_stereotype_gap,
    gender_bias,
    gender_bias_split,
    kmeans_bias_accuracy,
    neighbour_bias_correlation,
    neighbour_overlap,
    probe_accuracy,
    similarity_spearman,
    weat_effect_size,
    weat_summary,
    weat_test,
)
from .metric import AssociationBias, FairnessMetric, LinearBias
from .transform import FairMetricDebias, RandomFeatureBias

__all__ = [
    "FairnessMetric",
    "LinearBias",
    "AssociationBias",
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
    "gender_direction",
    "hard_debias",
    "HardDebias",
    "inlp_directions",
    "inlp_projection",
    "INLP",
    "LEACE",
    "FairMetricDebias",
    "RandomFeatureBias",
]
