"""Data loaders: multi-view sets (files, and the sets that ship inside installed packages), the
word2vec format and espeak-ng speech (``speech``). Nothing is downloaded."""

from . import multiview, speech, word2vec
from .multiview import *  # noqa: F403
from .speech import *  # noqa: F403
from .word2vec import *  # noqa: F403

__all__ = [*multiview.__all__, *word2vec.__all__, *speech.__all__]
