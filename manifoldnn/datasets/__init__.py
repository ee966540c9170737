"""Data loaders: multi-view sets (files, and the sets that ship inside installed packages), the
word2vec format, espeak-ng speech (``speech``), hierarchies and WordNet's noun hierarchy
(``hierarchy``, ``wordnet``). Nothing is downloaded."""

from . import hierarchy, multiview, speech, word2vec, wordnet
from .hierarchy import *  # noqa: F403
from .multiview import *  # noqa: F403
from .speech import *  # noqa: F403
from .word2vec import *  # noqa: F403
from .wordnet import *  # noqa: F403

__all__ = [
    *multiview.__all__,
    *word2vec.__all__,
    *speech.__all__,
    *hierarchy.__all__,
    *wordnet.__all__,
]
