"""Scikit-learn-style clustering estimators and clustering metrics."""

from ..manifolds import extrinsic_mean  # re-exported (it lived here before the layout by concern)
from . import kmeans, metrics, multiview, multiview_training, preprocessing, selection, spectral
from .kmeans import *  # noqa: F403
from .metrics import *  # noqa: F403
from .multiview import *  # noqa: F403
from .multiview_training import *  # noqa: F403
from .preprocessing import *  # noqa: F403
from .selection import *  # noqa: F403
from .spectral import *  # noqa: F403

__all__ = [
    "extrinsic_mean",
    *kmeans.__all__,
    *spectral.__all__,
    *multiview.__all__,
    *multiview_training.__all__,
    *preprocessing.__all__,
    *selection.__all__,
    *metrics.__all__,
]
