"""Data loaders: multi-view sets (files, and the sets that ship inside installed packages), the
word2vec format, espeak-ng speech (``speech``), hierarchies and WordNet's noun hierarchy
(``hierarchy``, ``wordnet``); delay-embedded window subspaces of time series (``timeseries``).
Nothing is downloaded."""

from . import hierarchy, multiview, speech, timeseries, word2vec, wordnet
from .hierarchy import *  # noqa: F403
from .multiview import *  # noqa: F403
from .speech import *  # noqa: F403
from .timeseries import *  # noqa: F403
from .word2vec import *  # noqa: F403
from .wordnet import *  # noqa: F403

__all__ = [
    *multiview.__all__,
    *word2vec.__all__,
    *speech.__all__,
    *hierarchy.__all__,
    *wordnet.__all__,
    *timeseries.__all__,
]
